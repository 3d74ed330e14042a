import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The environment of the tools the tests run themselves (this process's, less COFFER_*).
let mariaDBTestEnvironment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }

/// The full path of a MariaDB tool (PATH, then /usr/sbin and /usr/bin).
func mariaDBTool(_ name: String) -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"] {
        let candidate = "\(directory)/\(name)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return "/usr/bin/\(name)"
}

/// A MariaDB server for the CLI tests, started as COMPONENTS.md says: `mariadb-install-db` and
/// `mariadbd --no-defaults` on a private directory and socket, no TCP, as `mysql` under root.
final class CLIMariaDB: @unchecked Sendable {
    let directory: String
    var datadir: String { directory + "/data" }
    var socket: String { directory + "/mysqld.sock" }
    private(set) var pid: pid_t = 0
    let userArguments: [String]

    init(datadir existing: String? = nil) throws {
        var template = Array("/tmp/coffer-cli-mariadb-XXXXXX".utf8CString)
        _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        directory = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if geteuid() == 0, let mysql = getpwnam("mysql") {
            chown(directory, mysql.pointee.pw_uid, mysql.pointee.pw_gid)
            userArguments = ["--user=mysql"]
        } else {
            userArguments = geteuid() == 0 ? ["--user=root"] : []
        }
        mkdir(directory + "/tmp", 0o700)
        if geteuid() == 0, let mysql = getpwnam("mysql") { chown(directory + "/tmp", mysql.pointee.pw_uid, mysql.pointee.pw_gid) }
        let install = try spawn([mariaDBTool("mariadb-install-db"), "--no-defaults"] + userArguments +
                                ["--datadir=\(datadir)", "--tmpdir=\(directory)/tmp", "--auth-root-authentication-method=normal", "--skip-test-db"],
                                environment: mariaDBTestEnvironment, stdin: nil)
        guard install.status == 0 else { throw SQLFailure(message: "mariadb-install-db: \(install.stderr) \(install.stdoutText.suffix(2000))") }
        try start()
    }

    func start(extra: [String] = []) throws {
        pid = try spawnInBackground([mariaDBTool("mariadbd"), "--no-defaults"] + userArguments + [
            "--datadir=\(datadir)", "--socket=\(socket)", "--pid-file=\(directory)/mysqld.pid",
            "--log-error=\(directory)/mysqld.err", "--tmpdir=\(directory)/tmp", "--skip-networking", "--innodb-buffer-pool-size=64M",
        ] + extra, stdinPath: "/dev/null")
        for _ in 0..<1200 {
            if (try? sql("SELECT 1")) == "1\n" { return }
            usleep(100_000)
        }
        stop()
        throw POSIXError(.ETIMEDOUT)
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        _ = waitForExit(pid)
        pid = 0
    }

    /// Runs SQL as root through the socket; returns the batch output.
    @discardableResult
    func sql(_ text: String, database: String? = nil) throws -> String {
        let r = try spawn([mariaDBTool("mariadb"), "--no-defaults", "--socket=\(socket)", "--user=root", "--batch", "--skip-column-names"]
                          + (database.map { ["--database=\($0)"] } ?? []), environment: mariaDBTestEnvironment, stdin: Array(text.utf8))
        guard r.status == 0 else { throw SQLFailure(message: r.stderr) }
        return r.stdoutText
    }

    struct SQLFailure: Error { let message: String }

