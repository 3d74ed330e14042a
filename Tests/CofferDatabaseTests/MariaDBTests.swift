@testable import CofferDatabase
import CofferKeys
import CofferRepository
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A repository in a private temporary directory, opened with a fresh key file.
final class MariaDBTestRepository: @unchecked Sendable {
    let path: String
    let repository: Repository

    init() async throws {
        var template = Array("\(NSTemporaryDirectory())/coffer-mariadb-repo-XXXXXX".utf8CString)
        _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var options = Repository.CreateOptions()
        options.packSize = 4 << 20
        repository = try await Repository.create(storage: try LocalStorage.create(path: path + "/repo"),
                                                 keys: KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()]), options: options)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A backup through the library as `coffer backup --mariadb` runs it; saves the snapshot.
    func backup(_ connection: MariaDBConnection, base: SnapshotRecord? = nil) async throws -> SnapshotRecord {
        let archiver = Archiver(store: repository, options: ArchiveOptions(hostname: "dbhost", username: "test"))
        let result = try await MariaDBBackup.run(.init(connection: connection, base: base), archiver: archiver)
        let id = try await repository.saveSnapshot(result.info)
        return SnapshotRecord(id: id, info: result.info)
    }

    func records() async throws -> [SnapshotRecord] {
        try await repository.listSnapshots().map { SnapshotRecord(id: $0.id, info: $0.info) }
    }
}

/// One source server for the whole suite (started before its first test, torn down after its
/// last, also when a test fails).
struct MariaDBSourceServer: SuiteTrait, TestScoping {
    @TaskLocal static var current: ThrowawayMariaDB?
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        signal(SIGPIPE, SIG_IGN)
        let server = try ThrowawayMariaDB.start()
        defer { server.tearDown() }
        try await Self.$current.withValue(server) { try await function() }
    }
}

extension Trait where Self == MariaDBSourceServer {
    static var mariaDBSourceServer: MariaDBSourceServer { MariaDBSourceServer() }
}

/// Where a test's processes are: true when some process's command line mentions `text`.
func processMentioning(_ text: String) -> Bool {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for entry in entries where entry.allSatisfy(\.isNumber) {
        guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        let line = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        if line.contains(text) && !line.contains("swift-test") && !line.contains("xctest") { return true }
    }
    return false
}

/// Physical MariaDB backups with real servers (MariaDB 10.11 + mariadb-backup): the source server
/// is a ``ThrowawayMariaDB`` (so it runs as `mysql` under root, on a private socket).
@Suite(.serialized, .mariaDBSourceServer) struct MariaDBPhysicalTests {
    var server: ThrowawayMariaDB { MariaDBSourceServer.current! }

    /// Fills `db` (a fresh database): an InnoDB table of `rows` rows, an incompressible blob table
    /// and an Aria table (not InnoDB: copied under mariabackup's lock).
    func makeDatabase(_ db: String, rows: Int) async throws {
        _ = try await server.query("""
            DROP DATABASE IF EXISTS \(db); CREATE DATABASE \(db); USE \(db);
            CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64), amount DECIMAL(12,2), note VARCHAR(100)) ENGINE=InnoDB;
            INSERT INTO orders SELECT seq, CONCAT('cust-', seq % 1007), (seq*7919 % 100000)/100, MD5(seq) FROM seq_1_to_\(rows);
            CREATE TABLE blobs (id INT PRIMARY KEY, data VARBINARY(1024)) ENGINE=InnoDB;
            INSERT INTO blobs SELECT seq, RANDOM_BYTES(1024) FROM seq_1_to_2000;
            CREATE TABLE audit (id INT PRIMARY KEY, msg VARCHAR(50)) ENGINE=Aria;
            INSERT INTO audit SELECT seq, CONCAT('event ', seq) FROM seq_1_to_500;
            """, database: nil)
    }

    func checksum(_ target: ThrowawayMariaDB, _ db: String) async throws -> [[String]] {
        try await target.query("SELECT COUNT(*), SUM(amount), MD5(GROUP_CONCAT(note ORDER BY id)) FROM orders; SELECT MD5(GROUP_CONCAT(MD5(data) ORDER BY id)) FROM blobs;", database: db)
    }

