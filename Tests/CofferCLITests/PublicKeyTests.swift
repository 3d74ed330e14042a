import Foundation
import Testing

/// Public-key recipients through the real binary: keygen, -r/-R/-i, mixing with symmetric keys,
/// wrong identities, protected identity files, RSA size limits, openssl and age-keygen keys, and
/// the recovery-key policy.
@Suite struct PublicKeys {
    static let types = ["x25519", "pq", "rsa-3072"]

    /// Makes NAME.pub and NAME.key with `coffer keygen --type`; returns the key id it printed.
    @discardableResult
    static func keyPair(_ dir: Scratch, _ type: String, _ name: String, extra: [String] = [],
                        environment: [String: String] = [:]) throws -> String {
        let result = try coffer(["keygen", "--type", type, "-o", dir.file(name)] + extra, environment: environment)
        #expect(result.status == 0, "keygen \(type): \(result.stderr)")
        return String(result.stderr.components(separatedBy: "key id: ").last?.prefix(16) ?? "")
    }

    @Test("keygen writes NAME.pub (0644) and NAME.key (0600) for every type, and never overwrites without --force")
    func keygenFiles() throws {
        let dir = Scratch()
        for type in Self.types {
            let id = try Self.keyPair(dir, type, type)
            #expect(id.count == 16)
            var st = stat()
            #expect(stat(dir.file("\(type).key"), &st) == 0 && st.st_mode & 0o777 == 0o600)
            #expect(stat(dir.file("\(type).pub"), &st) == 0 && st.st_mode & 0o777 == 0o644)
            let again = try coffer(["keygen", "--type", type, "-o", dir.file(type)])
            #expect(again.status == Exit.key)
            #expect(again.stderr.contains("exists"))
        }
        #expect(String(decoding: try dir.read("x25519.pub"), as: UTF8.self).hasPrefix("age1"))
        #expect(String(decoding: try dir.read("pq.pub"), as: UTF8.self).hasPrefix("age1pq1"))
        #expect(String(decoding: try dir.read("rsa-3072.pub"), as: UTF8.self).hasPrefix("-----BEGIN PUBLIC KEY-----"))
        #expect(String(decoding: try dir.read("rsa-3072.key"), as: UTF8.self).hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try coffer(["keygen", "--type", "x25519"]).status == Exit.usage)
        #expect(try coffer(["keygen", "--type", "dsa", "-o", dir.file("d")]).status == Exit.usage)
    }

