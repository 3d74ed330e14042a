import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A MariaDB server of this process in a private temporary directory: its data directory, a unix
/// socket and no TCP port (`--skip-networking`), its pid file and error log. Run as `mysql` when
/// this process is root (the directory is then owned by `mysql`, mode 0700). A fresh server gets
/// its system tables from `mariadb-install-db` (root without a password, reachable only through
/// the private socket); a restored one starts with `--skip-grant-tables` (the restored accounts'
/// passwords are not known here), still only on the private socket.
///
/// The server starts on first use (``rowCounts()``, ``query(_:database:)``, ``ensureStarted()``),
/// so a restore test does not initialise a data directory only to replace it.
public final class ThrowawayMariaDB: ThrowawayServer, @unchecked Sendable {
    public var engine: DatabaseInfo.Engine { .mariadb }
    /// The private directory holding everything; removed by ``tearDown()``.
    public let directory: String
    public var datadir: String { directory + "/data" }
    public var socket: String { directory + "/mysqld.sock" }
    var errorLog: String { directory + "/mysqld.err" }

    let user: (name: String, uid: uid_t, gid: gid_t)?
    private let lock = NSLock()
    private var server: MariaDBChild?
    private var restored = false
    private var pageSize: Int?
    private var tornDown = false
    let tracker = MariaDBChildTracker()
    /// Held for a whole teardown and for the restore's removal of its work directory: two
    /// recursive removals of one tree at once (the signal handler's teardown, the restore task's
    /// cleanup and its own teardown) each stop at the first file the other removed first, and
    /// together leave part of the tree behind.
    private let removal = NSLock()

    /// How clients reach this server (root over the private socket, no option file read).
    public var connection: MariaDBConnection {
        MariaDBConnection(defaultsFile: nil, arguments: ["--socket=\(socket)", "--user=root"])
    }

    /// Creates the directory; the server starts on first use.
    private init(directory: String) {
        self.directory = directory
        user = MariaDBTools.serverUser()
    }

    /// Creates the directory and registers the server (one step an interrupt waits for, so an
    /// interrupt never misses the directory); the server starts on first use.
    public static func make() throws -> ThrowawayMariaDB {
        let server = try ThrowawayRegistry.shared.creating { () throws -> ThrowawayMariaDB in
            let server = ThrowawayMariaDB(directory: try MariaDBTools.temporaryDirectory("coffer-mariadb"))
            // From here on there is something to clean up: an interrupted command tears it down.
            guard ThrowawayRegistry.shared.register(server) else {
                throw MariaDBError.refused("interrupted: no throwaway server is started")
            }
            return server
        }
        if let user = server.user, chown(server.directory, user.uid, user.gid) != 0 {
            let reason = MariaDBTools.errorText()
            server.tearDown()
            throw MariaDBError.io(path: server.directory, reason: "cannot give it to \(user.name): \(reason)")
        }
        return server
    }

    /// A server with a fresh, empty data directory, started now.
    public static func start() throws -> ThrowawayMariaDB {
        let server = try ThrowawayMariaDB.make()
        do { try server.ensureStarted() } catch { server.tearDown(); throw error }
        return server
    }

    /// Starts the server if it is not running: initialises the data directory first unless a
    /// backup was restored into it.
    public func ensureStarted() throws {
        try lock.withLock {
            guard !tornDown else { throw MariaDBError.refused("the throwaway server was torn down") }
            if let server, server.isRunning { return }
            if !restored && !FileManager.default.fileExists(atPath: datadir + "/mysql") {
                try? FileManager.default.removeItem(atPath: datadir)
                var arguments = ["--no-defaults"]
                if let user { arguments.append("--user=\(user.name)") }
                arguments += ["--datadir=\(datadir)", "--tmpdir=\(try privateTmp())", "--auth-root-authentication-method=normal", "--skip-test-db"]
                try tracker.run(step: "mariadb-install-db", try MariaDBTools.installDB(), arguments)
            }
            try startLocked()
        }
    }

    /// The server's own temporary directory (not /tmp: concurrent bootstraps collide there).
    private func privateTmp() throws -> String {
        let path = directory + "/tmp"
        if !FileManager.default.fileExists(atPath: path) {
            guard mkdir(path, 0o700) == 0 else { throw MariaDBError.io(path: path, reason: MariaDBTools.errorText()) }
            if let user { _ = chown(path, user.uid, user.gid) }
        }
        return path
    }