    @Test func fullBackupRecordsLSNsAndCountsAndRestoresIntoAThrowawayServer() async throws {
        try await makeDatabase("shop", rows: 30000)
        let repo = try await MariaDBTestRepository()
        let snapshot = try await repo.backup(server.connection)
        let info = try #require(snapshot.info.database)
        #expect(info.engine == .mariadb)
        #expect(info.method == "mariabackup")
        #expect(info.serverVersion.contains("MariaDB"))
        let physical = try #require(info.physical)
        #expect(physical.backupType == "full-backuped")
        #expect(physical.fromLSN == 0 && physical.toLSN > 0 && physical.lastLSN >= physical.toLSN)
        #expect(physical.baseSnapshot == nil)
        #expect(physical.file == "/mariadb/backup.xbstream")
        #expect(snapshot.info.paths == ["/mariadb"])
        let shop = try #require(info.databases.first { $0.name == "shop" })
        #expect(shop.sizeBytes > 0)
        #expect(shop.tables.map(\.name) == ["audit", "blobs", "orders"])
        #expect(shop.tables.map(\.rows) == [500, 2000, 30000])
        #expect(!info.databases.contains { ["mysql", "sys", "performance_schema", "information_schema"].contains($0.name) })

        // The stream in the snapshot is the whole xbstream (mbstream accepts it; it holds the checkpoints).
        let node = try #require(try await repo.repository.lookup(path: [Array("mariadb".utf8), Array("backup.xbstream".utf8)],
                                                                 root: snapshot.info.tree))
        #expect(node.size > 1 << 20)

        let expected = try await checksum(server, "shop")
        let target = try #require(try await MariaDBEngine.startThrowaway() as? ThrowawayMariaDB)
        defer { target.tearDown() }
        try await MariaDBEngine.restore(chain: try MariaDBRestore.chain(ending: snapshot, in: try await repo.records()),
                                        from: repo.repository, into: target)
        let counts = try await target.rowCounts()
        #expect(counts.map(\.tables) == info.databases.map(\.tables))
        #expect(try await checksum(target, "shop") == expected)
    }

    @Test func incrementalChainRestoresTheNewRows() async throws {
        try await makeDatabase("inc", rows: 20000)
        let repo = try await MariaDBTestRepository()
        let full = try await repo.backup(server.connection)
        _ = try await server.query("""
            INSERT INTO orders SELECT seq, 'later', 1.50, MD5(seq) FROM seq_20001_to_25000;
            DELETE FROM orders WHERE id <= 100;
            CREATE TABLE added (a INT) ENGINE=InnoDB; INSERT INTO added VALUES (1),(2),(3);
            INSERT INTO audit VALUES (9999, 'after the full backup');
            """, database: "inc")
        let base = try MariaDBBackup.incrementalBase(in: try await repo.records(), host: "dbhost")
        #expect(base.id == full.id)
        let incremental = try await repo.backup(server.connection, base: base)
        let physical = try #require(incremental.info.database?.physical)
        #expect(physical.backupType == "incremental")
        #expect(physical.baseSnapshot == full.id)
        #expect(physical.fromLSN == full.info.database?.physical?.toLSN)
        let recorded = try #require(incremental.info.database?.databases.first { $0.name == "inc" })
        #expect(recorded.tables.first { $0.name == "orders" }?.rows == 24900)
        #expect(recorded.tables.first { $0.name == "added" }?.rows == 3)

        // A second incremental on top of the first: the chain is three snapshots long.
        _ = try await server.query("INSERT INTO added VALUES (4);", database: "inc")
        let second = try await repo.backup(server.connection, base: try MariaDBBackup.incrementalBase(in: try await repo.records(), host: "dbhost"))
        #expect(second.info.database?.physical?.baseSnapshot == incremental.id)
        let chain = try MariaDBRestore.chain(ending: second, in: try await repo.records())
        #expect(chain.map(\.id) == [full.id, incremental.id, second.id])

        let expected = try await checksum(server, "inc")
        let target = try ThrowawayMariaDB.make()
        defer { target.tearDown() }
        try await MariaDBEngine.restore(chain: chain, from: repo.repository, into: target)
        #expect(try await target.query("SELECT COUNT(*) FROM added; SELECT msg FROM audit WHERE id = 9999;", database: "inc")
                == [["4"], ["after the full backup"]])
        #expect(try await checksum(target, "inc") == expected)

        // restore-db's library call: the same chain into a new data directory.
        let datadir = target.directory + "/restored-datadir"
        try await MariaDBEngine.restoreDatadir(chain: chain, from: repo.repository, datadir: datadir)
        #expect(FileManager.default.fileExists(atPath: datadir + "/inc/orders.ibd"))
        #expect(FileManager.default.fileExists(atPath: datadir + "/ibdata1"))
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: target.directory)) ?? []).contains { $0.hasPrefix(".coffer-restore-") })
        // Not into a directory that holds files.
        await #expect(throws: MariaDBError.self) {
            try await MariaDBEngine.restoreDatadir(chain: chain, from: repo.repository, datadir: datadir)
        }
        // Not from an incremental snapshot alone.
        #expect(throws: MariaDBError.self) { try MariaDBRestore.validate(Array(chain.dropFirst())) }
        // Not when a base is missing from the repository.
        #expect(throws: MariaDBError.self) {
            _ = try MariaDBRestore.chain(ending: second, in: [second, full])
        }
    }

    @Test func failingMariabackupFailsTheBackupAndShowsItsOutput() async throws {
        try await makeDatabase("fail", rows: 100)
        let repo = try await MariaDBTestRepository()
        // The client connects as root, mariabackup (which also reads [mariadb-backup]) as a user
        // that does not exist: only mariabackup fails.
        let file = repo.path + "/my.cnf"
        try "[client]\nsocket=\(server.socket)\nuser=root\n[mariadb-backup]\nuser=no_such_user\n".write(toFile: file, atomically: true, encoding: .utf8)
        let connection = MariaDBConnection(defaultsFile: file)
        do {
            _ = try await repo.backup(connection)
            Issue.record("the backup succeeded")
        } catch let error as MariaDBError {
            guard case .stepFailed(let step, let status, let output) = error else { Issue.record("\(error)"); return }
            #expect(step.contains("--backup"))
            #expect(status.contains("exit status"))
            #expect(output.contains("no_such_user") || output.contains("Access denied"), "\(output)")
        }
        #expect(try await repo.records().isEmpty)

        // Server down: the backup fails before mariabackup starts, and writes no snapshot.
        let down = try ThrowawayMariaDB.make()
        defer { down.tearDown() }
        await #expect(throws: MariaDBError.self) { _ = try await repo.backup(down.connection) }
        #expect(try await repo.records().isEmpty)
        // An incremental backup needs a base.
        #expect(throws: MariaDBError.self) { _ = try MariaDBBackup.incrementalBase(in: [], host: "dbhost") }
    }

    @Test func interruptedRestoreLeavesNoServerAndNoDirectory() async throws {
        try await makeDatabase("intr", rows: 30000)
        let repo = try await MariaDBTestRepository()
        let snapshot = try await repo.backup(server.connection)
        let chain = try MariaDBRestore.chain(ending: snapshot, in: try await repo.records())
        for delay in [300_000, 1_500_000] as [UInt32] {
            let target = try ThrowawayMariaDB.make()
            let directory = target.directory
            let restore = Task { try await MariaDBEngine.restore(chain: chain, from: repo.repository, into: target) }
            usleep(delay)
            target.tearDown()
            _ = try? await restore.value
            target.tearDown()
            #expect(!FileManager.default.fileExists(atPath: directory))
            #expect(!processMentioning(directory), "a process of \(directory) survived")
        }
    }
}