    @Test("each recipient type alone round-trips, and a file for all of them plus a key file opens with each one alone")
    func eachTypeAndMixed() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(300_000), "in")
        for type in Self.types {
            try Self.keyPair(dir, type, type)
            #expect(try coffer(["encrypt", "-r", dir.file("\(type).pub"), "-o", dir.file("\(type).cof"), input]).status == 0)
            let out = try coffer(["decrypt", "-i", dir.file("\(type).key"), dir.file("\(type).cof")])
            #expect(out.status == 0, "\(type): \(out.stderr)")
            #expect(out.stdout == (try dir.read("in")))
        }
        let key = try dir.keygen("sym.key")
        let pq = String(decoding: try dir.read("pq.pub"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // -r takes a key string or a file; -R a recipients file.
        #expect(try coffer(["encrypt", "-r", dir.file("x25519.pub"), "-r", pq, "-R", dir.file("rsa-3072.pub"),
                            "--key-file", key, "-o", dir.file("all.cof"), input]).status == 0)
        let inspect = try coffer(["inspect", dir.file("all.cof")])
        #expect(inspect.stdoutText.contains("stanzas:     4"))
        for identity in Self.types.map({ ["-i", dir.file("\($0).key")] }) + [["--key-file", key]] {
            let out = try coffer(["decrypt"] + identity + [dir.file("all.cof")])
            #expect(out.status == 0, "\(identity): \(out.stderr)")
            #expect(out.stdout == (try dir.read("in")))
        }
    }

    @Test("a wrong identity is refused with exit 2, naming the key ids the file was made for and the one given")
    func wrongIdentity() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(1000), "in")
        let x = try Self.keyPair(dir, "x25519", "a")
        let pq = try Self.keyPair(dir, "pq", "b")
        let other = try Self.keyPair(dir, "x25519", "other")
        #expect(try coffer(["encrypt", "-r", dir.file("a.pub"), "-r", dir.file("b.pub"), "-o", dir.file("f.cof"), input]).status == 0)
        let result = try coffer(["decrypt", "-i", dir.file("other.key"), "-o", dir.file("out"), dir.file("f.cof")])
        #expect(result.status == Exit.key)
        #expect(result.stderr.contains("X25519 key \(x)"))
        #expect(result.stderr.contains("post-quantum key \(pq)"))
        #expect(result.stderr.contains("you gave: X25519 key \(other)"))
        #expect(dir.absent("out"))
        // Keys in the wrong place get a message saying so.
        let privateAsRecipient = try coffer(["encrypt", "-r", dir.file("a.key"), "-o", dir.file("g.cof"), input])
        #expect(privateAsRecipient.status == Exit.key)
        #expect(privateAsRecipient.stderr.contains("private key"))
        let publicAsIdentity = try coffer(["decrypt", "-i", dir.file("a.pub"), dir.file("f.cof")])
        #expect(publicAsIdentity.status == Exit.key)
        #expect(publicAsIdentity.stderr.contains("public key"))
        let garbage = try coffer(["encrypt", "-r", "age1notakey", "-o", dir.file("g.cof"), input])
        #expect(garbage.status == Exit.key)
        #expect(dir.absent("g.cof"))
    }

    @Test("a protected identity opens with its passphrase from a file or the environment; a wrong one is refused")
    func protectedIdentity() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(5000), "in")
        let pw = try dir.write(Array("correct horse\n".utf8), "pw")
        try Self.keyPair(dir, "x25519", "p", extra: ["--protect", "--work-factor", "10", "--identity-passphrase-file", pw])
        #expect(try dir.read("p.key").starts(with: Array("coffer/v2 ".utf8)))
        #expect(!String(decoding: try dir.read("p.key"), as: UTF8.self).contains("AGE-SECRET-KEY"))
        #expect(try coffer(["encrypt", "-r", dir.file("p.pub"), "-o", dir.file("f.cof"), input]).status == 0)
        let viaFile = try coffer(["decrypt", "-i", dir.file("p.key"), "--identity-passphrase-file", pw, dir.file("f.cof")])
        #expect(viaFile.status == 0, "\(viaFile.stderr)")
        #expect(viaFile.stdout == (try dir.read("in")))
        let viaEnv = try coffer(["decrypt", "-i", dir.file("p.key"), dir.file("f.cof")],
                                environment: ["COFFER_IDENTITY_PASSPHRASE": "correct horse"])
        #expect(viaEnv.stdout == (try dir.read("in")))
        let wrong = try coffer(["decrypt", "-i", dir.file("p.key"), "-o", dir.file("out"), dir.file("f.cof")],
                               environment: ["COFFER_IDENTITY_PASSPHRASE": "battery staple"])
        #expect(wrong.status == Exit.key)
        #expect(wrong.stderr.contains("wrong passphrase for the protected key file"))
        #expect(dir.absent("out"))
        let none = try coffer(["decrypt", "-i", dir.file("p.key"), dir.file("f.cof")])
        #expect(none.status == Exit.key)
        #expect(none.stderr.contains("COFFER_IDENTITY_PASSPHRASE"))
    }

    static func openssl(_ arguments: [String]) throws -> RunResult {
        try spawn(["/usr/bin/openssl"] + arguments, environment: ProcessInfo.processInfo.environment, stdin: nil)
    }

    @Test("RSA keys from openssl genpkey work (PKCS#8 and SubjectPublicKeyInfo PEM); a 1024-bit key is refused")
    func opensslKeys() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(10_000), "in")
        for bits in [2048, 1024] {
            let key = dir.file("rsa\(bits).key"), pub = dir.file("rsa\(bits).pub")
            #expect(try Self.openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:\(bits)", "-out", key]).status == 0)
            #expect(try Self.openssl(["pkey", "-in", key, "-pubout", "-out", pub]).status == 0)
            chmod(key, 0o600)
        }
        #expect(try coffer(["encrypt", "-r", dir.file("rsa2048.pub"), "-o", dir.file("f.cof"), input]).status == 0)
        let out = try coffer(["decrypt", "-i", dir.file("rsa2048.key"), dir.file("f.cof")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == (try dir.read("in")))
        let small = try coffer(["encrypt", "-r", dir.file("rsa1024.pub"), "-o", dir.file("g.cof"), input])
        #expect(small.status == Exit.key)
        #expect(small.stderr.contains("1024 bits is too small"))
        #expect(dir.absent("g.cof"))
        let smallIdentity = try coffer(["decrypt", "-i", dir.file("rsa1024.key"), dir.file("f.cof")])
        #expect(smallIdentity.status == Exit.key)
        #expect(smallIdentity.stderr.contains("too small"))
    }

    @Test("a file encrypted to an age-keygen key decrypts with that age identity file (several keys, comments)")
    func ageKeygenIdentity() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(70_000), "in")
        for name in ["one", "two"] {
            #expect(try spawn(["/usr/bin/age-keygen", "-o", dir.file("\(name).txt")], environment: [:], stdin: nil).status == 0)
        }
        // An identity file holding both keys, as age allows.
        let both = try dir.read("one.txt") + Array("\n# the second key\n".utf8) + (try dir.read("two.txt"))
        _ = try dir.write(both, "both.txt")
        let recipient = String(decoding: try dir.read("two.txt"), as: UTF8.self)
            .components(separatedBy: "# public key: ")[1].prefix(while: { !$0.isNewline })
        #expect(try coffer(["encrypt", "-r", String(recipient), "-o", dir.file("f.cof"), input]).status == 0)
        let out = try coffer(["decrypt", "-i", dir.file("both.txt"), dir.file("f.cof")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == (try dir.read("in")))
        #expect(try coffer(["decrypt", "-i", dir.file("one.txt"), dir.file("f.cof")]).status == Exit.key)
    }

    @Test("a stanza removed, duplicated or swapped by hand is caught by the header MAC")
    func stanzaEdits() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(2000), "in")
        try Self.keyPair(dir, "x25519", "a")
        try Self.keyPair(dir, "x25519", "b")
        #expect(try coffer(["encrypt", "-r", dir.file("a.pub"), "-r", dir.file("b.pub"), "-o", dir.file("f.cof"), input]).status == 0)
        let bytes = try dir.read("f.cof")
        let text = String(decoding: bytes, as: UTF8.self)
        let macLine = text.range(of: "\n--- ")!.lowerBound
        let head = String(text[..<macLine])
        let firstStanza = head.range(of: "\n-> ")!.lowerBound
        let secondStanza = head.range(of: "\n-> ", range: head.index(after: firstStanza)..<head.endIndex)!.lowerBound
        let preamble = head[..<firstStanza], a = head[firstStanza..<secondStanza], b = head[secondStanza...]
        let rest = Array(bytes[head.utf8.count...])
        let edits: [String: String] = ["removed": String(preamble + a), "duplicated": String(preamble + a + a + b),
                                       "swapped": String(preamble + b + a)]
        for (name, edited) in edits {
            _ = try dir.write(Array(edited.utf8) + rest, "\(name).cof")
            let result = try coffer(["decrypt", "-i", dir.file("a.key"), "-o", dir.file("out"), dir.file("\(name).cof")])
            #expect(result.status == Exit.integrity, "\(name): \(result.stderr)")
            #expect(dir.absent("out"))
        }
    }

    @Test("recovery policy: refused without a recovery key; with one, the recovery identity alone opens every file")
    func recoveryPolicy() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(4000), "in")
        try Self.keyPair(dir, "x25519", "host")
        try Self.keyPair(dir, "pq", "recovery")
        let refused = try coffer(["encrypt", "-r", dir.file("host.pub"), "--require-recovery", "-o", dir.file("f.cof"), input])
        #expect(refused.status == Exit.key)
        #expect(refused.stderr.contains("no recovery key is set"))
        #expect(dir.absent("f.cof"))
        let viaEnv = try coffer(["encrypt", "-r", dir.file("host.pub"), "-o", dir.file("f.cof"), input],
                                environment: ["COFFER_REQUIRE_RECOVERY": "1"])
        #expect(viaEnv.status == Exit.key)
        let ok = try coffer(["encrypt", "-r", dir.file("host.pub"), "-o", dir.file("f.cof"), input],
                            environment: ["COFFER_REQUIRE_RECOVERY": "1", "COFFER_RECOVERY_RECIPIENT": dir.file("recovery.pub")])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try coffer(["decrypt", "-i", dir.file("recovery.key"), dir.file("f.cof")]).stdout == (try dir.read("in")))
        #expect(try coffer(["decrypt", "-i", dir.file("host.key"), dir.file("f.cof")]).stdout == (try dir.read("in")))
        // The recovery key must be one public key, not a private key or a symmetric key.
        let privateRecovery = try coffer(["encrypt", "-r", dir.file("host.pub"), "--recovery-recipient", dir.file("recovery.key"),
                                          "-o", dir.file("g.cof"), input])
        #expect(privateRecovery.status == Exit.key)
        #expect(dir.absent("g.cof"))
    }
}
