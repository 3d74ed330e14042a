import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `backup --postgres`, `restore-db`, `restore-test` and the restore-test column of `snapshots`
/// through the real binary, against a real PostgreSQL 15 (one shared cluster, a database per test).
@Suite(.serialized, .enabled(if: PostgresTestServer.available)) struct RepoPostgresTests {
    struct Setup {
        let scratch = Scratch()
        let key: String
        let repo: String
        let server: PostgresTestServer

        init(server: PostgresTestServer) throws {
            self.server = server
            key = try scratch.keygen()
            repo = scratch.file("repo")
            // The throwaway server's directory goes below TMPDIR; the postgres user must reach it.
            chmod(scratch.path, 0o755)
            let r = try run(["init"])
            #expect(r.status == 0, "init: \(r.stderr)")
        }

        var environment: [String: String] {
            server.environment.merging(["COFFER_REPOSITORY": repo, "TMPDIR": scratch.path]) { $1 }
        }

        @discardableResult
        func run(_ args: [String], environment extra: [String: String] = [:]) throws -> RunResult {
            try coffer([args[0], "--key-file", key] + args.dropFirst(), environment: environment.merging(extra) { $1 })
        }

        func snapshots() throws -> [[String: Any]] {
            let r = try run(["snapshots", "--json"])
            #expect(r.status == 0, "snapshots: \(r.stderr)")
            return (try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [[String: Any]]) ?? []
        }

        /// Throwaway server directories left below TMPDIR.
        func leftovers() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? []).filter { $0.hasPrefix("coffer-pg-") }
        }
    }

    @Test func backupRestoreTestAndRestoreDB() throws {
        let server = try PostgresTestServer.shared()
        try server.createSampleDatabase("cli_round", rows: 20_000)
        let s = try Setup(server: server)
        let backup = try s.run(["backup", "--postgres", server.conninfo, "--database", "cli_round", "--json"])
        #expect(backup.status == 0, "backup: \(backup.stderr)")
        var list = try s.snapshots()
        #expect(list.count == 1)
        #expect(list.first?["paths"] as? [String] == ["/postgres"])
        #expect(list.first?["restore_test"] == nil)

        let checks = try s.scratch.write(Array("""
        -- database: cli_round
        -- name: all orders
        -- expect: 60000
        SELECT count(*) FROM orders;
        -- database: cli_round
        -- expect: paid | 20000
        SELECT status, count(*) FROM orders WHERE status = 'paid' GROUP BY 1;
        """.utf8), "checks.sql")
        let test = try s.run(["restore-test", "latest", "--check-sql", checks])
        #expect(test.status == 0, "restore-test: \(test.stdoutText) \(test.stderr)")
        #expect(test.stdoutText.contains("PASSED"))
        #expect(test.stdoutText.contains("5 tables compared (80503 rows), 0 differences"))
        #expect(test.stdoutText.contains("check \(checks):4 (all orders): passed"))
        #expect(s.leftovers().isEmpty)

        list = try s.snapshots()
        let tested = try #require(list.first?["restore_test"] as? [String: Any])
        #expect(tested["passed"] as? Bool == true)
        #expect(tested["tables_compared"] as? Int == 5)
        #expect(tested["checks"] as? Int == 2)
        let text = try s.run(["snapshots"])
        #expect(text.stdoutText.contains("restore-tested "))
        #expect(text.stdoutText.contains(", passed"))

        // JSON report of a second run.
        let json = try s.run(["restore-test", "latest", "--json", "--no-save"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout)) as? [String: Any])
        #expect(report["passed"] as? Bool == true)
        #expect(report["rows_compared"] as? Int == 80_503)

        // restore-db into a fresh database of the same server.
        try server.psql("CREATE DATABASE cli_fresh")
        let restore = try s.run(["restore-db", "latest", "--target", server.conninfo + " dbname=cli_fresh", "--database", "cli_round"])
        #expect(restore.status == 0, "restore-db: \(restore.stderr)")
        #expect(restore.stdoutText.contains("database cli_round restored into cli_fresh"))
        #expect(try server.psql("SELECT count(*) FROM orders", database: "cli_fresh").hasPrefix("60000"))
        #expect(try server.psql("SELECT count(*) FROM \"Mixed Case|pipe\"", database: "cli_fresh").hasPrefix("3"))
        // --create where the database exists: pg_restore's own message, exit 5.
        let again = try s.run(["restore-db", "latest", "--target", server.conninfo, "--create"])
        #expect(again.status == 5)
        #expect(again.stderr.contains("pg_restore (database cli_round) failed"))
        #expect(again.stderr.contains("already exists"))

        // forget removes the snapshot's results with it; check is clean.
        let forget = try s.run(["forget", list.first!["id"] as! String])
        #expect(forget.status == 0, "\(forget.stderr)")
        let snapshotsDir = (try? FileManager.default.contentsOfDirectory(atPath: s.repo + "/snapshots")) ?? []
        #expect(snapshotsDir.filter { $0.contains("restoretest") }.isEmpty)
        let check = try s.run(["check"])
        #expect(check.status == 0, "\(check.stdoutText) \(check.stderr)")
    }

    @Test func passwordInConnectionStringIsRefused() throws {
        let server = try PostgresTestServer.shared()
        let s = try Setup(server: server)
        let r = try s.run(["backup", "--postgres", server.conninfo + " password=Sekrit99"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("password"))
        #expect(!r.stderr.contains("Sekrit99"))
        #expect(try s.snapshots().isEmpty)
    }

    /// The server is down: the backup fails with the tool's message and writes no snapshot.
    @Test func stoppedServerFailsTheBackup() throws {
        let server = try PostgresTestServer.shared()
        let s = try Setup(server: server)
        let down = try PostgresTestServer.start()
        down.stop()
        let r = try s.run(["backup", "--postgres", down.conninfo], environment: down.environment)
        #expect(r.status == 5)
        #expect(r.stderr.contains("psql"))
        #expect(r.stderr.contains("connection to server"))
        #expect(try s.snapshots().isEmpty)
    }

    /// SIGTERM while the restore test runs (early: while initdb sets the server up; late: once the
    /// server runs): coffer exits 143 and leaves no process and no temporary directory behind.
    @Test(arguments: [false, true]) func interruptedRestoreTestLeavesNothing(early: Bool) throws {
        let server = try PostgresTestServer.shared()
        let database = early ? "cli_interrupt_early" : "cli_interrupt"
        try server.createSampleDatabase(database, rows: early ? 100 : 50_000)
        let s = try Setup(server: server)
        let backup = try s.run(["backup", "--postgres", server.conninfo, "--database", database])
        #expect(backup.status == 0, "backup: \(backup.stderr)")

        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        env.merge(s.environment) { $1 }
        let argv = [cofferBinary, "restore-test", "--key-file", s.key, "latest"]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, s.scratch.file("out.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, s.scratch.file("err.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try closeInherited(&actions)
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        #expect(posix_spawn(&pid, cofferBinary, &actions, nil, cArgs, cEnv) == 0)
        // Wait until the throwaway server runs (its postmaster.pid exists), then a little more.
        var serverPID: pid_t = 0
        var serverDir = ""
        for _ in 0..<600 where serverPID == 0 {
            usleep(early ? 2_000 : 20_000)
            for dir in s.leftovers() {
                if early { serverDir = dir; serverPID = -1; break }
                if let text = try? String(contentsOfFile: s.scratch.file("\(dir)/data/postmaster.pid"), encoding: .utf8),
                   let first = text.split(separator: "\n").first, let p = pid_t(first), p > 0 {
                    serverPID = p
                    serverDir = dir
                }
            }
        }
        #expect(serverPID != 0, "no throwaway server appeared: \((try? String(contentsOfFile: s.scratch.file("err.txt"), encoding: .utf8)) ?? "")")
        if !early { usleep(300_000) }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let stderr = (try? String(contentsOfFile: s.scratch.file("err.txt"), encoding: .utf8)) ?? ""
        #expect(status & 0x7f == 0 && (status >> 8) & 0xff == 143, "status \(status): \(stderr)")
        if serverPID > 0 { #expect(!PostgresTestServer.alive(serverPID), "server \(serverPID) still runs") }
        // No process (initdb, postgres) works in the removed directory.
        usleep(200_000)
        let procs = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int($0) != nil }
        let users = procs.filter { p in
            guard let cmd = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(p)/cmdline")) else { return false }
            return String(decoding: cmd, as: UTF8.self).contains(serverDir)
        }
        #expect(users.isEmpty, "processes still using \(serverDir): \(users)")
        #expect(!FileManager.default.fileExists(atPath: s.scratch.file(serverDir)),
                "left: \(((try? FileManager.default.subpathsOfDirectory(atPath: s.scratch.file(serverDir))) ?? []).prefix(20)); stderr: \(stderr.suffix(600))")
        #expect(s.leftovers().isEmpty, "found \(serverDir) first; left: \(s.leftovers().map { ($0, ((try? FileManager.default.subpathsOfDirectory(atPath: s.scratch.file($0))) ?? []).prefix(10)) }); stderr: \(stderr.suffix(400))")
    }
}