/// What needs no server: parsing the tools' output and the option-file rule.
@Suite struct MariaDBParsingTests {
    @Test func checkpointsAreParsedAndDamagedOnesRefused() throws {
        let good = try MariaDBBackup.Checkpoints(text: "backup_type = incremental\nfrom_lsn = 44894\nto_lsn = 45000\nlast_lsn = 5021053\nrecover_binlog_info = 0\n")
        #expect(good.backupType == "incremental" && good.fromLSN == 44894 && good.toLSN == 45000 && good.lastLSN == 5021053)
        #expect(throws: MariaDBError.self) { try MariaDBBackup.Checkpoints(text: "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 12x\nlast_lsn = 1\n") }
        #expect(throws: MariaDBError.self) { try MariaDBBackup.Checkpoints(text: "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 12\n") }
        #expect(throws: MariaDBError.self) { try MariaDBBackup.Checkpoints(text: "backup_type = weird\nfrom_lsn = 0\nto_lsn = 1\nlast_lsn = 1\n") }
        #expect(throws: MariaDBError.self) { try MariaDBBackup.Checkpoints(text: "") }
    }

    @Test func batchOutputIsUnescaped() {
        let rows = MariaDBClient.parseBatch(Array("a\\tb\t1\nNULL\tx\\\\y\\nz\n".utf8))
        #expect(rows == [["a\tb", "1"], ["", "x\\y\nz"]])
        #expect(MariaDBClient.quoted("we`ird") == "`we``ird`")
    }

    @Test func optionFileComesFirstAndNoPasswordOnTheCommandLine() {
        #expect(MariaDBConnection(defaultsFile: "/etc/coffer/my.cnf").toolArguments == ["--defaults-file=/etc/coffer/my.cnf"])
        #expect(MariaDBConnection(defaultsFile: nil).toolArguments == ["--no-defaults", "--socket=/run/mysqld/mysqld.sock"])
        // (The process environment is not changed: other suites spawn tools at the same time.)
        #expect(MariaDBTools.environment(["PATH=/usr/bin", "MYSQL_PWD=secret-in-env", "HOME=/root"]) == ["PATH=/usr/bin", "HOME=/root"])
    }
}
