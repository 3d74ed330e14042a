import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a database operation failed. Messages never name command-line flags; a tool's failure carries
/// the end of its standard error, so the user sees what the tool said.
public enum DatabaseError: CategorizedError, Equatable {
    /// A database tool exited with a failure (or could not start): which step, how, and its stderr.
    case toolFailed(step: String, status: String, stderr: String)
    /// A tool is not installed where it is looked for.
    case toolMissing(String)
    /// The request cannot be done (password in a connection string, unknown database, ...).
    case invalidRequest(String)
    /// What a tool printed is not what was expected.
    case unexpectedOutput(String)
    /// The snapshot holds no database backup of an engine this build restores.
    case unsupported(String)

    public var category: ErrorCategory {
        switch self {
        case .toolFailed, .toolMissing, .unexpectedOutput: return .io
        case .invalidRequest: return .usage
        case .unsupported: return .format
        }
    }

    public var description: String {
        switch self {
        case .toolFailed(let step, let status, let stderr):
            let text = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            return "\(step) failed (\(status))" + (text.isEmpty ? "" : ":\n" + text)
        case .toolMissing(let tool): return "\(tool) not found (is the database's client installed?)"
        case .invalidRequest(let why): return why
        case .unexpectedOutput(let why): return why
        case .unsupported(let why): return why
        }
    }
}

/// Child processes of the database code: no shell, the environment of ``ChildEnvironment`` (no
/// Coffer secrets) plus the variables the engine's tools read that the user set (PG*, including
/// PGPASSWORD, which ChildEnvironment would drop), standard error collected for error messages.
public enum ChildProcess {
    /// This process's environment for a database tool: ``ChildEnvironment/entries()`` plus every
    /// variable whose name starts with one of `prefixes` (the tool's own, set by the user), then
    /// `setting` on top.
    public static func environment(keeping prefixes: [String], setting: [String: String] = [:]) -> [String] {
        var out = ChildEnvironment.entries()
        var names = Set(out.map { String($0.prefix { $0 != "=" }) })
        for (name, value) in ProcessInfo.processInfo.environment where prefixes.contains(where: name.hasPrefix) && !names.contains(name) {
            if name.hasPrefix("COFFER_") { continue }
            out.append("\(name)=\(value)")
            names.insert(name)
        }
        if !setting.isEmpty {
            out.removeAll { setting[String($0.prefix { $0 != "=" })] != nil }
            for (k, v) in setting.sorted(by: { $0.key < $1.key }) { out.append("\(k)=\(v)") }
        }
        return out
    }

    /// The path of `tool`: the first of `directories`, then PATH, where it is executable.
    public static func find(_ tool: String, in directories: [String] = []) throws -> String {
        if tool.contains("/") {
            guard access(tool, X_OK) == 0 else { throw DatabaseError.toolMissing(tool) }
            return tool
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in directories + path.split(separator: ":").map(String.init) {
            let candidate = "\(directory)/\(tool)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw DatabaseError.toolMissing(tool)
    }

    /// `argv` run as `user` when this process is root and a user is given (through runuser), as is.
    static func asUser(_ user: String?, _ argv: [String]) throws -> [String] {
        guard let user, geteuid() == 0 else { return argv }
        return [try find("runuser", in: ["/usr/sbin", "/sbin"]), "-u", user, "--"] + argv
    }

    static func describe(_ status: Int32) -> String { ChildSpawn.describe(status) }
}

/// Reads `fd` on a thread of its own until end of file (or an error), handing each read to
/// `deliver`, then closes `fd` and signals `done`. The collectors of children's output use it.
func drainOnThread(_ fd: Int32, bufferSize: Int, done: DispatchSemaphore, _ deliver: @escaping @Sendable (ArraySlice<UInt8>) -> Void) {
    let thread = Thread {
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            deliver(buffer[0..<n])
        }
        close(fd)
        done.signal()
    }
    thread.start()
}

/// The last bytes a descriptor delivered, read on a thread of its own until end of file.
final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private let limit: Int
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, limit: Int = 64 * 1024) {
        self.limit = limit
        drainOnThread(fd, bufferSize: 16384, done: done) { [self] read in
            lock.withLock {
                bytes += read
                if bytes.count > 2 * limit { bytes.removeFirst(bytes.count - limit) }
            }
        }
    }

    /// Everything read (at most the last `limit` bytes), after end of file.
    func wait() -> [UInt8] {
        done.wait()
        done.signal()
        return lock.withLock { bytes.count > limit ? Array(bytes.suffix(limit)) : bytes }
    }

    var text: String { String(decoding: wait(), as: UTF8.self) }
}

