import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL cluster for a restore test: `initdb` in a new directory under the temporary
/// directory, `pg_ctl start` with the server listening only on a unix socket in that directory
/// (`listen_addresses=''`, on a port found free), run as the unprivileged `postgres` user when this
/// process is root (PostgreSQL refuses to run as root). ``tearDown()`` stops it (immediate shutdown,
/// then SIGKILL if it lingers) and removes the directory.
public final class PostgresThrowaway: ThrowawayServer, @unchecked Sendable {
    public var engine: DatabaseInfo.Engine { .postgresql }
    public let directory: String
    public let port: Int
    /// The user the server runs as (nil: this process's user).
    let runAs: String?
    private let lock = NSLock()
    private var torn = false
    /// Held for a whole teardown, so a second caller (the command's own cleanup while a signal
    /// handler tears down) returns only when everything is gone.
    private let teardownLock = NSLock()
    private var serverPID: pid_t?
    /// initdb and pg_ctl start through it; closed first by a teardown.
    let gate = SpawnGate()

    var dataDirectory: String { directory + "/data" }

    /// Client tools' environment: no Coffer secrets, none of the user's PG* settings (they point at
    /// the user's servers), this server's socket, port and superuser.
    var clientEnvironment: [String] {
        ChildProcess.environment(keeping: []).filter { !$0.hasPrefix("PG") }
            + ["PGHOST=\(directory)", "PGPORT=\(port)", "PGUSER=postgres", "PGDATABASE=postgres", "PGCONNECT_TIMEOUT=10"]
    }

    func conninfo(_ database: String) -> String {
        "host=\(PostgresConnInfo.quote(directory)) port=\(port) user=postgres dbname=\(PostgresConnInfo.quote(database))"
    }

    private init(directory: String, port: Int, runAs: String?) {
        self.directory = directory; self.port = port; self.runAs = runAs
    }

    /// Creates, registers (``ThrowawayRegistry``) and starts a cluster; on failure everything
    /// created is removed before the error is thrown.
    public static func start() async throws -> PostgresThrowaway {
        let initdb = try PostgresTools.server("initdb"), pgctl = try PostgresTools.server("pg_ctl")
        let port = try freePort()
        let runAs: String? = geteuid() == 0 ? "postgres" : nil
        if runAs != nil && getpwnam("postgres") == nil {
            throw DatabaseError.toolMissing("the unprivileged user \"postgres\" (the server cannot run as root)")
        }
        // Created and registered as one step an interrupt waits for: from here on, an interrupt removes the directory.
        let server = try ThrowawayRegistry.shared.creating { () throws -> PostgresThrowaway in
            var template = Array((NSTemporaryDirectory().hasPrefix("/") && NSTemporaryDirectory().utf8.count < 40
                                  ? NSTemporaryDirectory() : "/tmp/").utf8)
            if template.last != UInt8(ascii: "/") { template.append(UInt8(ascii: "/")) }
            template += Array("coffer-pg-XXXXXX".utf8) + [0]
            let made: String? = template.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { mkdtemp($0.baseAddress!).map { String(cString: $0) } }
            }
            guard let directory = made else {
                throw DatabaseError.toolFailed(step: "creating the throwaway server's directory", status: "mkdtemp", stderr: String(cString: strerror(errno)))
            }
            let server = PostgresThrowaway(directory: directory, port: port, runAs: runAs)
            ThrowawayRegistry.shared.register(server)
            return server
        }
        let directory = server.directory
        if runAs != nil, let pw = getpwnam("postgres") { chown(directory, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        do {
            let environment = server.clientEnvironment
            let initdbRun = try await ChildProcess.run(try ChildProcess.asUser(runAs, [initdb, "-D", server.dataDirectory, "-A", "trust", "-U", "postgres",
                                                                                      "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
                                                       name: "initdb", environment: environment, started: server.setupChild, gate: server.gate)
            guard initdbRun.status == 0 else {
                throw DatabaseError.toolFailed(step: "initdb", status: ChildProcess.describe(initdbRun.status), stderr: initdbRun.stderr)
            }
            let options = "-p \(server.port) -k \(directory) -c listen_addresses='' -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            let started = await ChildProcess.runCatching(try ChildProcess.asUser(runAs, [pgctl, "-D", server.dataDirectory, "-l", directory + "/server.log",
                                                                                      "-w", "-t", "60", "-o", options, "start"]),
                                                          name: "pg_ctl start", environment: environment, started: server.setupChild, gate: server.gate)
            server.readPID()
            if let failure = started {
                let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
                throw DatabaseError.toolFailed(step: "pg_ctl start", status: failure.status, stderr: failure.stderr + "\n" + log.suffix(2000))
            }
        } catch {
            server.tearDown()
            throw error
        }
        return server
    }

    /// initdb or pg_ctl while one runs (through runuser, which passes SIGTERM on): stopped by a
    /// teardown that comes while the server is being set up (an interrupt).
    private var setupPID: pid_t?
    var setupChild: @Sendable (pid_t?) -> Void { { [weak self] pid in self?.lock.withLock { self?.setupPID = pid } } }

