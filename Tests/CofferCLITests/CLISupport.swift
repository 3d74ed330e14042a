import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The `coffer` binary built beside this test bundle (or COFFER_BIN).
let cofferBinary: String = {
    if let path = ProcessInfo.processInfo.environment["COFFER_BIN"] { return path }
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [dir, dir.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("coffer").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return dir.appendingPathComponent("coffer").path
}()

struct RunResult {
    let status: Int32
    let stdout: [UInt8]
    let stderr: String
    /// With `countReads`: the bytes the process read through read(2)/pread(2) and friends, as the
    /// kernel counted them (`rchar` in /proc/PID/io, taken from the exited process before it is reaped).
    var readBytes: UInt64? = nil
    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs `coffer` with a clean environment (no COFFER_* from the caller) and optional standard input.
/// Uses posix_spawn and raw descriptors: Foundation's Process and Pipe proved unreliable when many
/// tests spawn processes at once.
@discardableResult
func coffer(_ arguments: [String], stdin: [UInt8]? = nil, environment: [String: String] = [:],
            stdoutPath: String? = nil) throws -> RunResult {
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
    env.merge(environment) { $1 }
    return try spawn([cofferBinary] + arguments, environment: env, stdin: stdin, stdoutPath: stdoutPath)
}

/// pipe2(2) is behind _GNU_SOURCE in Glibc's headers; atomically close-on-exec pipes keep one
/// test's pipe ends out of the processes other tests spawn at the same moment.
@_silgen_name("pipe2")
private func pipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32

func spawn(_ argv: [String], environment: [String: String], stdin: [UInt8]?, stdoutPath: String? = nil,
           countReads: Bool = false) throws -> RunResult {
    // A child that exits before reading all its input must not kill the test process.
    signal(SIGPIPE, SIG_IGN)
    var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
    guard pipe2(&inPipe, O_CLOEXEC) == 0, pipe2(&outPipe, O_CLOEXEC) == 0, pipe2(&errPipe, O_CLOEXEC) == 0 else {
        throw POSIXError(.EMFILE)
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if stdin != nil {
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
    if let stdoutPath {
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY, 0)
    } else {
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    }
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    try closeInherited(&actions)
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
    close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
    guard rc == 0 else {
        close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
        throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .ENOENT)
    }
    let writeEnd = inPipe[1]
    if let stdin {
        let feeder = Thread {
            stdin.withUnsafeBytes { raw in
                var done = 0
                while done < raw.count {
                    let n = write(writeEnd, raw.baseAddress! + done, raw.count - done)
                    if n <= 0 { break }
                    done += n
                }
            }
            close(writeEnd)
        }
        feeder.start()
    } else {
        close(writeEnd)
    }
    var outBytes: [UInt8] = [], errBytes: [UInt8] = []
    var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
    var open = 2
    var buffer = [UInt8](repeating: 0, count: 65536)
    while open > 0 {
        _ = poll(&fds, 2, -1)
        for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
            let n = buffer.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress!, 65536) }
            if n > 0 {
                if i == 0 { outBytes += buffer[0..<n] } else { errBytes += buffer[0..<n] }
            } else if n == 0 || errno != EINTR {
                close(fds[i].fd)
                fds[i].fd = -1
                open -= 1
            }
        }
    }
    var readBytes: UInt64? = nil
    if countReads {
        // Wait without reaping: the exited process's I/O counters stay readable until waitpid.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let io = (try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8)) ?? ""
        readBytes = io.split(separator: "\n").first { $0.hasPrefix("rchar: ") }.flatMap { UInt64($0.dropFirst(7)) }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return RunResult(status: exitCode, stdout: outBytes, stderr: String(decoding: errBytes, as: UTF8.self), readBytes: readBytes)
}

// The pseudo-terminal calls are behind _XOPEN_SOURCE in Glibc's headers.
@_silgen_name("posix_openpt") private func posix_openpt(_ flags: Int32) -> Int32
@_silgen_name("grantpt") private func grantpt(_ fd: Int32) -> Int32
@_silgen_name("unlockpt") private func unlockpt(_ fd: Int32) -> Int32
@_silgen_name("ptsname") private func ptsname(_ fd: Int32) -> UnsafeMutablePointer<CChar>?

