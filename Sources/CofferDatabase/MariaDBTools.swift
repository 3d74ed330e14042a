import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What went wrong in a MariaDB backup, restore or throwaway server. Tool failures carry the step
/// and the last lines the tool wrote (mariabackup is chatty: the end of its output says why).
public enum MariaDBError: CategorizedError, Equatable {
    /// A tool (mariabackup, mbstream, mariadbd, ...) is not installed.
    case toolMissing(String)
    /// A step's tool failed: the step, how it ended, and the last lines of its output.
    case stepFailed(step: String, status: String, output: String)
    /// The request cannot be carried out (no base for an incremental, a broken chain, a target
    /// directory that is not empty, ...).
    case refused(String)
    /// What a tool wrote could not be understood (a checkpoints file without LSNs, ...).
    case unexpectedOutput(String)
    /// A file or directory operation failed.
    case io(path: String, reason: String)

    public var category: ErrorCategory {
        switch self {
        case .refused: return .usage
        case .unexpectedOutput: return .format
        case .toolMissing, .stepFailed, .io: return .io
        }
    }

    public var description: String {
        switch self {
        case .toolMissing(let tool): return "\(tool) is not installed (not found on PATH, /usr/sbin or /usr/bin)"
        case .stepFailed(let step, let status, let output):
            let shown = output.trimmingCharacters(in: .whitespacesAndNewlines)
            return "\(step) failed (\(status))" + (shown.isEmpty ? "" : "; its last output:\n" + shown)
        case .refused(let why): return why
        case .unexpectedOutput(let what): return what
        case .io(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// Finding and running MariaDB's tools: no shell, an environment without Coffer's secrets (and
/// without `MYSQL_PWD`: passwords reach the tools only through an option file).
enum MariaDBTools {
    /// The first of `names` that is an executable on PATH, /usr/sbin, /usr/bin or /usr/local/bin.
    static func find(_ names: [String]) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        for name in names {
            for directory in directories where !directory.isEmpty {
                let candidate = "\(directory)/\(name)"
                if access(candidate, X_OK) == 0 { return candidate }
            }
        }
        throw MariaDBError.toolMissing(names.joined(separator: " or "))
    }

    static func backupTool() throws -> String { try find(["mariabackup", "mariadb-backup", "xtrabackup"]) }
    static func streamTool() throws -> String { try find(["mbstream", "xbstream"]) }
    static func client() throws -> String { try find(["mariadb", "mysql"]) }
    static func server() throws -> String { try find(["mariadbd", "mysqld"]) }
    static func installDB() throws -> String { try find(["mariadb-install-db", "mysql_install_db"]) }

    /// This process's environment for a child: `ChildEnvironment` less `MYSQL_PWD` (which the
    /// client library would read as a password).
    static func environment(_ entries: [String] = ChildEnvironment.entries()) -> [String] {
        entries.filter { !$0.hasPrefix("MYSQL_PWD=") }
    }

    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// A pipe whose two ends are closed on exec (a child gets only the end it is given as 0/1/2).
    static func pipe() throws -> (read: Int32, write: Int32) {
        do { return try ChildSpawn.pipe() } catch let failure as ChildSpawn.Failure {
            throw MariaDBError.io(path: "pipe", reason: errorText(failure.code))
        }
    }

    /// "exit status 3" / "killed by signal 9".
    static func describe(_ status: Int32) -> String { ChildSpawn.describe(status) }

    /// A fresh private directory (mode 0700) under the temporary directory (TMPDIR, else /tmp),
    /// or under /tmp when TMPDIR is so long that a socket path inside would not fit.
    static func temporaryDirectory(_ prefix: String) throws -> String {
        var base = NSTemporaryDirectory()
        if base.hasSuffix("/") { base.removeLast() }
        if base.utf8.count > 60 { base = "/tmp" }
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw MariaDBError.io(path: base, reason: "cannot create a temporary directory: \(errorText())") }
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Changes the owner of `path` and everything below it (symbolic links themselves, never
    /// what they point to).
    static func chownRecursive(_ path: String, uid: uid_t, gid: gid_t) throws {
        guard lchown(path, uid, gid) == 0 else { throw MariaDBError.io(path: path, reason: "cannot change owner: \(errorText())") }
        guard let items = FileManager.default.enumerator(atPath: path) else { return }
        for case let item as String in items {
            let full = "\(path)/\(item)"
            guard lchown(full, uid, gid) == 0 else { throw MariaDBError.io(path: full, reason: "cannot change owner: \(errorText())") }
        }
    }

    /// The user the server runs as when this process is root: `mysql` if it exists (Debian's
    /// packages create it), else root itself (mariadbd accepts `--user=root`). nil when not root.
    static func serverUser() -> (name: String, uid: uid_t, gid: gid_t)? {
        guard geteuid() == 0 else { return nil }
        if let entry = getpwnam("mysql") { return ("mysql", entry.pointee.pw_uid, entry.pointee.pw_gid) }
        return ("root", 0, 0)
    }
}

/// The last lines a child wrote to a pipe, read by a thread of its own so the child never blocks
/// on a full pipe; at most `limit` lines (and 64 KiB) are kept.
final class MariaDBOutputTail: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial: [UInt8] = []
    private let limit: Int
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, limit: Int = 30) {
        self.limit = limit
        drainOnThread(fd, bufferSize: 65536, done: done) { [self] read in append(read) }
    }

    private func append(_ bytes: ArraySlice<UInt8>) {
        lock.withLock {
            for byte in bytes {
                if byte == 0x0A {
                    lines.append(String(decoding: partial, as: UTF8.self))
                    partial.removeAll(keepingCapacity: true)
                    if lines.count > limit { lines.removeFirst(lines.count - limit) }
                } else if partial.count < 4096 {
                    partial.append(byte)
                }
            }
        }
    }

    /// Waits until the writer closed its end, then returns the kept lines.
    func finish() -> String {
        done.wait()
        done.signal()
        return lock.withLock {
            (lines + (partial.isEmpty ? [] : [String(decoding: partial, as: UTF8.self)])).joined(separator: "\n")
        }
    }
}

/// Everything a child wrote to a pipe, read by a thread of its own (for query results).
final class MariaDBOutputCapture: @unchecked Sendable {
    private var data: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32) {
        // `data` is written by the reading thread only, and read after `done`.
        drainOnThread(fd, bufferSize: 65536, done: done) { [self] read in data += read }
    }

    func finish() -> [UInt8] {
        done.wait()
        done.signal()
        return data
    }
}

/// A child process started with posix_spawn: argv as given (no shell), the filtered environment,
/// stdin from an fd, from bytes written by a thread, or /dev/null; stdout to an fd or captured;
/// stderr (and stdout when not redirected) kept as a tail for error messages.
final class MariaDBChild: @unchecked Sendable {
    enum Input { case null, fd(Int32), bytes([UInt8]) }
    enum Output { case fd(Int32), capture, tail }