    private func startLocked() throws {
        var arguments = ["--no-defaults"]
        if let user { arguments.append("--user=\(user.name)") }
        arguments += [
            "--datadir=\(datadir)", "--tmpdir=\(try privateTmp())", "--socket=\(socket)", "--pid-file=\(directory)/mysqld.pid", "--log-error=\(errorLog)",
            "--skip-networking", "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--skip-log-bin",
        ]
        if restored { arguments.append("--skip-grant-tables") }
        if let pageSize { arguments.append("--innodb-page-size=\(pageSize)") }
        let child = try MariaDBChild(try MariaDBTools.server(), arguments)
        server = child
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if !child.isRunning {
                let status = child.wait()
                throw MariaDBError.stepFailed(step: "mariadbd (throwaway server)", status: MariaDBTools.describe(status),
                                              output: Self.tail(of: errorLog))
            }
            if Self.canConnect(socket) { return }
            usleep(50_000)
        }
        stop(child)
        throw MariaDBError.stepFailed(step: "mariadbd (throwaway server)", status: "not ready after 120 s", output: Self.tail(of: errorLog))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s) and waits for it.
    private func stop(_ child: MariaDBChild) {
        child.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while child.isRunning && Date() < deadline { usleep(20_000) }
        if child.isRunning { child.signal(SIGKILL) }
        child.wait()
    }

    func stopServer() {
        lock.withLock {
            if let server { stop(server) }
            server = nil
        }
    }

    /// Replaces the data directory with the restored chain, then starts the server on it.
    func restore(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                 log: (@Sendable (String) -> Void)? = nil) async throws {
        stopServer()
        let fm = FileManager.default
        try? fm.removeItem(atPath: datadir)
        let scratch = directory + "/restore"
        try? fm.removeItem(atPath: scratch)
        guard mkdir(scratch, 0o700) == 0 else { throw MariaDBError.io(path: scratch, reason: MariaDBTools.errorText()) }
        defer { removal.withLock { WorkDirectory.remove(scratch) } }
        let prepared = try await MariaDBRestore.restore(chain: chain, from: store, datadir: datadir, scratch: scratch, move: true,
                                                        owner: user.map { ($0.uid, $0.gid) }, tracker: tracker, log: log)
        try lock.withLock {
            guard !tornDown else { throw MariaDBError.refused("the throwaway server was torn down") }
            restored = true
            pageSize = prepared.pageSize
            try startLocked()
        }
    }

    public func rowCounts() async throws -> [DatabaseInfo.Database] {
        try ensureStarted()
        return try MariaDBClient(connection: connection).rowCounts()
    }

    public func query(_ sql: String, database: String?) async throws -> [[String]] {
        try ensureStarted()
        return try MariaDBClient(connection: connection).query(sql, database: database)
    }

    /// Kills running restore steps and waits for each to exit, stops the server, removes the
    /// directory. Idempotent, and serialised: a second caller (the restore task's own teardown
    /// while the signal handler's runs) waits for the first to finish, then finds nothing left.
    public func tearDown() {
        removal.withLock {
            let first = lock.withLock { () -> Bool in
                defer { tornDown = true }
                return !tornDown
            }
            tracker.killAll()
            stopServer()
            WorkDirectory.remove(directory)
            if first { ThrowawayRegistry.shared.unregister(self) }
        }
    }

    deinit { tearDown() }

    /// The last lines of the server's error log.
    static func tail(of path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data.suffix(4096), as: UTF8.self).split(separator: "\n").suffix(15).joined(separator: "\n")
    }

    /// True when a unix-socket connection to `path` succeeds (the server is accepting clients).
    static func canConnect(_ path: String) -> Bool {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }
}

/// MariaDB's side of `restore-db` and `restore-test` (physical backups made by `backup --mariadb`).
public struct MariaDBEngine: DatabaseEngine {
    public static var engine: DatabaseInfo.Engine { .mariadb }

    public static func startThrowaway() async throws -> any ThrowawayServer {
        try ThrowawayMariaDB.make()
    }

    public static func restore(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                               into server: any ThrowawayServer) async throws {
        guard let server = server as? ThrowawayMariaDB else {
            throw MariaDBError.refused("a MariaDB snapshot can only be restored into a MariaDB throwaway server")
        }
        try await server.restore(chain: chain, from: store)
    }

    /// `restore-db` of a MariaDB snapshot: `options.target` is the data directory (missing or
    /// empty; the server using it stopped); `options.settings["copy-back"] == "1"` copies instead
    /// of moving the prepared files. Returns the steps done.
    public static func restoreDB(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                                 options: RestoreDBOptions) async throws -> [String] {
        guard let datadir = options.target, !datadir.isEmpty else {
            throw MariaDBError.refused("a MariaDB snapshot is restored into a data directory: give it as the target")
        }
        if !options.databases.isEmpty || options.create || options.globals {
            throw MariaDBError.refused("a physical MariaDB backup restores the whole server: databases, create and globals do not apply")
        }
        let steps = MariaDBStepLog(forward: options.log)
        let absolute = datadir.hasPrefix("/") ? datadir : FileManager.default.currentDirectoryPath + "/" + datadir
        try await MariaDBRestore.restoreDatadir(chain: chain, from: store, datadir: absolute,
                                                move: options.settings["copy-back"] != "1", log: { steps.add($0) })
        steps.add("restored \(chain.count == 1 ? "snapshot" : "\(chain.count) snapshots") into \(absolute): start the server on it")
        return steps.lines
    }

    /// `restore-db`: the chain into a missing or empty data directory (see
    /// ``MariaDBRestore/restoreDatadir(chain:from:datadir:move:log:)``).
    public static func restoreDatadir(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore, datadir: String,
                                      move: Bool = true, log: (@Sendable (String) -> Void)? = nil) async throws {
        try await MariaDBRestore.restoreDatadir(chain: chain, from: store, datadir: datadir, move: move, log: log)
    }
}

/// The steps of a restore, kept and passed on as they happen.
final class MariaDBStepLog: @unchecked Sendable {
    private let lock = NSLock()
    private var kept: [String] = []
    private let forward: (@Sendable (String) -> Void)?
    init(forward: (@Sendable (String) -> Void)?) { self.forward = forward }
    func add(_ line: String) {
        lock.withLock { kept.append(line) }
        forward?(line)
    }
    var lines: [String] { lock.withLock { kept } }
}