    private func readPID() {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let pid = pid_t(first), pid > 0 else { return }  // initdb's bootstrap backend writes -PID
        lock.withLock { serverPID = pid }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw DatabaseError.toolFailed(step: "finding a free port", status: "socket", stderr: String(cString: strerror(errno))) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f000001).bigEndian
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw DatabaseError.toolFailed(step: "finding a free port", status: "bind", stderr: String(cString: strerror(errno))) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether `pid` is a live (not zombie) process.
    static func alive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    public func tearDown() {
        teardownLock.lock()
        defer { teardownLock.unlock() }
        gate.close()  // no initdb/pg_ctl starts from now on; one starting now is in setupPID below
        let (already, pid) = lock.withLock { () -> (Bool, pid_t?) in
            defer { torn = true }
            return (torn, serverPID)
        }
        guard !already else { return }
        if let setup = lock.withLock({ setupPID }), PostgresThrowaway.alive(setup) {
            kill(setup, SIGTERM)
            var waited = 0
            while PostgresThrowaway.alive(setup) && waited < 100 { usleep(50_000); waited += 1 }
        }
        var target = pid
        if target == nil {
            readPID()
            target = lock.withLock { serverPID }
        }
        if let pid = target, PostgresThrowaway.alive(pid) {
            kill(pid, SIGQUIT)   // immediate shutdown: the children exit with the postmaster
            var waited = 0
            while PostgresThrowaway.alive(pid) && waited < 100 { usleep(50_000); waited += 1 }
            if PostgresThrowaway.alive(pid) {
                kill(pid, SIGKILL)
                waited = 0
                while PostgresThrowaway.alive(pid) && waited < 100 { usleep(50_000); waited += 1 }
            }
        }
        WorkDirectory.remove(directory)
        ThrowawayRegistry.shared.unregister(self)
    }

    public func rowCounts() async throws -> [DatabaseInfo.Database] {
        let environment = clientEnvironment
        let (_, databases) = try await PostgresTools.listDatabases(conninfo: conninfo("postgres"), environment: environment)
        var out: [DatabaseInfo.Database] = []
        for (name, size) in databases {
            let lines = try await ChildProcess.checked(try PostgresTools.psql(conninfo(name)), name: "psql (counting rows in \(name))",
                                                       environment: environment, input: Array(PostgresTools.countRowsSQL.utf8) + [0x0A])
            out.append(.init(name: name, file: nil, sizeBytes: size, tables: try PostgresTools.parseCounts(lines.text.split(separator: "\n").map(String.init))))
        }
        return out
    }

    public func query(_ sql: String, database: String?) async throws -> [[String]] {
        let out = try await ChildProcess.checked([try PostgresTools.client("psql"), "-X", "-q", "--csv", "-t", "-v", "ON_ERROR_STOP=1",
                                                  "-d", conninfo(database ?? "postgres"), "-f", "-"],
                                                 name: "psql (check query)", environment: clientEnvironment, input: Array(sql.utf8) + [0x0A])
        return CSV.parse(out.text)
    }
}

extension ChildProcess {
    /// Runs a tool; nil when it exited with 0, else its status and stderr (a start failure too).
    static func runCatching(_ argv: @autoclosure () throws -> [String], name: String, environment: [String],
                            started: (@Sendable (pid_t?) -> Void)? = nil, gate: SpawnGate? = nil) async -> (status: String, stderr: String)? {
        do {
            let out = try await run(try argv(), name: name, environment: environment, started: started, gate: gate)
            return out.status == 0 ? nil : (describe(out.status), out.stderr)
        } catch {
            return ("could not start", "\(error)")
        }
    }
}

/// RFC 4180 CSV as psql --csv prints it: fields quoted with '"' when needed, '""' inside quotes.
enum CSV {
    static func parse(_ text: String) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field = ""
        var quoted = false
        var chars = Array(text.unicodeScalars)[...]
        var fieldStarted = false
        while let c = chars.popFirst() {
            if quoted {
                if c == "\"" {
                    if chars.first == "\"" { chars.removeFirst(); field.unicodeScalars.append("\"") } else { quoted = false }
                } else {
                    field.unicodeScalars.append(c)
                }
                continue
            }
            switch c {
            case "\"": quoted = true; fieldStarted = true
            case ",": row.append(field); field = ""; fieldStarted = true
            case "\n":
                row.append(field); rows.append(row); row = []; field = ""; fieldStarted = false
            case "\r": continue
            default: field.unicodeScalars.append(c); fieldStarted = true
            }
        }
        if fieldStarted || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }
}

/// The PostgreSQL engine of ``DatabaseEngines``.
public enum PostgreSQLEngine: DatabaseEngine {
    public static var engine: DatabaseInfo.Engine { .postgresql }

    public static func startThrowaway() async throws -> any ThrowawayServer {
        try await PostgresThrowaway.start()
    }

    public static func restore(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                               into server: any ThrowawayServer) async throws {
        guard let info = chain.last?.info else { throw DatabaseError.unsupported("no snapshot given") }
        guard let server = server as? PostgresThrowaway else { throw DatabaseError.unsupported("not a PostgreSQL server") }
        try await PostgresRestore.restoreThrowaway(info: info, store: store, server: server)
    }

    public static func restoreDB(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                                 options: RestoreDBOptions) async throws -> [String] {
        try await PostgresRestore.restoreDB(chain: chain, from: store, options: options)
    }
}
