import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The tree commands through the real binary: init → backup twice → snapshots → ls → restore →
/// compare; dump; stream backups.
@Suite struct RepositoryTreeTests {
    /// A scratch directory with a key file, a repository and a small source tree.
    struct Setup {
        let scratch = Scratch()
        let key: String
        let repo: String
        let source: String

        init() throws {
            key = try scratch.keygen()
            repo = scratch.file("repo")
            // Snapshot paths are cleaned ("/tmp//x" → "/tmp/x").
            source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
            _ = try scratch.write(Array("hello\n".utf8), "src/a.txt", mode: 0o640)
            _ = try scratch.write([], "src/empty")
            _ = try scratch.write(pseudoRandom(3 << 20, seed: 11), "src/sub/big.bin")
            _ = try scratch.write(Array("x".utf8), "src/sub/deep/er/f\nnewline")
            try FileManager.default.createDirectory(atPath: scratch.file("src/emptydir"), withIntermediateDirectories: true)
            symlink("../a.txt", scratch.file("src/sub/link"))
            let r = try run(["init"])
            #expect(r.status == 0, "init: \(r.stderr)")
        }

        @discardableResult
        func run(_ args: [String], stdin: [UInt8]? = nil, stdoutPath: String? = nil) throws -> RunResult {
            // Options before the arguments: anything after "--" belongs to a stream command.
            try coffer([args[0], "--key-file", key] + args.dropFirst(), stdin: stdin, environment: ["COFFER_REPOSITORY": repo], stdoutPath: stdoutPath)
        }

        func snapshots() throws -> [[String: Any]] {
            let r = try run(["snapshots", "--json"])
            #expect(r.status == 0, "snapshots: \(r.stderr)")
            return (try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [[String: Any]]) ?? []
        }
    }

    @Test func backupTwiceListRestoreCompare() throws {
        let s = try Setup()
        let first = try s.run(["backup", "--tag", "t1", "--host", "testhost", s.source])
        #expect(first.status == 0, "backup: \(first.stderr)")
        #expect(first.stdoutText.hasPrefix("snapshot "))
        let second = try s.run(["backup", "--host", "testhost", "--json", s.source])
        #expect(second.status == 0, "backup: \(second.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(second.stdout)) as? [String: Any])
        let counts = try #require(summary["summary"] as? [String: Any])
        #expect(counts["files_unmodified"] as? Int == 4)
        #expect(counts["files_new"] as? Int == 0)
        #expect(counts["data_blobs"] as? Int == 0)
        #expect((summary["parent"] as? String)?.count == 64)

        let list = try s.snapshots()
        #expect(list.count == 2)
        for field in ["id", "short_id", "time", "hostname", "paths", "tags", "tree"] { #expect(list[0][field] != nil, "\(field)") }
        #expect(list[0]["hostname"] as? String == "testhost")
        #expect(list[0]["tags"] as? [String] == ["t1"])
        #expect(list[0]["paths"] as? [String] == [s.source])
        #expect(list[1]["parent"] as? String == list[0]["id"] as? String)
        let table = try s.run(["snapshots"])
        #expect(table.stdoutText.contains((list[0]["short_id"] as? String) ?? "?"))

        let ls = try s.run(["ls", "latest"])
        #expect(ls.status == 0, "ls: \(ls.stderr)")
        #expect(ls.stdoutText.contains("\(s.source)/sub/big.bin\n"))
        #expect(ls.stdoutText.contains("\(s.source)/sub/deep/er/f\\x0anewline\n"))
        let lsSub = try s.run(["ls", "-l", (list[0]["short_id"] as? String)!, "\(s.source)/sub"])
        #expect(lsSub.stdoutText.contains("-> ../a.txt"))
        #expect(!lsSub.stdoutText.contains("\(s.source)/a.txt"))

        let target = s.scratch.file("restored")
        let restore = try s.run(["restore", "latest", "--target", target])
        #expect(restore.status == 0, "restore: \(restore.stderr)")
        for name in ["a.txt", "empty", "sub/big.bin", "sub/deep/er/f\nnewline"] {
            #expect(try s.scratch.read("src/\(name)") == (FileManager.default.contents(atPath: target + s.source + "/" + name).map { [UInt8]($0) }), "\(name)")
        }
        var st = stat()
        #expect(lstat(target + s.source + "/a.txt", &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: target + s.source + "/sub/link")) == "../a.txt")
        #expect(FileManager.default.fileExists(atPath: target + s.source + "/emptydir"))

        // Restore of one file only.
        let one = s.scratch.file("one")
        #expect(try s.run(["restore", "latest", "--target", one, "--include", "\(s.source)/a.txt"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: one + s.source + "/a.txt"))
        #expect(!FileManager.default.fileExists(atPath: one + s.source + "/sub"))

        // dump to standard output.
        let dump = try s.run(["dump", "latest", "\(s.source)/sub/big.bin"])
        #expect(dump.status == 0, "dump: \(dump.stderr)")
        #expect(dump.stdout == pseudoRandom(3 << 20, seed: 11))

        // diff after a change.
        _ = try s.scratch.write(Array("changed\n".utf8), "src/a.txt")
        #expect(try s.run(["backup", "--host", "testhost", s.source]).status == 0)
        let diff = try s.run(["diff", (list[1]["id"] as? String)!, "latest"])
        #expect(diff.status == 0, "diff: \(diff.stderr)")
        #expect(diff.stdoutText.contains("M    \(s.source)/a.txt"))

        // forget: keep the last one; dry run changes nothing.
        let dry = try s.run(["forget", "--keep-last", "1", "--dry-run"])
        #expect(dry.status == 0, "forget: \(dry.stderr)")
        #expect(try s.snapshots().count == 3)
        #expect(try s.run(["forget", "--keep-last", "1"]).status == 0)
        #expect(try s.snapshots().count == 1)
        #expect(try s.run(["forget"]).status == Exit.usage)
        // Unknown snapshot: a usage error.
        #expect(try s.run(["ls", "deadbeef"]).status == Exit.usage)
    }

    @Test func streamBackupsAndFailingCommand() throws {
        let s = try Setup()
        let data = pseudoRandom(200_000, seed: 5)
        let r = try s.run(["backup", "--stdin", "--stdin-name", "db.sql"], stdin: data)
        #expect(r.status == 0, "stdin backup: \(r.stderr)")
        let dump = try s.run(["dump", "latest", "db.sql"])
        #expect(dump.stdout == data)

        let cmd = try s.run(["backup", "--stdin-name", "out.txt", "--stdin-from-command", "--", "/bin/sh", "-c", "echo from-command"])
        #expect(cmd.status == 0, "command backup: \(cmd.stderr)")
        #expect(try s.run(["dump", "latest", "/out.txt"]).stdoutText == "from-command\n")
        #expect(try s.snapshots().count == 2)

        let failing = try s.run(["backup", "--stdin-from-command", "--", "/bin/sh", "-c", "echo partial; exit 7"])
        #expect(failing.status != 0)
        #expect(failing.stderr.contains("failed"))
        #expect(try s.snapshots().count == 2)
    }
}
