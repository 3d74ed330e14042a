import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading a passphrase from the controlling terminal with echo off.
enum TerminalPrompt {
    /// The terminal whose echo is off while a prompt waits, so an interrupt can turn it back on.
    static let echoOff = LockedTerminalState()

    /// Called by the interrupt handler: a Ctrl-C at the prompt must not leave the terminal silent.
    static func restoreEcho() {
        echoOff.withLock { state in
            if let (fd, saved) = state {
                var copy = saved
                tcsetattr(fd, TCSAFLUSH, &copy)
            }
            state = nil
        }
    }

    static var isAvailable: Bool {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    static func readPassphrase(prompt: String) throws -> [UInt8] {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw KeyError.noKeyGiven(.passphrase)
        }
        defer { close(fd) }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var saved = termios()
        let hasTermios = tcgetattr(fd, &saved) == 0
        if hasTermios {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
            echoOff.withLock { $0 = (fd, saved) }
        }
        defer {
            if hasTermios {
                tcsetattr(fd, TCSAFLUSH, &saved)
                echoOff.withLock { $0 = nil }
            }
            _ = write(fd, "\n", 1)
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != 0x0A {
            line.append(byte)
        }
        if line.last == 0x0D { line.removeLast() }
        return line
    }
}

final class LockedTerminalState: @unchecked Sendable {
    private let lock = NSLock()
    private var state: (Int32, termios)?
    func withLock<T>(_ body: (inout (Int32, termios)?) -> T) -> T { lock.withLock { body(&state) } }
}

/// A progress line on stderr (bytes, rate, ETA), redrawn a few times a second; only on a terminal.
final class ProgressLine: @unchecked Sendable {
    let counter: ProgressCounter
    private let start = Date()
    private let lock = NSLock()
    private var stopped = false
    private let enabled: Bool

    init(total: UInt64?, quiet: Bool) {
        counter = ProgressCounter(total: total)
        enabled = !quiet && isatty(2) == 1
        guard enabled else { return }
        Thread.detachNewThread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 0.25)
                let done = lock.withLock { stopped }
                if done { return }
                draw()
            }
        }
    }

    var callback: (@Sendable (UInt64) -> Void)? { enabled ? counter.engineCallback() : nil }

    private func draw() {
        let done = counter.bytesDone
        let elapsed = max(Date().timeIntervalSince(start), 0.001)
        let rate = Double(done) / elapsed
        var text = "\(Self.bytes(done))"
        if let total = counter.total, total > 0 {
            text += " / \(Self.bytes(total)) (\(Int(Double(done) * 100 / Double(total)))%)"
        }
        text += "  \(Self.bytes(UInt64(rate)))/s"
        if let total = counter.total, rate > 0, total > done {
            let eta = Int(Double(total - done) / rate)
            text += String(format: "  ETA %d:%02d", eta / 60, eta % 60)
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
    }

    func stop() {
        let wasRunning = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        if enabled && wasRunning { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}
