@testable import CofferDatabase
import CofferKeys
@testable import CofferRepository
import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A repository in a temporary directory with a fresh key.
final class ScratchRepository: @unchecked Sendable {
    let dir: String
    let key = SymmetricKeyFile.generate()
    var path: String { dir + "/repo" }

    init() {
        var template = Array("/tmp/cdbt-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        dir = String(cString: made!)
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func create() async throws -> Repository {
        try await Repository.create(storage: try LocalStorage.create(path: path), keys: KeyObjectRecipients(recipients: [key]))
    }
    func open() async throws -> Repository {
        try await Repository.open(storage: try LocalStorage(path: path), identities: KeyObjectIdentities(identities: [key]))
    }
}

/// Sets this process's environment for the duration of `body` (the database code passes PG*
/// variables on to its tools). Serialized suites only.
func withEnvironment<T>(_ values: [String: String?], _ body: () async throws -> T) async rethrows -> T {
    let old = values.keys.map { ($0, ProcessInfo.processInfo.environment[$0]) }
    for (k, v) in values { if let v { setenv(k, v, 1) } else { unsetenv(k) } }
    defer { for (k, v) in old { if let v { setenv(k, v, 1) } else { unsetenv(k) } } }
    return try await body()
}

let serverEnvironment: [String: String?] = {
    guard let s = try? PostgresTestServer.shared() else { return [:] }
    return s.environment.mapValues { Optional($0) }
}()

/// PostgreSQL backups, restore tests and throwaway servers against a real PostgreSQL 15 (one
/// shared cluster, a database per test). Serialized: the tests set PG* variables of this process.
@Suite(.serialized, .enabled(if: PostgresTestServer.available)) struct PostgresTests {
    let server: PostgresTestServer
    init() throws { server = try PostgresTestServer.shared() }

    func backup(_ repo: Repository, databases: [String]) async throws -> (String, SnapshotInfo) {
        let result = try await withEnvironment(serverEnvironment) {
            try await PostgresBackup.backup(conninfo: server.conninfo, databases: databases,
                                            archiver: Archiver(store: repo, options: ArchiveOptions.current()))
        }
        return (try await repo.saveSnapshot(result.info), result.info)
    }

    /// Backup of a generated database: the files in the snapshot, the recorded counts (exact),
    /// a restore test that passes and is stored with the snapshot, then removed with it by forget.
    @Test func backupRestoreTestAndForget() async throws {
        try server.createSampleDatabase("lib_round", rows: 20_000)
        let scratch = ScratchRepository()
        let repo = try await scratch.create()
        let (id, info) = try await backup(repo, databases: ["lib_round"])
        let db = try #require(info.database)
        #expect(db.engine == .postgresql && db.method == "pg_dump")
        #expect(db.serverVersion.hasPrefix("15"))
        #expect(db.databases.map(\.name) == ["lib_round"])
        #expect(db.databases[0].file == "/postgres/lib_round.dump")
        #expect(db.databases[0].sizeBytes > 1_000_000)
        let counts = Dictionary(uniqueKeysWithValues: db.databases[0].tables.map { ("\($0.schema).\($0.name)", $0.rows) })
        #expect(counts == ["public.customers": 20_000, "public.orders": 60_000, "audit.log": 500, "public.empty_table": 0,
                           "public.Mixed Case|pipe": 3])
        #expect(info.paths == ["/postgres"])
        #expect(try await repo.lookup(path: [Array("postgres".utf8), Array("globals.sql".utf8)], root: info.tree) != nil)
        let dump = try #require(try await repo.lookup(path: [Array("postgres".utf8), Array("lib_round.dump".utf8)], root: info.tree))
        #expect(dump.size > 100_000)

        let checks = try CheckFile(parsing: """
        -- database: lib_round
        -- expect: 60000
        SELECT count(*) FROM orders;
        -- database: lib_round
        -- expect: 1 | customer 1
        SELECT id, name FROM customers ORDER BY id LIMIT 1;
        """, path: "checks.sql")
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: repo, checks: [checks],
                                                 hostname: "h", programVersion: "test")
        #expect(result.passed, "\(result)")
        #expect(result.error == nil)
        #expect(result.tablesCompared == 5)
        #expect(result.rowsCompared == 80_503)
        #expect(result.checks.count == 2 && result.checks.allSatisfy(\.passed))
        #expect(ThrowawayRegistry.shared.count(of: .postgresql) == 0)