/// A started child process.
public final class Child: @unchecked Sendable {
    public let pid: pid_t
    let name: String
    private let stderr: OutputCollector?
    private let lock = NSLock()
    /// The one wait for the process (several callers share it: a second `waitpid` would find no
    /// child and could record -1 over the real status), and whether it has been reaped (then its
    /// pid may belong to another process: ``terminate()`` sends nothing).
    private var waiter: Task<Int32, Never>?
    private var reaped = false

    /// Starts `argv` (argv[0] a path) with `environment` through ``ChildSpawn`` (descriptors 3 and
    /// up closed, default signal dispositions); `stdin`/`stdout` are descriptors to give it (nil:
    /// /dev/null). Standard error is collected unless `inheritStderr`.
    init(_ argv: [String], name: String, environment: [String], stdin: Int32? = nil, stdout: Int32? = nil,
         inheritStderr: Bool = false, newProcessGroup: Bool = false) throws {
        self.name = name
        let started: ChildSpawn.Started
        do {
            started = try ChildSpawn.start(argv, environment: environment, stdin: stdin.map { .fd($0) } ?? .null,
                                           stdout: stdout.map { .fd($0) } ?? .null, stderr: .inherit,
                                           captureStderr: !inheritStderr, newProcessGroup: newProcessGroup)
        } catch let failure as ChildSpawn.Failure {
            throw DatabaseError.toolFailed(step: name, status: failure.call == "pipe" ? "no pipe" : "could not start",
                                           stderr: String(cString: strerror(failure.code)))
        }
        self.pid = started.pid
        stderr = started.stderrPipe.map { OutputCollector(fd: $0) }
    }

    /// Waits for the process (on a thread, not the caller's task) and returns its wait status.
    public func wait() async -> Int32 {
        let task = lock.withLock { () -> Task<Int32, Never> in
            if let waiter { return waiter }
            let pid = self.pid
            let task = Task<Int32, Never> {
                await withCheckedContinuation { continuation in
                    Thread { [self] in
                        var st: Int32 = 0
                        while waitpid(pid, &st, 0) < 0 {
                            if errno != EINTR { st = -1; break }
                        }
                        lock.withLock { reaped = true }
                        continuation.resume(returning: st)
                    }.start()
                }
            }
            waiter = task
            return task
        }
        return await task.value
    }

    public var stderrText: String { stderr?.text ?? "" }

    /// Waits and throws ``DatabaseError/toolFailed(step:status:stderr:)`` unless it exited with 0.
    public func check() async throws {
        let s = await wait()
        guard s == 0 else { throw DatabaseError.toolFailed(step: name, status: ChildProcess.describe(s), stderr: stderrText) }
    }

    public func terminate() { lock.withLock { if !reaped { _ = kill(pid, SIGTERM) } } }
}

