import Crypto
import Foundation
import Testing

/// `coffer rewrap`: keys added and removed in place, payload bytes untouched, interrupted rewraps,
/// version-1 conversion, the recovery policy, and the refusals.
@Suite struct RewrapCommand {
    /// Bytes before the payload nonce of a version-2 file: the lead line and both slots.
    static func headerLength(_ bytes: [UInt8]) -> Int {
        let lead = String(decoding: bytes[..<bytes.firstIndex(of: 0x0A)!], as: UTF8.self)
        return lead.utf8.count + 1 + 2 * Int(lead.split(separator: " ")[1])!
    }

    static func payloadDigest(_ bytes: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: bytes[headerLength(bytes)...]))
    }

    static func keyIDs(_ dir: Scratch, _ file: String) throws -> [String] {
        let json = try coffer(["inspect", "--json", dir.file(file)])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout)) as! [String: Any]
        return (object["stanzas"] as! [[String: Any]]).compactMap { $0["key_id"] as? String }
    }

    @Test("add and remove keys: the payload bytes and the file size stay the same; the removed key no longer opens it")
    func addAndRemove() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(2_500_000), "in")
        let old = try PublicKeys.keyPair(dir, "x25519", "old")
        try PublicKeys.keyPair(dir, "pq", "new")
        #expect(try coffer(["encrypt", "-r", dir.file("old.pub"), "-o", dir.file("f.cof"), input]).status == 0)
        let before = try dir.read("f.cof")
        let added = try coffer(["rewrap", "-i", dir.file("old.key"), "--add-recipient", dir.file("new.pub"), dir.file("f.cof")])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stderr.contains("+1, -0, generation 2"))
        let middle = try dir.read("f.cof")
        #expect(middle.count == before.count)
        #expect(Self.payloadDigest(middle) == Self.payloadDigest(before))
        #expect(try coffer(["decrypt", "-i", dir.file("new.key"), dir.file("f.cof")]).stdout == (try dir.read("in")))
        #expect(try coffer(["inspect", dir.file("f.cof")]).stdoutText.contains("in use: slot 2, generation 2"))

        let removed = try coffer(["rewrap", "-i", dir.file("new.key"), "--remove", old, dir.file("f.cof")])
        #expect(removed.status == 0, "\(removed.stderr)")
        let after = try dir.read("f.cof")
        #expect(after.count == before.count)
        #expect(Self.payloadDigest(after) == Self.payloadDigest(before))
        let refused = try coffer(["decrypt", "-i", dir.file("old.key"), "-o", dir.file("out"), dir.file("f.cof")])
        #expect(refused.status == Exit.key)
        #expect(dir.absent("out"))
        // The old slot was cleared, not just superseded: its stanza is nowhere in the file.
        #expect(!String(decoding: after, as: UTF8.self).contains(old))
        #expect(try coffer(["verify", "-i", dir.file("new.key"), dir.file("f.cof")]).status == Exit.ok)
    }

    @Test("a version-1 file is converted once: new header, payload bytes copied unchanged")
    func convertsVersion1() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(300_000), "in")
        let key = try dir.keygen("a.key")
        let second = try dir.keygen("b.key")
        #expect(try coffer(["encrypt", "--key-file", key, "--file-version", "1", "-o", dir.file("f.cof"), input]).status == 0)
        let before = try dir.read("f.cof")
        let result = try coffer(["rewrap", "--key-file", key, "--add-key-file", second, dir.file("f.cof")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("converted to version 2"))
        let after = try dir.read("f.cof")
        let v1Header = String(decoding: before, as: UTF8.self).range(of: "\n--- ")!.upperBound
        let v1HeaderLength = String(decoding: before, as: UTF8.self).utf8.distance(from: String(decoding: before, as: UTF8.self).startIndex, to: v1Header) + 44
        #expect(Array(after[Self.headerLength(after)...]) == Array(before[v1HeaderLength...]))
        #expect(try coffer(["decrypt", "--key-file", second, dir.file("f.cof")]).stdout == (try dir.read("in")))
    }

    @Test("refusals: unknown key id, removing the last key, a header that no longer fits; the file is left as it was")
    func refusals() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(5000), "in")
        let key = try dir.keygen("a.key")
        try PublicKeys.keyPair(dir, "pq", "pq")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("f.cof"), input]).status == 0)
        let before = try dir.read("f.cof")
        let unknown = try coffer(["rewrap", "--key-file", key, "--remove", "0123456789abcdef", dir.file("f.cof")])
        #expect(unknown.status == Exit.usage)
        #expect(unknown.stderr.contains("no stanza of this file has that key id"))
        let last = try coffer(["rewrap", "--key-file", key, "--remove", try Self.keyIDs(dir, "f.cof")[0], dir.file("f.cof")])
        #expect(last.status == Exit.key)
        #expect(last.stderr.contains("no stanza"))
        // A key-file header gets a 2 KiB slot; a post-quantum stanza takes about 1.6 KB: the second does not fit.
        #expect(try coffer(["rewrap", "--key-file", key, "--add-recipient", dir.file("pq.pub"), dir.file("f.cof")]).status == 0)
        try PublicKeys.keyPair(dir, "pq", "pq2")
        let before2 = try dir.read("f.cof")
        let full = try coffer(["rewrap", "--key-file", key, "--add-recipient", dir.file("pq2.pub"), dir.file("f.cof")])
        #expect(full.status == Exit.usage)
        #expect(full.stderr.contains("reencrypt"))
        #expect(try dir.read("f.cof") == before2)
        #expect(Self.payloadDigest(before2) == Self.payloadDigest(before))
        #expect(try coffer(["rewrap", "--key-file", key, dir.file("f.cof")]).status == Exit.usage)
        let wrongKey = try coffer(["rewrap", "--key-file", try dir.keygen("c.key"), "--add-key-file", key, dir.file("f.cof")])
        #expect(wrongKey.status == Exit.key)
        #expect(try dir.read("f.cof") == before2)
    }

    @Test("an interrupted rewrap: both slots valid, or the new slot torn; the file opens, and rerunning repairs it")
    func interrupted() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(10_000), "in")
        let a = try dir.keygen("a.key")
        let b = try dir.keygen("b.key")
        #expect(try coffer(["encrypt", "--key-file", a, "-o", dir.file("f.cof"), input]).status == 0)
        let before = try dir.read("f.cof")
        #expect(try coffer(["rewrap", "--key-file", a, "--add-key-file", b, dir.file("f.cof")]).status == 0)
        let after = try dir.read("f.cof")
        let lead = before.firstIndex(of: 0x0A)! + 1
        let size = (Self.headerLength(before) - lead) / 2
        // Crash between the two flushes: new slot 2 written, old slot 1 not yet cleared.
        let both = Array(before[..<(lead + size)]) + Array(after[(lead + size)...])
        _ = try dir.write(both, "both.cof")
        #expect(try coffer(["inspect", dir.file("both.cof")]).stdoutText.contains("older generation"))
        #expect(try coffer(["decrypt", "--key-file", b, dir.file("both.cof")]).stdout == (try dir.read("in")))
        #expect(try coffer(["decrypt", "--key-file", a, dir.file("both.cof")]).stdout == (try dir.read("in")))
        // Crash while writing slot 2: half of it written.
        var torn = before
        for i in (lead + size)..<(lead + size + 60) { torn[i] = after[i] }
        _ = try dir.write(torn, "torn.cof")
        let decrypted = try coffer(["decrypt", "--key-file", a, dir.file("torn.cof")])
        #expect(decrypted.status == Exit.ok)
        #expect(decrypted.stdout == (try dir.read("in")))
        #expect(decrypted.stderr.contains("slot 2 is damaged"))
        #expect(try coffer(["verify", "--key-file", a, dir.file("torn.cof")]).status == Exit.integrity)
        #expect(try coffer(["decrypt", "--key-file", b, dir.file("torn.cof")]).status == Exit.key)
        // Running the rewrap again finishes the job.
        #expect(try coffer(["rewrap", "--key-file", a, "--add-key-file", b, dir.file("torn.cof")]).status == 0)
        #expect(try coffer(["verify", "--key-file", b, dir.file("torn.cof")]).status == Exit.ok)
        #expect(!(try coffer(["inspect", dir.file("torn.cof")]).stdoutText.contains("damaged")))
    }

    @Test("recovery policy: rewrap adds the recovery key where missing and refuses to remove it")
    func recoveryPolicy() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(3000), "in")
        let key = try dir.keygen("a.key")
        let recovery = try PublicKeys.keyPair(dir, "x25519", "recovery")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("f.cof"), input]).status == 0)
        let env = ["COFFER_REQUIRE_RECOVERY": "1", "COFFER_RECOVERY_RECIPIENT": dir.file("recovery.pub")]
        let added = try coffer(["rewrap", "--key-file", key, dir.file("f.cof")], environment: env)
        #expect(added.status == 0, "\(added.stderr)")
        #expect(try coffer(["decrypt", "-i", dir.file("recovery.key"), dir.file("f.cof")]).stdout == (try dir.read("in")))
        let removal = try coffer(["rewrap", "--key-file", key, "--remove", recovery, dir.file("f.cof")], environment: env)
        #expect(removal.status == Exit.key)
        #expect(removal.stderr.contains("recovery"))
        #expect(try coffer(["decrypt", "-i", dir.file("recovery.key"), dir.file("f.cof")]).status == Exit.ok)
    }

    @Test("--recursive rewraps every NAME.cof of a run; a passphrase is added to all of them")
    func recursive() throws {
        let dir = Scratch()
        let key = try dir.keygen("k.key")
        for name in ["a", "sub/b", "sub/c"] { _ = try dir.write(pseudoRandom(1000 + name.count), "data/\(name)") }
        #expect(try coffer(["encrypt", "--key-file", key, "--recursive", "--remove-original", dir.file("data")]).status == 0)
        let pw = try dir.write(Array("new pass".utf8), "pw")
        let result = try coffer(["rewrap", "--key-file", key, "--add-passphrase-file", pw, "--work-factor", "10",
                                 "--recursive", dir.file("data")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 3)
        let decrypted = try coffer(["decrypt", "--passphrase-file", pw, "--recursive", dir.file("data")])
        #expect(decrypted.status == 0, "\(decrypted.stderr)")
        #expect(try dir.read("data/sub/b") == pseudoRandom(1000 + 5))
    }

    @Test("reencrypt: a new file key and new keys; the old key and the old file key no longer open it; a wrong key leaves the file")
    func reencrypt() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(1_500_000), "in")
        let old = try dir.keygen("old.key")
        try PublicKeys.keyPair(dir, "x25519", "new")
        #expect(try coffer(["encrypt", "--key-file", old, "--chunk-size", "64K", "-o", dir.file("f.cof"), input]).status == 0)
        let before = try dir.read("f.cof")
        let wrong = try coffer(["reencrypt", "--key-file", try dir.keygen("other.key"), "-r", dir.file("new.pub"), dir.file("f.cof")])
        #expect(wrong.status == Exit.key)
        #expect(try dir.read("f.cof") == before)
        let result = try coffer(["reencrypt", "--key-file", old, "-r", dir.file("new.pub"), dir.file("f.cof")])
        #expect(result.status == 0, "\(result.stderr)")
        let after = try dir.read("f.cof")
        #expect(Self.payloadDigest(after) != Self.payloadDigest(before))
        #expect(try coffer(["decrypt", "-i", dir.file("new.key"), dir.file("f.cof")]).stdout == (try dir.read("in")))
        #expect(try coffer(["decrypt", "--key-file", old, dir.file("f.cof")]).status == Exit.key)
        #expect(try coffer(["inspect", dir.file("f.cof")]).stdoutText.contains("65536"))
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })
        let none = try coffer(["reencrypt", "-i", dir.file("new.key"), dir.file("f.cof")])
        #expect(none.status == Exit.key)
        #expect(none.stderr.contains("no new key given"))
    }
}