        try await repo.saveRestoreTest(result)
        #expect(try await repo.latestRestoreTests()[id]?.passed == true)
        #expect(try await repo.snapshotIDs() == [id], "a result is not a snapshot")
        let report = try await repo.check()
        #expect(report.ok && report.warnings.isEmpty, "\(report)")
        try await repo.removeSnapshot(id)
        #expect(try await repo.restoreTestNames().isEmpty)
    }

    /// A failing check query and a wrong expectation make the test fail, naming the check.
    @Test func failingChecksFailTheTest() async throws {
        try server.createSampleDatabase("lib_checks", rows: 100)
        let scratch = ScratchRepository()
        let repo = try await scratch.create()
        let (id, info) = try await backup(repo, databases: ["lib_checks"])
        let checks = try CheckFile(parsing: """
        -- database: lib_checks
        -- expect: 7
        SELECT count(*) FROM customers;
        -- database: lib_checks
        -- expect: 1
        SELECT count(*) FROM no_such_table;
        """, path: "bad.sql")
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: repo, checks: [checks],
                                                 hostname: "h", programVersion: "test")
        #expect(!result.passed)
        #expect(result.mismatches.isEmpty)
        #expect(result.checks.map(\.passed) == [false, false])
        #expect(result.checks[0].got == [["100"]])
        #expect(result.checks[1].error?.contains("no_such_table") == true)
    }

    /// pg_dump killed after writing part of its output: the backup fails with the reason, nothing
    /// is committed (no snapshot, and the psql session holding the snapshot is gone).
    @Test func killedPgDumpFailsTheBackup() async throws {
        try server.createSampleDatabase("lib_killed", rows: 2_000)
        let scratch = ScratchRepository()
        let bin = scratch.dir + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let wrapper = "#!/bin/sh\n\(try ChildProcess.find("pg_dump")) \"$@\" | head -c 10000\necho 'pg_dump: simulated crash' >&2\nkill -9 $$\n"
        try TestFiles.writeExecutable(Array(wrapper.utf8), to: bin + "/pg_dump")
        let repo = try await scratch.create()
        var env = serverEnvironment
        env["PATH"] = bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        await #expect {
            _ = try await withEnvironment(env) {
                try await PostgresBackup.backup(conninfo: server.conninfo, databases: ["lib_killed"],
                                                archiver: Archiver(store: repo, options: ArchiveOptions.current()))
            }
        } throws: { error in
            let text = "\(error)"
            return text.contains("pg_dump") && text.contains("killed by signal 9") && text.contains("simulated crash")
        }
        #expect(try await repo.snapshotIDs().isEmpty)
        var sessions = ""
        for _ in 0..<50 {
            sessions = try server.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'lib_killed'")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if sessions == "0" { break }
            usleep(100_000)
        }
        #expect(sessions == "0")
    }

    /// A wrong PGPASSWORD: the backup fails with the server's message; the right one (passed to the
    /// tools although ChildEnvironment drops *PASSWORD* variables) works, as the other tests show.
    @Test func wrongPasswordFailsTheBackup() async throws {
        let scratch = ScratchRepository()
        let repo = try await scratch.create()
        var env = serverEnvironment
        env["PGPASSWORD"] = "wrong"
        await #expect {
            _ = try await withEnvironment(env) {
                try await PostgresBackup.backup(conninfo: server.conninfo, databases: [],
                                                archiver: Archiver(store: repo, options: ArchiveOptions.current()))
            }
        } throws: { error in "\(error)".contains("password authentication failed") }
        #expect(try await repo.snapshotIDs().isEmpty)
    }

    /// A damaged pack: the restore test fails and its report names the damaged object.
    @Test func damagedPackFailsTheRestoreTest() async throws {
        try server.createSampleDatabase("lib_damaged", rows: 5_000)
        let scratch = ScratchRepository()
        let repo = try await scratch.create()
        let (id, info) = try await backup(repo, databases: ["lib_damaged"])
        // Flip a byte in the middle of the largest pack.
        let packs = try FileManager.default.subpathsOfDirectory(atPath: scratch.path + "/data")
            .map { scratch.path + "/data/" + $0 }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
        let largest = try #require(packs.max { (try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int) ?? 0
            < (try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0 })
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: largest)))
        bytes[bytes.count / 2] ^= 0x40
        chmod(largest, 0o600)
        try Data(bytes).write(to: URL(fileURLWithPath: largest))
        let reopened = try await scratch.open()
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: reopened, checks: [],
                                                 hostname: "h", programVersion: "test")
        #expect(!result.passed)
        let name = (largest as NSString).lastPathComponent
        #expect(result.error?.contains("data/\(name)") == true, "\(result.error ?? "no error")")
        #expect(result.error?.contains("damaged") == true)
        #expect(ThrowawayRegistry.shared.count(of: .postgresql) == 0)
    }

    /// A throwaway server: running as `postgres` when root, in its temporary directory; tearDown
    /// leaves no process and no directory, and is idempotent.
    @Test func throwawayServerTearsDown() async throws {
        let server = try await PostgresThrowaway.start()
        let pidText = try String(contentsOfFile: server.dataDirectory + "/postmaster.pid", encoding: .utf8)
        let pid = try #require(pid_t(pidText.split(separator: "\n")[0]))
        #expect(PostgresTestServer.alive(pid))
        #expect(ThrowawayRegistry.shared.count(of: .postgresql) == 1)
        if geteuid() == 0 {
            var st = stat()
            stat("/proc/\(pid)", &st)
            #expect(st.st_uid == getpwnam("postgres").pointee.pw_uid)
        }
        #expect(try await server.query("SELECT 1, NULL, 'a,b'", database: nil) == [["1", "", "a,b"]])
        // Its own teardown, not the registry's tearDownAll(): MariaDB suites run beside this one in
        // the same process, and their servers are registered too.
        server.tearDown()
        #expect(!PostgresTestServer.alive(pid))
        #expect(!FileManager.default.fileExists(atPath: server.directory))
        server.tearDown()
        #expect(ThrowawayRegistry.shared.count(of: .postgresql) == 0)
    }
}
