import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL 15 cluster for the database tests, started as ../shared/COMPONENTS.md says: initdb in
/// a temporary directory (as the `postgres` user when the tests run as root), password
/// authentication (scram-sha-256, so a wrong PGPASSWORD fails), listening only on a unix socket in
/// that directory. One shared cluster per test process (``shared``), stopped at exit; tests create
/// their own databases in it.
public final class PostgresTestServer: @unchecked Sendable {
    public static let password = "coffer-test-pw"
    public let directory: String
    public let port: Int
    public private(set) var pid: pid_t = 0

    /// The client environment: PGHOST, PGPORT, PGUSER and the right PGPASSWORD.
    public var environment: [String: String] {
        ["PGHOST": directory, "PGPORT": "\(port)", "PGUSER": "postgres", "PGPASSWORD": Self.password]
    }

    /// A connection string without password (it comes from PGPASSWORD).
    public var conninfo: String { "host=\(directory) port=\(port) user=postgres" }

    public static let binDirectory: String = {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted(by: >)
        return versions.first.map { "\(base)/\($0)/bin" } ?? "/usr/lib/postgresql/15/bin"
    }()

    public static var available: Bool { access(binDirectory + "/initdb", X_OK) == 0 }

    nonisolated(unsafe) private static var sharedServer: PostgresTestServer?
    private static let sharedLock = NSLock()

    /// The process-wide server, started on first use and stopped when the test process exits.
    public static func shared() throws -> PostgresTestServer {
        try sharedLock.withLock {
            if let s = sharedServer { return s }
            let s = try start()
            sharedServer = s
            atexit { PostgresTestServer.sharedServer?.stop() }
            return s
        }
    }

    private init(directory: String, port: Int) { self.directory = directory; self.port = port }

    public static func start() throws -> PostgresTestServer {
        var template = Array("/tmp/cpgt-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw POSIXError(.EIO) }
        let directory = String(cString: made)
        var user: String? = nil
        if geteuid() == 0, let pw = getpwnam("postgres") {
            chown(directory, pw.pointee.pw_uid, pw.pointee.pw_gid)
            user = "postgres"
        }
        let pwfile = directory + "/pw"
        FileManager.default.createFile(atPath: pwfile, contents: Data(password.utf8))
        if let pw = getpwnam("postgres"), user != nil { chown(pwfile, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        let server = PostgresTestServer(directory: directory, port: 20000 + Int(getpid() % 20000))
        let initdb = try run(asUser(user, [binDirectory + "/initdb", "-D", directory + "/data", "-A", "scram-sha-256", "--pwfile", pwfile,
                                           "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]))
        guard initdb.status == 0 else { server.stop(); throw TestServerFailure("initdb failed: \(initdb.stderr)") }
        let ctl = try run(asUser(user, [binDirectory + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/server.log", "-w",
                                        "-o", "-p \(server.port) -k \(directory) -c listen_addresses='' -c fsync=off", "start"]))
        if let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
           let first = text.split(separator: "\n").first, let pid = pid_t(first) {
            server.pid = pid
        }
        guard ctl.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            server.stop()
            throw TestServerFailure("pg_ctl start failed: \(ctl.stderr) \(log)")
        }
        return server
    }

    static func asUser(_ user: String?, _ argv: [String]) -> [String] {
        guard let user else { return argv }
        return ["/usr/sbin/runuser", "-u", user, "--"] + argv
    }

    /// Whether a process is alive (not a zombie).
    public static func alive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// Stops the server (fast shutdown, then SIGKILL) and removes its directory.
    public func stop() {
        if pid > 0 && Self.alive(pid) {
            kill(pid, SIGINT)
            var n = 0
            while Self.alive(pid) && n < 200 { usleep(25_000); n += 1 }
            if Self.alive(pid) { kill(pid, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a psql command (-c) against `database`; throws on failure.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let r = try Self.run(["/usr/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql], environment: environment)
        guard r.status == 0 else { throw TestServerFailure("psql failed: \(r.stderr)") }
        return r.stdout
    }

    /// Creates database `name` with several tables: customers (`rows`), orders (3 × `rows`, with
    /// random-looking text: a few MB at 20 000), a second schema's table, an empty table and one
    /// whose name needs quoting.
    public func createSampleDatabase(_ name: String, rows: Int = 20_000) throws {
        try psql("CREATE DATABASE \"\(name)\"")
        try psql("""
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL, created timestamptz NOT NULL);
        INSERT INTO customers (name, email, created) SELECT 'customer ' || g, 'c' || g || '@example.org', '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, \(rows)) g;
        CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10,2), status text, note text);
        INSERT INTO orders (customer_id, amount, status, note) SELECT 1 + g % \(rows), (g % 10000) / 100.0, (ARRAY['paid','shipped','pending'])[1 + g % 3], md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, \(rows * 3)) g;
        CREATE SCHEMA audit;
        CREATE TABLE audit.log (at timestamptz, message text);
        INSERT INTO audit.log SELECT now(), 'event ' || g FROM generate_series(1, 500) g;
        CREATE TABLE empty_table (x int);
        CREATE TABLE "Mixed Case|pipe" (v text);
        INSERT INTO "Mixed Case|pipe" VALUES ('a'), ('b'), (NULL);
        """, database: name)
    }

    public struct Result: Sendable { public let status: Int32; public let stdout: String; public let stderr: String }

    /// Runs `argv` (argv[0] a path) with this process's environment plus `environment`, output
    /// through temporary files.
    public static func run(_ argv: [String], environment: [String: String] = [:]) throws -> Result {
        var template = Array("/tmp/cpgt-out-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw POSIXError(.EIO) }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pid = try TestSpawn.start(argv, environment: environment, stdout: dir + "/out", stderr: dir + "/err")
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let out = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
        return Result(status: status, stdout: out, stderr: err)
    }
}

public struct TestServerFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
