import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `coffer init`, `check`, `prune`, `key …` through the real binary.
@Suite struct RepositoryCoreCLI {
    struct Setup {
        let dir = Scratch()
        var repo: String { dir.file("repo") }
        var key: String { dir.file("k.key") }

        init() throws {
            #expect(try coffer(["keygen", "--symmetric", "-o", dir.file("k.key")]).status == Exit.ok)
            let r = try coffer(["init", "--repo", dir.file("repo"), "--key-file", dir.file("k.key"), "--json"])
            #expect(r.status == Exit.ok, "\(r.stderr)")
        }

        func run(_ args: [String], key: String? = nil, env: [String: String] = [:]) throws -> RunResult {
            try coffer(args + ["--repo", repo, "--key-file", key ?? self.key], environment: env)
        }
    }

    func json(_ r: RunResult) throws -> Any { try JSONSerialization.jsonObject(with: Data(r.stdout)) }

    @Test("init writes a repository and prints its id; a second init there is refused; no repository is a usage error")
    func initRepository() throws {
        let dir = Scratch()
        #expect(try coffer(["keygen", "--symmetric", "-o", dir.file("k.key")]).status == Exit.ok)
        let r = try coffer(["init", "--repo", dir.file("repo"), "--key-file", dir.file("k.key"), "--json"])
        #expect(r.status == Exit.ok, "\(r.stderr)")
        let out = try json(r) as! [String: Any]
        #expect((out["id"] as? String)?.count == 64)
        #expect(FileManager.default.fileExists(atPath: dir.file("repo/config/config")))
        let again = try coffer(["init", "--repo", dir.file("repo"), "--key-file", dir.file("k.key")])
        #expect(again.status == Exit.usage, "\(again.stderr)")
        #expect(try coffer(["check", "--key-file", dir.file("k.key")]).status == Exit.usage)
        // COFFER_REPOSITORY works in place of --repo.
        let viaEnv = try coffer(["check", "--key-file", dir.file("k.key")], environment: ["COFFER_REPOSITORY": dir.file("repo")])
        #expect(viaEnv.status == Exit.ok, "\(viaEnv.stderr)")
    }