    let pid: pid_t
    let executable: String
    private let stderrTail: MariaDBOutputTail
    private let stdoutCapture: MariaDBOutputCapture?
    private let stdoutTail: MariaDBOutputTail?
    private let lock = NSLock()
    private var status: Int32?

    /// Starts the child through ``ChildSpawn`` (descriptors 3 and up closed, default signal
    /// dispositions, the environment of ``MariaDBTools/environment(_:)``), standard error captured.
    init(_ executable: String, _ arguments: [String], stdin: Input = .null, stdout: Output = .tail) throws {
        self.executable = executable
        var closeAfter: [Int32] = []
        var writer: (fd: Int32, bytes: [UInt8])?
        defer { closeAfter.forEach { close($0) } }

        let stdinDescriptor: ChildSpawn.Descriptor
        switch stdin {
        case .null: stdinDescriptor = .null
        case .fd(let fd): stdinDescriptor = .fd(fd)
        case .bytes(let bytes):
            let p = try MariaDBTools.pipe()
            stdinDescriptor = .fd(p.read)
            closeAfter.append(p.read)
            writer = (p.write, bytes)
        }
        var captureFD: Int32?
        var tailFD: Int32?
        let stdoutDescriptor: ChildSpawn.Descriptor
        switch stdout {
        case .fd(let fd): stdoutDescriptor = .fd(fd)
        case .capture, .tail:
            let p: (read: Int32, write: Int32)
            do { p = try MariaDBTools.pipe() } catch { writer.map { _ = close($0.fd) }; throw error }
            stdoutDescriptor = .fd(p.write)
            closeAfter.append(p.write)
            if case .capture = stdout { captureFD = p.read } else { tailFD = p.read }
        }
        let started: ChildSpawn.Started
        do {
            started = try ChildSpawn.start([executable] + arguments, environment: MariaDBTools.environment(),
                                           stdin: stdinDescriptor, stdout: stdoutDescriptor, captureStderr: true)
        } catch let failure as ChildSpawn.Failure {
            [captureFD, tailFD, writer?.fd].compactMap { $0 }.forEach { close($0) }
            throw MariaDBError.stepFailed(step: (executable as NSString).lastPathComponent, status: "cannot start",
                                          output: MariaDBTools.errorText(failure.code))
        }
        self.pid = started.pid
        stderrTail = MariaDBOutputTail(fd: started.stderrPipe!)
        stdoutCapture = captureFD.map { MariaDBOutputCapture(fd: $0) }
        stdoutTail = tailFD.map { MariaDBOutputTail(fd: $0) }
        if let writer {
            let thread = Thread {
                var offset = 0
                writer.bytes.withUnsafeBytes { raw in
                    while offset < raw.count {
                        let n = Glibc.write(writer.fd, raw.baseAddress! + offset, raw.count - offset)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { break }
                        offset += n
                    }
                }
                close(writer.fd)
            }
            thread.start()
        }
    }

