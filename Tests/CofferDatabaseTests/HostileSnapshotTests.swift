@testable import CofferDatabase
import CofferKeys
@testable import CofferRepository
import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots written by a writer-key holder: valid and authenticated, but their `DatabaseInfo`
/// says what the writer wants (paths outside the backup's directory, another engine, absurd
/// sizes, names built to break quoting). `restore-db` and `restore-test` refuse them or use the
/// names only as quoted data, never as paths outside their work directories or as SQL.
/// In PostgresTests' suite: serialized with it (both set PG* variables of this process).
extension PostgresTests {
    /// A small real backup, and a way to store variants of it with a rewritten `DatabaseInfo`.
    struct Hostile {
        let scratch: ScratchRepository
        let repo: Repository
        let info: SnapshotInfo

        func variant(_ change: (inout DatabaseInfo) -> Void) async throws -> (id: String, info: SnapshotInfo) {
            var info = self.info
            var database = info.database!
            change(&database)
            info.database = database
            return (try await repo.saveSnapshot(info), info)
        }
    }

    func hostile(_ name: String) async throws -> Hostile {
        try server.createSampleDatabase(name, rows: 300)
        let scratch = ScratchRepository()
        let repo = try await scratch.create()
        let (_, info) = try await backup(repo, databases: [name])
        return Hostile(scratch: scratch, repo: repo, info: info)
    }

    /// The test server's connection string without a dbname.
    var serverWithoutDatabase: String {
        let parsed = try! PostgresConnInfo(parsing: server.conninfo)
        return parsed.pairs.filter { $0.0 != "dbname" }.map { "\($0.0)=\(PostgresConnInfo.quote($0.1))" }.joined(separator: " ")
    }

