import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Snapshot signatures through the real binary: `backup --sign`, `snapshots` (signed_by,
/// verified_by), `--verify-signer` on snapshots/ls/restore/dump/diff; unsigned, wrong signer and
/// tampered snapshots refused.
@Suite struct RepoSignatureTests {
    struct Setup {
        let scratch = Scratch()
        let key: String
        let repo: String
        let source: String
        let producerID: String

        init() throws {
            key = try scratch.keygen()
            repo = scratch.file("repo")
            source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
            _ = try scratch.write(Array("signed content\n".utf8), "src/a.txt")
            _ = try scratch.write(pseudoRandom(200_000, seed: 3), "src/b.bin")
            producerID = try PublicKeys.keyPair(scratch, "ed25519", "producer")
            try PublicKeys.keyPair(scratch, "ed25519", "stranger")
            #expect(try run(["init"]).status == Exit.ok)
        }

        @discardableResult
        func run(_ args: [String]) throws -> RunResult {
            try coffer([args[0], "--repo", repo, "--key-file", key] + args.dropFirst())
        }

        func snapshotIDs(_ r: RunResult) -> [String] {
            (((try? JSONSerialization.jsonObject(with: Data(r.stdout))) as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        }

        func json(_ r: RunResult) -> [[String: Any]] {
            ((try? JSONSerialization.jsonObject(with: Data(r.stdout))) as? [[String: Any]]) ?? []
        }

        /// The snapshot id a `backup --json` printed.
        func backup(_ extra: [String]) throws -> String {
            let r = try run(["backup", "--json"] + extra + [source])
            #expect(r.status == Exit.ok, "backup \(extra): \(r.stderr)")
            return (((try? JSONSerialization.jsonObject(with: Data(r.stdout))) as? [String: Any])?["id"] as? String) ?? ""
        }
    }

    @Test("backup --sign: snapshots shows signed_by; --verify-signer accepts it on snapshots, ls, restore, dump and diff")
    func signedSnapshot() throws {
        let s = try Setup()
        let id = try s.backup(["--sign", s.scratch.file("producer.key")])
        let list = try s.run(["snapshots", "--json"])
        #expect(list.status == Exit.ok, "\(list.stderr)")
        let entry = try #require(s.json(list).first)
        #expect(entry["signed_by"] as? [String] == ["ed25519 \(s.producerID)"])
        #expect(entry["verified_by"] == nil, "nothing is verified without --verify-signer")

        let verified = try s.run(["snapshots", "--json", "--verify-signer", s.scratch.file("producer.pub")])
        #expect(verified.status == Exit.ok, "\(verified.stderr)")
        #expect(s.json(verified).first?["verified_by"] as? String == "ed25519 \(s.producerID)")

        let pub = s.scratch.file("producer.pub")
        #expect(try s.run(["ls", "--verify-signer", pub, "latest"]).status == Exit.ok)
        let target = s.scratch.file("out")
        let restore = try s.run(["restore", "--verify-signer", pub, "--target", target, String(id.prefix(8))])
        #expect(restore.status == Exit.ok, "\(restore.stderr)")
        #expect(FileManager.default.contents(atPath: target + s.source + "/a.txt") == Data("signed content\n".utf8))
        let dump = try s.run(["dump", "--verify-signer", pub, "latest", s.source + "/b.bin"])
        #expect(dump.status == Exit.ok && dump.stdout == pseudoRandom(200_000, seed: 3))
        #expect(try s.run(["diff", "--verify-signer", pub, id, "latest"]).status == Exit.ok)
        // chunk-tags digests are not used for snapshots.
        #expect(try s.run(["backup", "--sign", s.scratch.file("producer.key"), "--signature-digest", "chunk-tags", s.source]).status == Exit.usage)
    }

    @Test("unsigned and wrongly signed snapshots are refused with --verify-signer (exit 2); 'latest' is the newest signed one")
    func unsignedAndWrongSigner() throws {
        let s = try Setup()
        let signed = try s.backup(["--sign", s.scratch.file("producer.key")])
        let unsigned = try s.backup([])
        let other = try s.backup(["--sign", s.scratch.file("stranger.key")])
        let pub = s.scratch.file("producer.pub")

        let list = try s.run(["snapshots", "--json", "--verify-signer", pub])
        #expect(list.status == Exit.key, "refused snapshots fail the listing: \(list.stderr)")
        #expect(s.snapshotIDs(list) == [signed], "only accepted snapshots are listed")
        #expect(list.stderr.contains(String(unsigned.prefix(8))) && list.stderr.contains("is not signed"))
        #expect(list.stderr.contains(String(other.prefix(8))) && list.stderr.contains("not by an accepted signer"))

        for (id, what) in [(unsigned, "unsigned"), (other, "other signer")] {
            let r = try s.run(["restore", "--verify-signer", pub, "--target", s.scratch.file("never-\(id.prefix(4))"), id])
            #expect(r.status == Exit.key, "\(what): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: s.scratch.file("never-\(id.prefix(4))")), "\(what): nothing restored")
            #expect(try s.run(["dump", "--verify-signer", pub, id, s.source + "/a.txt"]).status == Exit.key)
            #expect(try s.run(["ls", "--verify-signer", pub, id]).status == Exit.key)
        }
        // The stranger's own key accepts its snapshot; the wrong public key does not.
        #expect(try s.run(["ls", "--verify-signer", s.scratch.file("stranger.pub"), other]).status == Exit.ok)
        #expect(try s.run(["ls", "--verify-signer", s.scratch.file("stranger.pub"), signed]).status == Exit.key)

        // latest: the newest accepted snapshot, with a warning naming the newer refused ones.
        let ls = try s.run(["ls", "--json", "--verify-signer", pub, "latest"])
        #expect(ls.status == Exit.ok, "\(ls.stderr)")
        #expect(ls.stdoutText.contains("\"id\":\"\(signed)\""))
        #expect(ls.stderr.contains("skipped") && ls.stderr.contains(String(other.prefix(8))))
        // Without --verify-signer, everything is used as before.
        #expect(try s.run(["ls", unsigned]).status == Exit.ok)
    }

    @Test("a signature changed in the stored snapshot object is refused as invalid (exit 3); a writer key can sign")
    func tamperedSignatureAndWriter() throws {
        let s = try Setup()
        let writer = s.scratch.file("writer.key")
        let made = try coffer(["key", "add", "--repo", s.repo, "--key-file", s.key, "--writer", "-o", writer])
        #expect(made.status == Exit.ok, "\(made.stderr)")
        let w = try coffer(["backup", "--repo", s.repo, "--writer-key", writer, "--sign", s.scratch.file("producer.key"), "--json", s.source])
        #expect(w.status == Exit.ok, "writer backup: \(w.stderr)")
        let id = (((try? JSONSerialization.jsonObject(with: Data(w.stdout))) as? [String: Any])?["id"] as? String) ?? ""
        let pub = s.scratch.file("producer.pub")
        #expect(try s.run(["ls", "--verify-signer", pub, id]).status == Exit.ok)

        let path = s.repo + "/snapshots/" + id
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 2 * 72 + 8 + 10] ^= 0x01  // first slot's signature
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let restore = try s.run(["restore", "--verify-signer", pub, "--target", s.scratch.file("never"), id])
        #expect(restore.status == Exit.integrity, "\(restore.stderr)")
        #expect(restore.stderr.contains("altered after signing"))
        #expect(!FileManager.default.fileExists(atPath: s.scratch.file("never")))
        #expect(try s.run(["snapshots", "--verify-signer", pub]).status == Exit.integrity)
        // Without a required signer the (authenticated) snapshot still reads.
        #expect(try s.run(["ls", id]).status == Exit.ok)
    }
}