    /// Waits for the child to exit; returns its wait status. The lock is not held while waiting,
    /// so ``signal(_:)`` from another thread (a teardown) is never blocked by a waiter.
    @discardableResult
    func wait() -> Int32 {
        if let status = lock.withLock({ status }) { return status }
        var value: Int32 = 0
        var reaped = true
        while waitpid(pid, &value, 0) < 0 {
            if errno != EINTR { reaped = false; break }
        }
        if reaped {
            lock.withLock { if status == nil { status = value } }
        } else {
            // Another thread reaped it: wait until it stored the status.
            while lock.withLock({ status }) == nil { usleep(1000) }
        }
        return lock.withLock { status ?? -1 }
    }

    /// True while the child has not exited (reaps it when it has; ``wait()`` then returns its status).
    var isRunning: Bool {
        lock.withLock {
            if status != nil { return false }
            var value: Int32 = 0
            let rc = waitpid(pid, &value, WNOHANG)
            if rc == pid { status = value; return false }
            return rc == 0
        }
    }

    func signal(_ sig: Int32) {
        lock.withLock { if status == nil { _ = kill(pid, sig) } }
    }

    /// The child's last output lines (stderr, then stdout when it was kept as a tail).
    func outputTail() -> String {
        let err = stderrTail.finish()
        let out = stdoutTail?.finish() ?? ""
        return [out, err].filter { !$0.isEmpty }.joined(separator: "\n")
    }

    /// Captured standard output (``Output/capture``).
    func capturedOutput() -> [UInt8] { stdoutCapture?.finish() ?? [] }

    /// Runs a step to its end; throws ``MariaDBError/stepFailed`` with the output's tail when it
    /// does not exit with status 0. Returns the captured stdout (empty unless `.capture`).
    static func run(step: String, _ executable: String, _ arguments: [String], stdin: Input = .null,
                    stdout: Output = .tail) throws -> [UInt8] {
        let child = try MariaDBChild(executable, arguments, stdin: stdin, stdout: stdout)
        let status = child.wait()
        let captured = child.capturedOutput()
        let tail = child.outputTail()
        guard status == 0 else { throw MariaDBError.stepFailed(step: step, status: MariaDBTools.describe(status), output: tail) }
        return captured
    }
}