    @Test("a dump path outside /postgres/ (../, absolute elsewhere, ./) is refused by restore-db before pg_restore runs and fails the restore test")
    func hostileDumpPaths() async throws {
        let h = try await hostile("hostile_paths")
        for file in ["/postgres/../../../etc/passwd", "/etc/passwd", "../x", "/postgres/./hostile_paths.dump", "postgres/hostile_paths.dump"] {
            let (id, info) = try await h.variant { $0.databases[0].file = file }
            var options = RestoreDBOptions()
            options.target = serverWithoutDatabase + " dbname=postgres"
            options.create = true
            let error = await #expect(throws: DatabaseError.self, "\(file)") {
                try await withEnvironment(serverEnvironment) {
                    _ = try await PostgresRestore.restoreDB(chain: [(id, info)], from: h.repo, options: options)
                }
            }
            #expect(error == .unsupported("the snapshot records no dump file for database \"hostile_paths\""))
        }
        // One restore test (a throwaway server each): failed with the reason, nothing left running.
        let (id, info) = try await h.variant { $0.databases[0].file = "/postgres/../../../etc/passwd" }
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: h.repo, checks: [], hostname: "h", programVersion: "t")
        #expect(!result.passed)
        #expect(result.error?.contains("records no dump file") == true, "\(result)")
        #expect(ThrowawayRegistry.shared.count(of: .postgresql) == 0)
    }

    @Test("database names with quotes, spaces, a conninfo and SQL stay one quoted dbname: pg_restore reaches the real server and finds no such database")
    func hostileDatabaseNames() async throws {
        let h = try await hostile("hostile_names")
        for name in ["nope' host=/nonexistent-coffer-dir dbname='x", "x\\' port=1 ", "'; DROP DATABASE hostile_names; --", "line\nbreak"] {
            let (id, info) = try await h.variant { $0.databases[0].name = name }
            var options = RestoreDBOptions()
            options.target = serverWithoutDatabase  // one database, no dbname: restored into the database of its name
            let error = await #expect(throws: DatabaseError.self, "\(name)") {
                try await withEnvironment(serverEnvironment) {
                    _ = try await PostgresRestore.restoreDB(chain: [(id, info)], from: h.repo, options: options)
                }
            }
            guard case .toolFailed(_, _, let stderr) = error else { Issue.record("\(String(describing: error))"); continue }
            // The server was reached (not /nonexistent-coffer-dir, not port 1) and took the whole text as the name.
            #expect(stderr.contains("does not exist") && stderr.contains("FATAL"), "\(name): \(stderr)")
        }
        #expect(try server.psql("SELECT count(*) FROM pg_database WHERE datname = 'hostile_names'").trimmingCharacters(in: .whitespacesAndNewlines) == "1")
    }

    @Test("absurd row counts and table names with quotes, newlines and SQL: compared as data (saturating), reported as missing, no query built from them")
    func hostileTablesAndSizes() async throws {
        let h = try await hostile("hostile_tables")
        let (id, info) = try await h.variant {
            $0.databases[0].sizeBytes = .max
            $0.databases[0].tables += [
                DatabaseInfo.Table(schema: "public", name: "x\"; DROP TABLE orders; --\n", rows: .max),
                DatabaseInfo.Table(schema: "public'", name: "y`); DROP DATABASE hostile_tables; #", rows: .max),
                DatabaseInfo.Table(schema: "public", name: "negative", rows: -5),
            ]
        }
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: h.repo, checks: [], hostname: "h", programVersion: "t")
        #expect(!result.passed)
        #expect(result.error == nil, "the restore itself worked: \(result.error ?? "")")
        #expect(result.rowsCompared == .max, "saturated, not trapped")
        #expect(result.mismatches.count == 3, "\(result.mismatches)")
        #expect(result.mismatches.allSatisfy { $0.contains("is missing after the restore") })
        // The real tables were restored and compared equal: orders was not dropped.
        #expect(!result.mismatches.contains { $0.contains("public.orders:") })
        #expect(result.tablesCompared == info.database!.databases[0].tables.count)
    }

    @Test("another engine than the backup's: a pg_dump snapshot labelled MariaDB, a MariaDB stream path outside /mariadb/, an incremental on a PostgreSQL snapshot: refused before any tool or directory")
    func hostileEngineAndStreamPaths() async throws {
        let h = try await hostile("hostile_engine")
        let (id, info) = try await h.variant { $0.engine = .mariadb }
        let result = try await RestoreTester.run(snapshot: id, chain: [(id, info)], store: h.repo, checks: [], hostname: "h", programVersion: "t")
        #expect(!result.passed)
        #expect(result.error?.contains("not a physical MariaDB backup") == true, "\(result)")
        // (No registry count here: MariaDB suites run beside this one in the same process.)

        let work = h.scratch.dir + "/mariadb-target"
        for file in ["/mariadb/../../etc/passwd", "/etc/passwd", "/mariadb/", "/mariadb//x", "mariadb/backup.xbstream"] {
            let (pid, pinfo) = try await h.variant {
                $0.engine = .mariadb
                $0.physical = DatabaseInfo.PhysicalBackup(backupType: "full-backuped", fromLSN: 0, toLSN: 100, lastLSN: 100, baseSnapshot: nil, file: file)
            }
            var options = RestoreDBOptions()
            options.target = work
            await #expect(throws: MariaDBError.refused("snapshot \(pid.prefix(8)) names an invalid stream file"), "\(file)") {
                _ = try await MariaDBEngine.restoreDB(chain: [(pid, pinfo)], from: h.repo, options: options)
            }
            #expect(!FileManager.default.fileExists(atPath: work), "nothing created for \(file)")
        }

        // An incremental MariaDB snapshot whose base is the PostgreSQL snapshot.
        let pg = try await h.repo.saveSnapshot(h.info)
        let (incID, incInfo) = try await h.variant {
            $0.engine = .mariadb
            $0.physical = DatabaseInfo.PhysicalBackup(backupType: "incremental", fromLSN: 0, toLSN: 100, lastLSN: 100, baseSnapshot: pg,
                                                      file: MariaDBBackup.filePath)
        }
        let records = [SnapshotRecord(id: pg, info: h.info), SnapshotRecord(id: incID, info: incInfo)]
        #expect(throws: MariaDBError.self) { _ = try MariaDBRestore.chain(ending: records[1], in: records) }
        // And one that names itself as its base (a loop).
        var looping = incInfo
        looping.database?.physical?.baseSnapshot = incID
        #expect(throws: MariaDBError.self) { _ = try MariaDBRestore.chain(ending: SnapshotRecord(id: incID, info: looping), in: [SnapshotRecord(id: incID, info: looping)]) }
    }
}