/// Runs `coffer` on a new pseudo-terminal (its controlling terminal, standard input, output and
/// error), answering each prompt: for every (prompt, answer), waits until `prompt` has appeared on
/// the terminal, then types `answer`. Returns the exit status and everything the terminal showed.
/// Gives up (killing the process) when a prompt does not appear within `timeout` seconds.
func cofferOnTerminal(_ arguments: [String], answers: [(prompt: String, answer: String)], environment: [String: String] = [:],
                      timeout: Double = 20) throws -> (status: Int32, screen: String, timedOut: Bool) {
    let master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)
    guard master >= 0, grantpt(master) == 0, unlockpt(master) == 0, let name = ptsname(master) else {
        throw POSIXError(.ENOTTY)
    }
    defer { close(master) }
    let slavePath = String(cString: name)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // A new session: the terminal opened below (without O_NOCTTY) becomes its controlling terminal,
    // which is what coffer's /dev/tty prompt needs. glibc runs setsid before the file actions.
    posix_spawnattr_setflags(&attributes, Int16(0x80 /* POSIX_SPAWN_SETSID */))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, slavePath, O_RDWR, 0)
    posix_spawn_file_actions_adddup2(&actions, 0, 1)
    posix_spawn_file_actions_adddup2(&actions, 0, 2)
    try closeInherited(&actions)
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
    env.merge(environment) { $1 }
    let cArgs = ([cofferBinary] + arguments).map { strdup($0) } + [nil]
    let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, cofferBinary, &actions, &attributes, cArgs, cEnv)
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .ENOENT) }
    var screen: [UInt8] = []
    var pending = answers[...]
    var consumed = 0  // screen bytes already matched by earlier prompts
    let deadline = Date().addingTimeInterval(timeout)
    var timedOut = false
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        if let next = pending.first {
            let text = String(decoding: screen[consumed...], as: UTF8.self)
            if let range = text.range(of: next.prompt) {
                // Type only once echo is off: coffer prints the prompt, then switches echo off with
                // TCSAFLUSH, which discards anything typed before. (The pair shares one termios.)
                var modes = termios()
                while tcgetattr(master, &modes) == 0, modes.c_lflag & tcflag_t(ECHO) != 0, Date() < deadline { usleep(2000) }
                consumed += text[..<range.upperBound].utf8.count
                _ = Array(next.answer.utf8).withUnsafeBytes { write(master, $0.baseAddress!, $0.count) }
                pending = pending.dropFirst()
                continue
            }
        }
        guard Date() < deadline else { timedOut = true; kill(pid, SIGKILL); break }
        var fds = [pollfd(fd: master, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 1, 200) >= 0 || errno == EINTR else { break }
        if fds[0].revents == 0 { continue }
        let n = buffer.withUnsafeMutableBytes { read(master, $0.baseAddress!, 4096) }
        if n > 0 { screen += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }  // EIO: closed
    }
    let status = waitForExit(pid)
    return (status, String(decoding: screen, as: UTF8.self), timedOut)
}

/// Starts `argv` with standard input from `stdinPath` and no output; returns its pid.
func spawnInBackground(_ argv: [String], stdinPath: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdinPath, O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    try closeInherited(&actions)
    let cArgs = argv.map { strdup($0) } + [nil]
    let env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
    let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .ENOENT) }
    return pid
}

/// The last spawn action of every test spawn: descriptors 3 and up are closed in the child, so
/// nothing another test holds at that moment (a file it is writing, a pipe end) reaches it.
/// Tests run in parallel in one process; see CofferTestServers' TestFiles for why it matters.
func closeInherited(_ actions: inout posix_spawn_file_actions_t) throws {
    guard TestSpawn.closeInheritedDescriptors(&actions) else {
        throw POSIXError(.ENOSYS)  // glibc before 2.34: no posix_spawn_file_actions_addclosefrom_np
    }
}

func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Waits for `pid`; tells an exit (with its code) from a death by a signal (with its number),
/// which `waitForExit` folds together as 128 + signal.
func waitForTermination(_ pid: pid_t) -> (exited: Bool, code: Int32) {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (true, (status >> 8) & 0xff) : (false, status & 0x7f)
}

/// Exit codes documented in `coffer --help`.
enum Exit {
    static let ok: Int32 = 0
    static let key: Int32 = 2
    static let integrity: Int32 = 3
    static let format: Int32 = 4
    static let io: Int32 = 5
    static let usage: Int32 = 64
}

final class Scratch: Sendable {
    let path: String
    init() {
        var template = Array("\(NSTemporaryDirectory())/coffer-cli-XXXXXX".utf8CString)
        _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }

    func write(_ bytes: [UInt8], _ name: String, mode: mode_t = 0o600) throws -> String {
        let p = file(name)
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: p).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        // Close-on-exec, and an executable (a fake tool a test runs) written by a child process,
        // so that no process holds it open for writing when it is run: see TestFiles.
        if mode & 0o111 != 0 {
            try TestFiles.writeExecutable(bytes, to: p, mode: mode)
        } else {
            try TestFiles.write(bytes, to: p, mode: mode)
        }
        return p
    }

    func read(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: file(name)))) }
    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file(name)) }

    /// True when neither `name` nor a temporary file of it (`.NAME.coffer-tmp-*`, written beside
    /// it until it is complete) exists: the "nothing left behind" check after a failure.
    func absent(_ name: String) -> Bool {
        let url = URL(fileURLWithPath: file(name))
        let prefix = ".\(url.lastPathComponent).coffer-tmp-"
        let siblings = (try? FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path)) ?? []
        return !exists(name) && !siblings.contains { $0.hasPrefix(prefix) }
    }

    /// Every name in the directory tree, for "nothing left behind" checks.
    func listing() -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).sorted()
    }

    /// A fresh key file made by `coffer keygen`.
    func keygen(_ name: String = "test.key") throws -> String {
        let p = file(name)
        let result = try coffer(["keygen", "--symmetric", "-o", p])
        #expect(result.status == 0, "keygen: \(result.stderr)")
        return p
    }
}

func pseudoRandom(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
    var state = seed &* 0x9E3779B97F4A7C15 | 1
    return (0..<count).map { _ in
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return UInt8(truncatingIfNeeded: (state &* 2685821657736338717) >> 56)
    }
}