    /// A client option file for this server (root, the socket; `extra` lines appended).
    func optionFile(_ path: String, extra: String = "") throws -> String {
        try "[client]\nuser=root\nsocket=\(socket)\n\(extra)".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// One server for the whole suite, stopped after its last test (also when one fails).
struct CLIMariaDBServer: SuiteTrait, TestScoping {
    @TaskLocal static var current: CLIMariaDB?
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let server = try CLIMariaDB()
        defer { server.stop(); try? FileManager.default.removeItem(atPath: server.directory) }
        try await Self.$current.withValue(server) { try await function() }
    }
}

/// `coffer backup --mariadb` and logical dumps through the real binary and a real MariaDB 10.11.
@Suite(.serialized, CLIMariaDBServer()) struct RepoMariaDBTests {
    var server: CLIMariaDB { CLIMariaDBServer.current! }

    struct Setup {
        let scratch = Scratch()
        let key: String
        let repo: String

        init() throws {
            key = try scratch.keygen()
            repo = scratch.file("repo")
            let r = try run(["init"])
            #expect(r.status == 0, "init: \(r.stderr)")
        }

        @discardableResult
        func run(_ args: [String], stdoutPath: String? = nil) throws -> RunResult {
            try coffer([args[0], "--key-file", key] + args.dropFirst(), environment: ["COFFER_REPOSITORY": repo], stdoutPath: stdoutPath)
        }

        func snapshotCount() throws -> Int {
            let r = try run(["snapshots", "--json"])
            #expect(r.status == 0, "snapshots: \(r.stderr)")
            return ((try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [Any]) ?? []).count
        }
    }

    /// Full + incremental backups through the binary; the streams are then restored by hand with
    /// the standard tools (dump | mbstream -x, prepare, prepare --incremental-dir, copy-back) and
    /// a server started on the result has the rows added between the two backups.
    @Test func fullAndIncrementalBackupsRestoreWithTheStandardTools() throws {
        let s = try Setup()
        try server.sql("""
            DROP DATABASE IF EXISTS cli; CREATE DATABASE cli; USE cli;
            CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
            INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_20000;
            """)
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        let full = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file, "--host", "db1"])
        #expect(full.status == 0, "backup: \(full.stderr)")
        #expect(full.stdoutText.hasPrefix("snapshot "))
        #expect(full.stderr.contains("full backup"), "\(full.stderr)")
        try server.sql("INSERT INTO t SELECT seq, 'new' FROM seq_20001_to_20500;", database: "cli")
        let inc = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file, "--mariadb-incremental", "--host", "db1", "--json"])
        #expect(inc.status == 0, "incremental: \(inc.stderr)")
        let incJSON = try #require(try JSONSerialization.jsonObject(with: Data(inc.stdout)) as? [String: Any])
        let incID = try #require(incJSON["id"] as? String)
        #expect(incJSON["paths"] as? [String] == ["/mariadb"])
        #expect(try s.snapshotCount() == 2)

        let ls = try s.run(["ls", incID])
        #expect(ls.status == 0 && ls.stdoutText.contains("/mariadb/backup.xbstream"), "\(ls.stdoutText) \(ls.stderr)")

        // By hand, as an operator without coffer's restore commands would.
        let fullID = try #require(full.stdoutText.split(separator: " ").dropFirst().first.map(String.init))
        for (id, dir) in [(fullID, "base"), (incID, "inc")] {
            let output = try s.scratch.write([], "\(dir).xb")  // spawn opens it without O_CREAT
            let dumped = try s.run(["dump", id, "/mariadb/backup.xbstream"], stdoutPath: output)
            #expect(dumped.status == 0, "dump: \(dumped.stderr)")
            try FileManager.default.createDirectory(atPath: s.scratch.file(dir), withIntermediateDirectories: true)
            let x = try spawn([mariaDBTool("mbstream"), "-x", "-C", s.scratch.file(dir)], environment: mariaDBTestEnvironment,
                              stdin: try s.scratch.read("\(dir).xb"))
            #expect(x.status == 0, "mbstream: \(x.stderr)")
        }
        let checkpoints = String(decoding: try s.scratch.read("inc/xtrabackup_checkpoints"), as: UTF8.self)
        #expect(checkpoints.contains("backup_type = incremental"))
        for args in [["--prepare", "--target-dir=\(s.scratch.file("base"))"],
                     ["--prepare", "--target-dir=\(s.scratch.file("base"))", "--incremental-dir=\(s.scratch.file("inc"))"]] {
            let p = try spawn([mariaDBTool("mariabackup"), "--no-defaults"] + args, environment: mariaDBTestEnvironment, stdin: nil)
            #expect(p.status == 0, "prepare: \(p.stderr.suffix(2000))")
        }
        let restored = try CLIMariaDB()
        restored.stop()
        try FileManager.default.removeItem(atPath: restored.datadir)
        let back = try spawn([mariaDBTool("mariabackup"), "--no-defaults", "--copy-back", "--target-dir=\(s.scratch.file("base"))",
                              "--datadir=\(restored.datadir)"], environment: mariaDBTestEnvironment, stdin: nil)
        #expect(back.status == 0, "copy-back: \(back.stderr.suffix(2000))")
        if geteuid() == 0, let mysql = getpwnam("mysql") {
            _ = try spawn(["/bin/chown", "-R", "\(mysql.pointee.pw_uid):\(mysql.pointee.pw_gid)", restored.datadir], environment: mariaDBTestEnvironment, stdin: nil)
        }
        try restored.start(extra: ["--skip-grant-tables"])
        #expect(try restored.sql("SELECT COUNT(*), SUM(v = 'new') FROM t", database: "cli") == "20500\t500\n")
    }

    /// mariabackup or the server failing fails the backup: exit status, the tool's words on stderr,
    /// no snapshot; a password given in the option file never shows.
    @Test func failingBackupWritesNoSnapshot() throws {
        let s = try Setup()
        let wrong = try server.optionFile(s.scratch.file("wrong.cnf"), extra: "password=Wr0ngSecretPw\n")
        let denied = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", wrong])
        #expect(denied.status == Exit.io, "\(denied.stderr)")
        #expect(denied.stderr.contains("Access denied"), "\(denied.stderr)")
        #expect(!denied.stderr.contains("Wr0ngSecretPw"))

        // Only mariabackup fails (it reads [mariadb-backup]; the client does not).
        let onlyBackup = try server.optionFile(s.scratch.file("b.cnf"), extra: "[mariadb-backup]\nuser=nobody_at_all\n")
        let failed = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", onlyBackup])
        #expect(failed.status == Exit.io, "\(failed.stderr)")
        #expect(failed.stderr.contains("--backup failed"), "\(failed.stderr)")

        // The server is down.
        let gone = try "[client]\nuser=root\nsocket=\(s.scratch.file("no.sock"))\n".write(toFile: s.scratch.file("gone.cnf"), atomically: true, encoding: .utf8)
        _ = gone
        let down = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", s.scratch.file("gone.cnf")])
        #expect(down.status == Exit.io, "\(down.stderr)")
        #expect(try s.snapshotCount() == 0)

        // Usage: no base for an incremental; paths or streams with --mariadb.
        let noBase = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", onlyBackup, "--mariadb-incremental"])
        #expect(noBase.status == Exit.usage, "\(noBase.stderr)")
        #expect(try s.run(["backup", "--mariadb", "/etc"]).status == Exit.usage)
        #expect(try s.run(["backup", "--mariadb-incremental", "/etc"]).status == Exit.usage)
        #expect(try s.snapshotCount() == 0)
    }

    /// `restore-test` and `restore-db` of a full + incremental chain through the binary.
    @Test func restoreTestAndRestoreDBOfAnIncrementalChain() throws {
        let s = try Setup()
        try server.sql("""
            DROP DATABASE IF EXISTS rt; CREATE DATABASE rt; USE rt;
            CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2)) ENGINE=InnoDB;
            INSERT INTO orders SELECT seq, seq / 100 FROM seq_1_to_10000;
            CREATE TABLE log (id INT PRIMARY KEY, msg VARCHAR(30)) ENGINE=Aria;
            INSERT INTO log SELECT seq, 'x' FROM seq_1_to_100;
            """)
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        #expect(try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file, "--host", "db2"]).status == 0)
        try server.sql("INSERT INTO orders SELECT seq, 1 FROM seq_10001_to_10250;", database: "rt")
        let inc = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file, "--mariadb-incremental", "--host", "db2"])
        #expect(inc.status == 0, "\(inc.stderr)")
        let checks = try s.scratch.write(Array("""
            -- database: rt
            -- name: rows added after the full backup
            -- expect: 10250 | 250
            SELECT COUNT(*), SUM(amount = 1 AND id > 10000) FROM orders;
            """.utf8), "checks.sql")
        let test = try s.run(["restore-test", "latest", "--check-sql", checks, "--json"])
        #expect(test.status == 0, "restore-test: \(test.stdoutText) \(test.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(test.stdout)) as? [String: Any])
        #expect(report["passed"] as? Bool == true, "\(report)")
        let listed = try s.run(["snapshots"])
        #expect(listed.stdoutText.contains("restore-tested"), "\(listed.stdoutText)")

        // A check that does not hold fails the test (exit 1).
        let wrong = try s.scratch.write(Array("-- database: rt\n-- expect: 9999\nSELECT COUNT(*) FROM orders;\n".utf8), "wrong.sql")
        let failed = try s.run(["restore-test", "latest", "--check-sql", wrong, "--no-save"])
        #expect(failed.status == 1, "\(failed.stdoutText) \(failed.stderr)")

        let datadir = s.scratch.file("datadir")
        let restored = try s.run(["restore-db", "latest", "--target", datadir])
        #expect(restored.status == 0, "restore-db: \(restored.stdoutText) \(restored.stderr)")
        #expect(FileManager.default.fileExists(atPath: datadir + "/rt/orders.ibd"))
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: s.scratch.path)) ?? []).contains { $0.hasPrefix(".coffer-restore-") })
        let again = try s.run(["restore-db", "latest", "--target", datadir])
        #expect(again.status == Exit.usage, "\(again.stderr)")
        #expect(again.stderr.contains("not empty"), "\(again.stderr)")
    }

    /// `restore-db --copy-back DATADIR` prepares the chain and copies it into a fresh data
    /// directory, on which a real mariadbd starts with every row; `--move-back` moves; a non-empty
    /// directory is refused untouched; the flags exclude each other and --target. The backup and
    /// the restore test are signed (`--sign`), and `snapshots --verify-signer` shows only the
    /// signed result, never a newer unsigned one.
    @Test func copyBackMoveBackAndSignedRestoreTest() throws {
        let s = try Setup()
        try server.sql("""
            DROP DATABASE IF EXISTS cb; CREATE DATABASE cb; USE cb;
            CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
            INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_5000;
            """)
        let producer = try PublicKeys.keyPair(s.scratch, "ed25519", "producer")
        let tester = try PublicKeys.keyPair(s.scratch, "ed25519", "tester")
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        let backup = try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file, "--sign", s.scratch.file("producer.key")])
        #expect(backup.status == 0, "backup: \(backup.stderr)")

        // copy-back into the data directory of a stopped server (removed: restore-db creates it).
        let target = try CLIMariaDB()
        target.stop()
        try FileManager.default.removeItem(atPath: target.datadir)
        let copied = try s.run(["restore-db", "latest", "--copy-back", target.datadir])
        #expect(copied.status == 0, "copy-back: \(copied.stdoutText) \(copied.stderr)")
        #expect(copied.stdoutText.contains("--copy-back"), "\(copied.stdoutText)")
        #expect(copied.stdoutText.contains("--prepare"), "\(copied.stdoutText)")
        try target.start(extra: ["--skip-grant-tables"])
        #expect(try target.sql("SELECT COUNT(*), COUNT(DISTINCT v) FROM t", database: "cb") == "5000\t5000\n")
        target.stop()
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: target.directory)) ?? []).contains { $0.hasPrefix(".coffer-restore-") })

        // move-back into an empty directory.
        let moved = s.scratch.file("moved")
        try FileManager.default.createDirectory(atPath: moved, withIntermediateDirectories: true)
        let move = try s.run(["restore-db", "latest", "--move-back", moved])
        #expect(move.status == 0, "move-back: \(move.stdoutText) \(move.stderr)")
        #expect(move.stdoutText.contains("--move-back"), "\(move.stdoutText)")
        #expect(FileManager.default.fileExists(atPath: moved + "/cb/t.ibd"))

        // A non-empty data directory is refused and left as it was.
        let busy = s.scratch.file("busy")
        _ = try s.scratch.write(Array("keep me".utf8), "busy/ibdata1")
        let refused = try s.run(["restore-db", "latest", "--copy-back", busy])
        #expect(refused.status == Exit.usage, "\(refused.stderr)")
        #expect(refused.stderr.contains("not empty"), "\(refused.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: busy) == ["ibdata1"])
        #expect(try s.scratch.read("busy/ibdata1") == Array("keep me".utf8))
        for flags in [["--copy-back", busy, "--move-back", busy], ["--copy-back", busy, "--target", busy], []] {
            let r = try s.run(["restore-db", "latest"] + flags)
            #expect(r.status == Exit.usage, "\(flags): \(r.stderr)")
        }

        // A signed restore test, then a newer unsigned one.
        let signedTest = try s.run(["restore-test", "latest", "--sign", s.scratch.file("tester.key")])
        #expect(signedTest.status == 0, "restore-test --sign: \(signedTest.stdoutText) \(signedTest.stderr)")
        #expect(try s.run(["restore-test", "latest", "--sign", s.scratch.file("tester.key"), "--no-save"]).status == Exit.usage)
        let unsigned = try s.run(["restore-test", "latest"])
        #expect(unsigned.status == 0, "restore-test: \(unsigned.stderr)")
        func restoreTest(_ extra: [String]) throws -> [String: Any] {
            let r = try s.run(["snapshots", "--json"] + extra)
            #expect(r.status == 0, "snapshots \(extra): \(r.stderr)")
            let list = (try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [[String: Any]]) ?? []
            return (list.first?["restore_test"] as? [String: Any]) ?? [:]
        }
        let plain = try restoreTest([])
        #expect(plain["signed_by"] as? [String] == [], "newest result, unsigned: \(plain)")
        let verify = ["--verify-signer", s.scratch.file("producer.pub"), "--verify-signer", s.scratch.file("tester.pub")]
        let verified = try restoreTest(verify)
        #expect(verified["verified_by"] as? String == "ed25519 \(tester)", "\(verified)")
        #expect(verified["passed"] as? Bool == true)
        let text = try s.run(["snapshots"] + verify)
        #expect(text.stdoutText.contains("passed, signed by ed25519 \(tester)"), "\(text.stdoutText)")
        // Only the producer's key: the snapshot is listed, no restore test counts.
        let onlyProducer = try s.run(["snapshots", "--verify-signer", s.scratch.file("producer.pub")])
        #expect(onlyProducer.status == 0, "\(onlyProducer.stderr)")
        #expect(!onlyProducer.stdoutText.contains("restore-tested"), "\(onlyProducer.stdoutText)")
        _ = producer
    }

    /// SIGTERM to a running `restore-test`: no mariadbd and no temporary directory are left.
    @Test func interruptedRestoreTestLeavesNothingBehind() throws {
        let s = try Setup()
        try server.sql("""
            DROP DATABASE IF EXISTS big; CREATE DATABASE big; USE big;
            CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(1000)) ENGINE=InnoDB;
            INSERT INTO t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_30000;
            """)
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        #expect(try s.run(["backup", "--mariadb", "--mariadb-defaults-file", file]).status == 0)
        let tmp = s.scratch.file("tmp")
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        for delay in [700_000, 2_500_000] as [UInt32] {
            let pid = try spawnInBackground(["/usr/bin/env", "TMPDIR=\(tmp)", "COFFER_REPOSITORY=\(s.repo)", cofferBinary,
                                             "restore-test", "--key-file", s.key, "latest", "--no-save"], stdinPath: "/dev/null")
            usleep(delay)
            kill(pid, SIGTERM)
            let end = waitForTermination(pid)
            #expect(!end.exited || end.code != 0 || delay > 2_000_000, "restore-test ended by itself before the signal")
            // The signal handler's teardown and the restore task's own cleanup used to remove the
            // same tree at once and could each stop at an entry the other took (restore/base left):
            // teardowns are now serialised and the removal goes on past vanished entries.
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).isEmpty,
                    "left in TMPDIR after \(delay) µs: \(((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []))")
            try? FileManager.default.removeItem(atPath: tmp)
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            #expect(!mariaDBProcessMentions(tmp), "a process working in \(tmp) survived")
        }
    }

    /// A backup host with only a writer key (it can add, not read): full backups work, an
    /// incremental one (which reads its base) is refused with a usage error.
    @Test func writerKeyTakesFullBackups() throws {
        let s = try Setup()
        let writer = s.scratch.file("writer.key")
        let made = try coffer(["key", "add", "--writer", "-o", writer, "--key-file", s.key, "--repo", s.repo])
        #expect(made.status == 0, "\(made.stderr)")
        try server.sql("DROP DATABASE IF EXISTS w; CREATE DATABASE w; CREATE TABLE w.t (a INT) ENGINE=InnoDB; INSERT INTO w.t VALUES (1),(2);")
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        let full = try coffer(["backup", "--repo", s.repo, "--writer-key", writer, "--mariadb", "--mariadb-defaults-file", file])
        #expect(full.status == 0, "\(full.stderr)")
        let inc = try coffer(["backup", "--repo", s.repo, "--writer-key", writer, "--mariadb", "--mariadb-defaults-file", file, "--mariadb-incremental"])
        #expect(inc.status == Exit.usage, "\(inc.stderr)")
        #expect(try s.snapshotCount() == 1)
        let listing = try s.run(["ls", "latest"])
        #expect(listing.stdoutText.contains("/mariadb/backup.xbstream"), "\(listing.stdoutText)")
    }

    /// A logical dump: `backup --stdin-from-command -- mariadb-dump …`, restored with
    /// `coffer dump … | mariadb`; a failing mariadb-dump writes no snapshot.
    @Test func logicalDumpRoundTrip() throws {
        let s = try Setup()
        try server.sql("""
            DROP DATABASE IF EXISTS logical; CREATE DATABASE logical; USE logical;
            CREATE TABLE items (id INT PRIMARY KEY, data VARBINARY(200), note TEXT) ENGINE=InnoDB;
            INSERT INTO items SELECT seq, RANDOM_BYTES(200), CONCAT('line\\ttab\\n', seq) FROM seq_1_to_5000;
            """)
        let before = try server.sql("SELECT COUNT(*), MD5(GROUP_CONCAT(MD5(data) ORDER BY id)), MD5(GROUP_CONCAT(MD5(note) ORDER BY id)) FROM items", database: "logical")
        let file = try server.optionFile(s.scratch.file("my.cnf"))
        let backup = try s.run(["backup", "--stdin-from-command", "--stdin-name", "logical.sql", "--",
                                mariaDBTool("mariadb-dump"), "--defaults-file=\(file)", "--single-transaction", "--hex-blob",
                                "--databases", "logical"])
        #expect(backup.status == 0, "backup: \(backup.stderr)")
        try server.sql("DROP DATABASE logical")
        let dumped = try s.run(["dump", "latest", "logical.sql"])
        #expect(dumped.status == 0, "dump: \(dumped.stderr)")
        let load = try spawn([mariaDBTool("mariadb"), "--defaults-file=\(file)"], environment: mariaDBTestEnvironment, stdin: dumped.stdout)
        #expect(load.status == 0, "mariadb: \(load.stderr)")
        #expect(try server.sql("SELECT COUNT(*), MD5(GROUP_CONCAT(MD5(data) ORDER BY id)), MD5(GROUP_CONCAT(MD5(note) ORDER BY id)) FROM items", database: "logical") == before)

        let failing = try s.run(["backup", "--stdin-from-command", "--stdin-name", "missing.sql", "--",
                                 mariaDBTool("mariadb-dump"), "--defaults-file=\(file)", "--databases", "no_such_database"])
        #expect(failing.status != 0)
        #expect(try s.snapshotCount() == 1)
    }
}

/// True when some process's command line mentions `text` (other than this test process).
func mariaDBProcessMentions(_ text: String) -> Bool {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for entry in entries where entry.allSatisfy(\.isNumber) && Int32(entry) != getpid() {
        guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        if String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text) { return true }
    }
    return false
}