extension ChildProcess {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs `argv` to its end with `input` on standard input; collects standard output and error.
    /// `started` is told the child's pid (then nil when it ended); with `gate`, the start and that
    /// call happen under the gate's lock, and no child starts once the gate is closed.
    public static func run(_ argv: [String], name: String, environment: [String], input: [UInt8]? = nil,
                           started: (@Sendable (pid_t?) -> Void)? = nil, gate: SpawnGate? = nil) async throws -> Output {
        var outPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw DatabaseError.toolFailed(step: name, status: "no pipe", stderr: "") }
        _ = fcntl(outPipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(outPipe[1], F_SETFD, FD_CLOEXEC)
        var inPipe: [Int32] = [-1, -1]
        if input != nil {
            guard pipe(&inPipe) == 0 else { throw DatabaseError.toolFailed(step: name, status: "no pipe", stderr: "") }
            _ = fcntl(inPipe[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(inPipe[1], F_SETFD, FD_CLOEXEC)
        }
        let child: Child
        do {
            let start = { () throws -> Child in
                let c = try Child(argv, name: name, environment: environment, stdin: input == nil ? nil : inPipe[0], stdout: outPipe[1])
                started?(c.pid)
                return c
            }
            child = try gate.map { try $0.spawn(name, start) } ?? start()
        } catch {
            close(outPipe[0]); close(outPipe[1])
            if input != nil { close(inPipe[0]); close(inPipe[1]) }
            throw error
        }
        close(outPipe[1])
        defer { started?(nil) }
        let collector = OutputCollector(fd: outPipe[0], limit: 64 << 20)
        if let input {
            close(inPipe[0])
            let writeEnd = inPipe[1]
            Thread {
                input.withUnsafeBytes { raw in
                    var done = 0
                    while done < raw.count {
                        let n = write(writeEnd, raw.baseAddress! + done, raw.count - done)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { break }
                        done += n
                    }
                }
                close(writeEnd)
            }.start()
        }
        let status = await child.wait()
        return Output(status: status, stdout: collector.wait(), stderr: child.stderrText)
    }

    /// ``run(_:name:environment:input:)`` that throws unless the tool exited with 0.
    public static func checked(_ argv: [String], name: String, environment: [String], input: [UInt8]? = nil) async throws -> Output {
        let out = try await run(argv, name: name, environment: environment, input: input)
        guard out.status == 0 else { throw DatabaseError.toolFailed(step: name, status: describe(out.status), stderr: out.stderr) }
        return out
    }
}

/// The door through which a throwaway server's setup starts its children: a start and the
/// recording of its pid happen under one lock with the check, so a teardown, which closes the
/// gate first, either finds the child's pid (and stops it) or the start is refused. Without it, a
/// tool started just after a teardown (initdb creates its directory's parents) could recreate the
/// directory the teardown removed and outlive the command.
public final class SpawnGate: @unchecked Sendable {
    private let lock = NSLock()
    private var closed = false
    public init() {}

    func spawn<T>(_ name: String, _ body: () throws -> T) throws -> T {
        try lock.withLock {
            guard !closed else { throw DatabaseError.toolFailed(step: name, status: "not started", stderr: "the throwaway server was torn down") }
            return try body()
        }
    }

    /// No child starts after this returns (a start in progress finishes first).
    public func close() { lock.withLock { closed = true } }
}

/// A child process whose standard output is a stream of the backup.
public struct CommandStreamProducer: StreamProducer {
    public let argv: [String]
    public let name: String
    public let environment: [String]

    public init(argv: [String], name: String, environment: [String]) {
        self.argv = argv; self.name = name; self.environment = environment
    }

    public func start(writingTo fd: Int32) async throws -> any RunningStream {
        ChildStream(child: try Child(argv, name: name, environment: environment, stdout: fd))
    }
}

/// A running ``Child`` as a stream of the backup.
struct ChildStream: RunningStream {
    let child: Child
    var after: (@Sendable () async throws -> Void)? = nil
    func finish() async throws {
        try await child.check()
        try await after?()
    }
    func cancel() {
        child.terminate()
        Thread { var st: Int32 = 0; _ = waitpid(child.pid, &st, 0) }.start()
    }
}