    @Test("check passes on a new repository (text and JSON), parses --read-data-subset, and fails (3) naming a damaged object")
    func check() throws {
        let s = try Setup()
        let r = try s.run(["check", "--read-data"])
        #expect(r.status == Exit.ok, "\(r.stderr)")
        #expect(r.stdoutText.contains("no errors were found"))
        let j = try s.run(["check", "--json", "--read-data-subset", "10%"])
        #expect(j.status == Exit.ok)
        #expect(((try json(j) as! [String: Any])["errors"] as? [Any])?.isEmpty == true)
        #expect(try s.run(["check", "--read-data-subset", "2/3"]).status == Exit.ok)
        #expect(try s.run(["check", "--read-data-subset", "0/3"]).status == Exit.usage)
        #expect(try s.run(["check", "--read-data-subset", "150%"]).status == Exit.usage)
        #expect(try s.run(["check", "--read-data", "--read-data-subset", "1/2"]).status == Exit.usage)
        // A damaged data-key object is named.
        let dataKey = s.dir.file("repo/keys/data-1")
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dataKey)))
        bytes[bytes.count - 3] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: dataKey))
        let damaged = try s.run(["check"])
        #expect(damaged.status == Exit.integrity)
        #expect(damaged.stderr.contains("keys/data-1") || damaged.stdoutText.contains("keys/data-1"), "\(damaged.stderr)")
    }

    @Test("the wrong key is a key error (2); a flipped byte in the key object is an integrity error (3) naming it")
    func wrongKeyAndTamperedKeyObject() throws {
        let s = try Setup()
        #expect(try coffer(["keygen", "--symmetric", "-o", s.dir.file("other.key")]).status == Exit.ok)
        let wrong = try s.run(["check"], key: s.dir.file("other.key"))
        #expect(wrong.status == Exit.key, "\(wrong.stderr)")
        let keyObject = try FileManager.default.contentsOfDirectory(atPath: s.dir.file("repo/keys")).first { $0.count == 64 }!
        let path = s.dir.file("repo/keys/\(keyObject)")
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 3] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let r = try s.run(["check"])
        #expect(r.status == Exit.integrity, "\(r.stderr)")
        #expect(r.stderr.contains("keys/\(keyObject)"))
    }

    @Test("key add/list/remove/rotate: a new key opens the repository; the current and the last key cannot be removed")
    func keys() throws {
        let s = try Setup()
        #expect(try coffer(["keygen", "--symmetric", "-o", s.dir.file("second.key")]).status == Exit.ok)
        let added = try s.run(["key", "add", "--new-key-file", s.dir.file("second.key"), "--json"])
        #expect(added.status == Exit.ok, "\(added.stderr)")
        let newID = (try json(added) as! [String: Any])["id"] as! String
        let list = try s.run(["key", "list", "--json"], key: s.dir.file("second.key"))
        #expect(list.status == Exit.ok, "\(list.stderr)")
        let all = try json(list) as! [[String: Any]]
        #expect(all.filter { $0["kind"] as? String == "data key" }.map { $0["id"] as? String } == ["data-1"])
        let keys = all.filter { $0["kind"] as? String == "key object" }
        #expect(keys.count == 2)
        #expect(keys.first { $0["current"] as? Bool == true }?["id"] as? String == newID)
        let firstID = keys.first { $0["current"] as? Bool == false }!["id"] as! String
        #expect(try s.run(["key", "remove", newID], key: s.dir.file("second.key")).status == Exit.usage)
        let removed = try s.run(["key", "remove", String(firstID.prefix(10))], key: s.dir.file("second.key"))
        #expect(removed.status == Exit.ok, "\(removed.stderr)")
        #expect(try s.run(["check"]).status == Exit.key, "the first key no longer opens it")
        let rotated = try s.run(["key", "rotate", "--json"], key: s.dir.file("second.key"))
        #expect(rotated.status == Exit.ok, "\(rotated.stderr)")
        #expect((try json(rotated) as! [String: Any])["generation"] as? Int == 2)
        #expect(FileManager.default.fileExists(atPath: s.dir.file("repo/keys/data-2")))
        #expect(try s.run(["check", "--read-data"], key: s.dir.file("second.key")).status == Exit.ok)
    }

    @Test("key add --writer writes a 0600 writer key, never over a file; reading commands refuse --writer-key")
    func writerKey() throws {
        let s = try Setup()
        let path = s.dir.file("writer.key")
        let r = try s.run(["key", "add", "--writer", "-o", path])
        #expect(r.status == Exit.ok, "\(r.stderr)")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
        #expect(text.contains("\"type\":\"coffer-repository-writer-key\""))
        #expect(!text.contains("ring_key"), "a writer key holds no key that decrypts data")
        #expect(try s.run(["key", "add", "--writer", "-o", path]).status != Exit.ok, "never overwritten")
        for command in [["check"], ["prune"], ["key", "list"], ["key", "rotate"]] {
            let refused = try coffer(command + ["--repo", s.repo, "--writer-key", path])
            #expect(refused.status == Exit.usage, "\(command): \(refused.stderr)")
            #expect(refused.stderr.contains("writer key"))
        }
    }

    @Test("prune --dry-run and prune on a repository without snapshots remove nothing and report in JSON")
    func prune() throws {
        let s = try Setup()
        let dry = try s.run(["prune", "--dry-run", "--json"])
        #expect(dry.status == Exit.ok, "\(dry.stderr)")
        let report = try json(dry) as! [String: Any]
        #expect(report["dry_run"] as? Bool == true || report["dryRun"] as? Bool == true)
        let real = try s.run(["prune"])
        #expect(real.status == Exit.ok, "\(real.stderr)")
        #expect(real.stdoutText.contains("removed 0 blobs"))
    }

    @Test("backup --compression: off stores chunks as they are, fast, auto and max shrink text; every setting restores the same bytes; a bad value is a usage error")
    func compressionOption() throws {
        let text = (0..<40_000).map { "INSERT INTO orders VALUES (\($0), 'customer-\($0 % 97)', \($0 * 13 % 1000));\n" }.joined()
        var stored: [String: Int] = [:]
        for mode in ["off", "fast", "auto", "max"] {
            let s = try Setup()
            let source = try s.dir.write(Array(text.utf8), "dump.sql")
            let r = try s.run(["backup", "--compression", mode, source])
            #expect(r.status == Exit.ok, "\(mode): \(r.stderr)")
            let data = s.dir.file("repo/data")
            let files = (FileManager.default.enumerator(atPath: data)?.allObjects as? [String] ?? []).map { "\(data)/\($0)" }
            stored[mode] = files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
            let restored = try s.run(["restore", "latest", "--target", s.dir.file("out")])
            #expect(restored.status == Exit.ok, "\(mode): \(restored.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: s.dir.file("out") + source)) == Data(text.utf8), "\(mode)")
        }
        let off = try #require(stored["off"]), fast = try #require(stored["fast"])
        let auto = try #require(stored["auto"]), max = try #require(stored["max"])
        #expect(off > text.utf8.count, "off stores the text whole: \(off)")
        #expect(fast * 3 < off && auto * 3 < off && max * 3 < off, "fast \(fast), auto \(auto), max \(max), off \(off)")
        let s = try Setup()
        let bad = try s.run(["backup", "--compression", "zip", s.dir.file("repo/config")])
        #expect(bad.status == Exit.usage, "\(bad.stderr)")
    }
}
