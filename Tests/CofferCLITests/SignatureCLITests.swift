import Foundation
import Testing

/// Producer signatures through the real binary: keygen --type ed25519, encrypt --sign,
/// decrypt|verify --signed-by, inspect, rewrap --sign, reencrypt, directories, and refusals.
@Suite struct SignatureCommands {
    /// A key file, a producer signing pair and another signer's pair in a new scratch directory.
    static func setUp() throws -> (Scratch, key: String) {
        let dir = Scratch()
        let key = try dir.keygen("k.key")
        try PublicKeys.keyPair(dir, "ed25519", "producer")
        try PublicKeys.keyPair(dir, "ed25519", "stranger")
        return (dir, key)
    }

    @Test("keygen --type ed25519 writes PEM keys that openssl reads, and an openssl-made Ed25519 key signs")
    func keys() throws {
        let (dir, key) = try Self.setUp()
        #expect(String(decoding: try dir.read("producer.pub"), as: UTF8.self).hasPrefix("-----BEGIN PUBLIC KEY-----"))
        let derived = try spawn(["/usr/bin/openssl", "pkey", "-in", dir.file("producer.key"), "-pubout"],
                                environment: [:], stdin: nil)
        #expect(derived.status == 0, "\(derived.stderr)")
        #expect(derived.stdout == (try dir.read("producer.pub")))
        #expect(try spawn(["/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir.file("ossl.key")],
                          environment: [:], stdin: nil).status == 0)
        let pub = try spawn(["/usr/bin/openssl", "pkey", "-in", dir.file("ossl.key"), "-pubout", "-out", dir.file("ossl.pub")],
                            environment: [:], stdin: nil)
        #expect(pub.status == 0)
        let input = try dir.write(pseudoRandom(5000), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("ossl.key"), "-o", dir.file("o.cof"), input]).status == 0)
        let out = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("ossl.pub"), dir.file("o.cof")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == (try dir.read("in")))
    }

    @Test("a signed file round-trips from a file and a pipe; inspect names the signer; verify checks with or without a key")
    func roundTrip() throws {
        let (dir, key) = try Self.setUp()
        let plaintext = pseudoRandom(700_000)
        let input = try dir.write(plaintext, "in")
        let producerID = try PublicKeys.keyPair(dir, "ed25519", "p2")
        for (name, extra) in [("file", [input]), ("pipe", [])] {
            let made = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("p2.key"), "--chunk-size", "64K",
                                   "-o", dir.file("\(name).cof")] + extra, stdin: extra.isEmpty ? plaintext : nil)
            #expect(made.status == 0, "\(made.stderr)")
            let fromFile = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("p2.pub"), dir.file("\(name).cof")])
            #expect(fromFile.status == 0, "\(fromFile.stderr)")
            #expect(fromFile.stdout == plaintext)
            let fromPipe = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("stranger.pub"),
                                       "--signed-by", dir.file("p2.pub")], stdin: try dir.read("\(name).cof"))
            #expect(fromPipe.status == 0, "\(fromPipe.stderr)")
            #expect(fromPipe.stdout == plaintext)
        }
        let inspect = try coffer(["inspect", dir.file("file.cof")])
        #expect(inspect.stdoutText.contains("signature:   ed25519, chunk-sha256; signed by key id \(producerID)"))
        let json = try coffer(["inspect", "--json", dir.file("file.cof")])
        #expect(json.stdoutText.contains("\"signers\" : [\n      \"\(producerID)\""))
        let keyless = try coffer(["verify", "--signed-by", dir.file("p2.pub"), dir.file("file.cof")])
        #expect(keyless.status == 0, "\(keyless.stderr)")
        #expect(keyless.stderr.contains("not decrypted: no key given"))
        let full = try coffer(["verify", "--key-file", key, "--signed-by", dir.file("p2.pub"), dir.file("file.cof")])
        #expect(full.status == 0)
        #expect(full.stderr.contains("700000 bytes authenticated, signature valid"))
        // An empty input signs and verifies too.
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("p2.key"), "-o", dir.file("empty.cof")], stdin: []).status == 0)
        let empty = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("p2.pub"), dir.file("empty.cof")])
        #expect(empty.status == 0 && empty.stdout.isEmpty, "\(empty.stderr)")
    }

    @Test("unsigned, signed by a stranger, payload altered, signature altered, trailer cut: refused, and -o leaves no file")
    func refusals() throws {
        let (dir, key) = try Self.setUp()
        let input = try dir.write(pseudoRandom(300_000), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("unsigned.cof"), input]).status == 0)
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--chunk-size", "64K",
                            "-o", dir.file("signed.cof"), input]).status == 0)
        let signed = try dir.read("signed.cof")
        let pub = dir.file("producer.pub")

        let unsigned = try coffer(["decrypt", "--key-file", key, "--signed-by", pub, "-o", dir.file("out"), dir.file("unsigned.cof")])
        #expect(unsigned.status == Exit.key)
        #expect(unsigned.stderr.contains("not signed"))
        let stranger = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("stranger.pub"), "-o", dir.file("out"), dir.file("signed.cof")])
        #expect(stranger.status == Exit.key)
        #expect(stranger.stderr.contains("is signed by ed25519"))
        #expect(try coffer(["verify", "--signed-by", dir.file("stranger.pub"), dir.file("signed.cof")]).status == Exit.key)

        var payload = signed
        payload[signed.count - 200_000] ^= 0x20
        var signature = signed
        signature[signed.count - 100] ^= 0x01
        let cases: [(String, [UInt8])] = [("payload", payload), ("signature", signature), ("cut", Array(signed.dropLast(144)))]
        for (name, bytes) in cases {
            let path = try dir.write(bytes, "\(name).cof")
            let decrypt = try coffer(["decrypt", "--key-file", key, "--signed-by", pub, "-o", dir.file("out"), path])
            #expect(decrypt.status == Exit.integrity, "\(name): \(decrypt.stderr)")
            // Without a key, a cut file's last payload bytes read as a trailer of unknown signers.
            let keyless = try coffer(["verify", "--signed-by", pub, path])
            #expect(keyless.status == (name == "cut" ? Exit.key : Exit.integrity), "\(name): \(keyless.stderr)")
            let piped = try coffer(["decrypt", "--key-file", key, "--signed-by", pub], stdin: bytes)
            #expect(piped.status == Exit.integrity, "\(name) piped: \(piped.stderr)")
        }
        #expect(try coffer(["verify", "--signed-by", pub, dir.file("signature.cof")]).stderr.contains("altered after signing"))
        #expect(dir.absent("out"))
        // A range read checks the whole signature before any output.
        let range = try coffer(["decrypt", "--key-file", key, "--signed-by", pub, "--offset", "0", "--length", "10", dir.file("payload.cof")])
        #expect(range.status == Exit.integrity)
        #expect(range.stdout.isEmpty)
    }

    @Test("ML-DSA-65 (post-quantum) signing keys: keygen, sign, check with and without a key, refuse the wrong signer, rewrap keeps it")
    func mlDSA() throws {
        let (dir, key) = try Self.setUp()
        let id = try PublicKeys.keyPair(dir, "ml-dsa-65", "pq-signer")
        let pub = String(decoding: try dir.read("pq-signer.pub"), as: UTF8.self)
        #expect(pub.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        let plaintext = pseudoRandom(200_000)
        let input = try dir.write(plaintext, "in")
        let made = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("pq-signer.key"), "--chunk-size", "64K",
                               "-o", dir.file("pq.cof"), input])
        #expect(made.status == 0, "\(made.stderr)")
        #expect(try coffer(["inspect", dir.file("pq.cof")]).stdoutText.contains("signature:   ml-dsa-65, chunk-sha256; signed by key id \(id)"))
        for source in [nil, try dir.read("pq.cof")] {
            let out = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("producer.pub"), "--signed-by",
                                  dir.file("pq-signer.pub")] + (source == nil ? [dir.file("pq.cof")] : []), stdin: source)
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout == plaintext)
        }
        #expect(try coffer(["verify", "--signed-by", dir.file("pq-signer.pub"), dir.file("pq.cof")]).status == 0)
        let ed = try coffer(["verify", "--signed-by", dir.file("producer.pub"), dir.file("pq.cof")])
        #expect(ed.status == Exit.key)
        #expect(ed.stderr.contains("signed by ml-dsa-65 \(id)"))
        #expect(try coffer(["rewrap", "--key-file", key, "--add-key-file", try dir.keygen("k2.key"), dir.file("pq.cof")]).status == 0)
        var altered = try dir.read("pq.cof")
        altered[altered.count - 7000] ^= 4
        let path = try dir.write(altered, "altered.cof")
        #expect(try coffer(["verify", "--signed-by", dir.file("pq-signer.pub"), path]).status == Exit.integrity)
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("pq-signer.pub"), dir.file("pq.cof")]).status == 0)
        // Re-signing with a key of another algorithm would change the trailer's size: reencrypt does that.
        let other = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("producer.key"), dir.file("pq.cof")])
        #expect(other.status == Exit.key)
        #expect(other.stderr.contains("reencrypt"))
    }

    @Test("wrong kinds of keys and options are refused with a message that says what to give")
    func wrongKeys() throws {
        let (dir, key) = try Self.setUp()
        let input = try dir.write([1, 2, 3], "in")
        let publicAsSigner = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.pub"), input])
        #expect(publicAsSigner.status == Exit.key)
        #expect(publicAsSigner.stderr.contains("public key"))
        try PublicKeys.keyPair(dir, "x25519", "age")
        let ageAsSigner = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("age.key"), input])
        #expect(ageAsSigner.status == Exit.key)
        #expect(ageAsSigner.stderr.contains("not a signing key"))
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "-o", dir.file("s.cof"), input]).status == 0)
        let privateAsVerifier = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("producer.key"), dir.file("s.cof")])
        #expect(privateAsVerifier.status == Exit.key)
        #expect(privateAsVerifier.stderr.contains("private key"))
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--file-version", "1", input]).status == Exit.usage)
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--signature-digest", "md5", input]).status == Exit.usage)
    }

    @Test("a protected signing key asks for its passphrase; a wrong one is refused")
    func protectedKey() throws {
        let (dir, key) = try Self.setUp()
        let secret = try dir.write(Array("signing secret\n".utf8), "pass")
        try PublicKeys.keyPair(dir, "ed25519", "locked", extra: ["--protect", "--identity-passphrase-file", secret])
        let input = try dir.write(pseudoRandom(1000), "in")
        let noPassphrase = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("locked.key"), input])
        #expect(noPassphrase.status == Exit.key)
        #expect(noPassphrase.stderr.contains("protected by a passphrase"))
        let wrong = try coffer(["encrypt", "--key-file", key, "--sign", dir.file("locked.key"), input],
                               environment: ["COFFER_IDENTITY_PASSPHRASE": "not it"])
        #expect(wrong.status == Exit.key)
        #expect(wrong.stderr.contains("wrong passphrase"))
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("locked.key"), "--identity-passphrase-file", secret,
                            "-o", dir.file("s.cof"), input]).status == 0)
        #expect(try coffer(["verify", "--signed-by", dir.file("locked.pub"), dir.file("s.cof")]).status == 0)
    }

    @Test("rewrap keeps a signature valid and the payload bytes; --sign re-signs in place or signs an unsigned file once")
    func rewrap() throws {
        let (dir, key) = try Self.setUp()
        let input = try dir.write(pseudoRandom(400_000), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "-o", dir.file("s.cof"), input]).status == 0)
        let before = try dir.read("s.cof")
        let headerBytes = RewrapCommand.headerLength(before)
        let added = try dir.keygen("added.key")
        #expect(try coffer(["rewrap", "--key-file", key, "--add-key-file", added, dir.file("s.cof")]).status == 0)
        let after = try dir.read("s.cof")
        #expect(after.count == before.count)
        #expect(after[headerBytes...] == before[headerBytes...], "payload and trailer untouched")
        #expect(try coffer(["verify", "--key-file", added, "--signed-by", dir.file("producer.pub"), dir.file("s.cof")]).status == 0)

        // Rotating the signing key: the old signature must check first, so its signer is named.
        let unchecked = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("stranger.key"), dir.file("s.cof")])
        #expect(unchecked.status == Exit.key, "\(unchecked.stderr)")
        #expect(unchecked.stderr.contains("--signed-by"))
        #expect(try dir.read("s.cof") == after, "a refused re-signing changes nothing")
        // Then the old signer is no longer accepted, the new one is.
        let resign = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("stranger.key"),
                                 "--signed-by", dir.file("producer.pub"), dir.file("s.cof")])
        #expect(resign.status == 0, "\(resign.stderr)")
        #expect(resign.stderr.contains("signed"))
        let resigned = try dir.read("s.cof")
        #expect(resigned.count == before.count)
        #expect(resigned[headerBytes..<(resigned.count - 144)] == before[headerBytes..<(before.count - 144)])
        #expect(try coffer(["verify", "--signed-by", dir.file("producer.pub"), dir.file("s.cof")]).status == Exit.key)
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("stranger.pub"), dir.file("s.cof")]).status == 0)

        // An unsigned file, and a version-1 file, are signed by a one-time conversion.
        for (name, version) in [("u2.cof", "2"), ("u1.cof", "1")] {
            #expect(try coffer(["encrypt", "--key-file", key, "--file-version", version, "-o", dir.file(name), input]).status == 0)
            let converted = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("producer.key"), dir.file(name)])
            #expect(converted.status == 0, "\(converted.stderr)")
            #expect(converted.stderr.contains("converted"))
            let out = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("producer.pub"), dir.file(name)])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout == (try dir.read("in")))
        }
    }

    @Test("reencrypt drops a signature unless --sign is given, and says so")
    func reencrypt() throws {
        let (dir, key) = try Self.setUp()
        let input = try dir.write(pseudoRandom(20_000), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "-o", dir.file("a.cof"), input]).status == 0)
        let plain = try coffer(["reencrypt", "--key-file", key, "--to-key-file", key, dir.file("a.cof")])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stderr.contains("the new payload is not"))
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("producer.pub"), dir.file("a.cof")]).status == Exit.key)
        #expect(try coffer(["verify", "--key-file", key, dir.file("a.cof")]).status == 0)
        let signed = try coffer(["reencrypt", "--key-file", key, "--to-key-file", key, "--sign", dir.file("producer.key"), dir.file("a.cof")])
        #expect(signed.status == 0, "\(signed.stderr)")
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("producer.pub"), dir.file("a.cof")]).status == 0)
    }

    @Test("migrate --sign signs the Coffer files it writes; age input with --signed-by is refused")
    func migrate() throws {
        let (dir, key) = try Self.setUp()
        try PublicKeys.keyPair(dir, "x25519", "old")
        let plaintext = pseudoRandom(90_000)
        let input = try dir.write(plaintext, "in")
        #expect(try coffer(["encrypt", "--format", "age", "-r", dir.file("old.pub"), "-o", dir.file("db.age"), input]).status == 0)
        let unsignedAge = try coffer(["decrypt", "-i", dir.file("old.key"), "--signed-by", dir.file("producer.pub"), dir.file("db.age")])
        #expect(unsignedAge.status == Exit.key)
        #expect(unsignedAge.stderr.contains("age files carry no signature"))
        let migrated = try coffer(["migrate", "-q", "--from", "age", "--from-identity", dir.file("old.key"), "--key-file", key,
                                   "--sign", dir.file("producer.key"), dir.file("db.age")])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        let out = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("producer.pub"), dir.file("db.cof")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == plaintext)
    }

    @Test("a signed directory run decrypts with --signed-by; a file re-signed by a stranger fails alone")
    func directory() throws {
        let (dir, key) = try Self.setUp()
        for i in 0..<6 { _ = try dir.write(pseudoRandom(3000 * i, seed: UInt64(i)), "tree/f\(i)") }
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--recursive", "--remove-original",
                            dir.file("tree")]).status == 0)
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("producer.pub"), "--recursive", dir.file("tree")]).status == 0)
        #expect(try coffer(["rewrap", "--key-file", key, "--sign", dir.file("stranger.key"), "--signed-by", dir.file("producer.pub"),
                            dir.file("tree/f3.cof")]).status == 0)
        let run = try coffer(["decrypt", "--key-file", key, "--signed-by", dir.file("producer.pub"), "--recursive", dir.file("tree")])
        #expect(run.status == Exit.key, "\(run.stderr)")
        #expect(run.stderr.contains("f3.cof"))
        #expect(dir.absent("tree/f3"))
        #expect(dir.exists("tree/f2"))
        #expect(try dir.read("tree/f2") == pseudoRandom(6000, seed: 2))
    }

    /// Offset of the first byte of payload chunk `chunk` in a signed version-2 file of `plaintext`
    /// bytes in `chunkSize` chunks (computed from the end: trailer, then sealed chunks).
    static func chunkOffset(_ file: [UInt8], plaintext: Int, chunkSize: Int, chunk: Int, trailer: Int = 144) -> Int {
        let chunks = max(1, (plaintext + chunkSize - 1) / chunkSize)
        let payloadStart = file.count - trailer - (plaintext + 16 * chunks)
        return payloadStart + chunk * (chunkSize + 16)
    }

    @Test("decrypt --signed-by to standard output writes no byte of an altered file, from a file or a pipe, and leaves no spool file")
    func nothingBeforeSignature() throws {
        let (dir, key) = try Self.setUp()
        let plaintext = pseudoRandom(300_000)
        let input = try dir.write(plaintext, "in")
        let pub = dir.file("producer.pub")
        for digest in ["chunk-sha256", "chunk-tags"] {
            let name = "\(digest).cof"
            #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--signature-digest", digest,
                                "--chunk-size", "64K", "-o", dir.file(name), input]).status == 0)
            var altered = try dir.read(name)
            // Chunk 3 of 5: chunks 0-2 would reach the pipe if the signature were checked last.
            altered[Self.chunkOffset(altered, plaintext: plaintext.count, chunkSize: 65536, chunk: 3) + 10] ^= 0x40
            let path = try dir.write(altered, "altered-\(name)")
            let spool = dir.file("spool-\(digest)")
            try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: false)
            for (how, arguments, stdin) in [("file", [path], nil), ("pipe", [], altered)] as [(String, [String], [UInt8]?)] {
                let out = try coffer(["decrypt", "--key-file", key, "--signed-by", pub] + arguments, stdin: stdin,
                                     environment: ["TMPDIR": spool])
                #expect(out.status == Exit.integrity, "\(digest) \(how): \(out.stderr)")
                #expect(out.stdout.count == 0, "\(digest) \(how): \(out.stdout.count) plaintext bytes released before the signature check")
                // The genuine file still streams, from a file and a pipe.
                let good = try coffer(["decrypt", "--key-file", key, "--signed-by", pub] + (stdin == nil ? [dir.file(name)] : []),
                                      stdin: stdin == nil ? nil : try dir.read(name), environment: ["TMPDIR": spool])
                #expect(good.status == 0, "\(digest) \(how): \(good.stderr)")
                #expect(good.stdout.count == plaintext.count && good.stdout == plaintext, "\(digest) \(how)")
            }
            #expect((try FileManager.default.contentsOfDirectory(atPath: spool)).isEmpty, "spooled ciphertext left behind")
        }
    }

    @Test("without --signed-by: verify says who signed and that it was not checked, and fails on a damaged trailer; decrypt warns")
    func uncheckedSignature() throws {
        let (dir, key) = try Self.setUp()
        let id = try PublicKeys.keyPair(dir, "ed25519", "p3")
        let plaintext = pseudoRandom(70_000)
        let input = try dir.write(plaintext, "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("p3.key"), "-o", dir.file("s.cof"), input]).status == 0)
        let signed = try dir.read("s.cof")
        for stdin in [nil, signed] {
            let ok = try coffer(["verify", "--key-file", key] + (stdin == nil ? [dir.file("s.cof")] : []), stdin: stdin)
            #expect(ok.status == 0, "\(ok.stderr)")
            #expect(ok.stderr.contains("signed by ed25519 \(id), not checked"), "\(ok.stderr)")
        }
        // Signature erased (slot 1 zeroed, slot 2 already empty), or its signature zeroed.
        var erased = signed
        for i in (signed.count - 144)..<(signed.count - 72) { erased[i] = 0 }
        var zeroed = signed
        for i in (signed.count - 144 + 8)..<(signed.count - 72) { zeroed[i] = 0 }
        for (name, bytes) in [("erased", erased), ("zeroed", zeroed)] {
            let path = try dir.write(bytes, "\(name).cof")
            for stdin in [nil, bytes] {
                let verify = try coffer(["verify", "--key-file", key] + (stdin == nil ? [path] : []), stdin: stdin)
                #expect(verify.status == Exit.integrity, "\(name): \(verify.stderr)")
                #expect(verify.stderr.contains("signature trailer is damaged"), "\(name): \(verify.stderr)")
                let decrypt = try coffer(["decrypt", "--key-file", key] + (stdin == nil ? [path] : []), stdin: stdin)
                #expect(decrypt.status == 0, "\(name): \(decrypt.stderr)")
                #expect(decrypt.stdout == plaintext)
                #expect(decrypt.stderr.contains("signature trailer is damaged"), "\(name): \(decrypt.stderr)")
            }
        }
        // An unsigned file says nothing about signatures.
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("u.cof"), input]).status == 0)
        let unsigned = try coffer(["verify", "--key-file", key, dir.file("u.cof")])
        #expect(unsigned.status == 0 && !unsigned.stderr.contains("signed"), "\(unsigned.stderr)")
    }

    @Test("rewrap --sign authenticates every chunk and checks the existing signature before signing; a refusal changes nothing")
    func resignChecksFirst() throws {
        let (dir, key) = try Self.setUp()
        let plaintext = pseudoRandom(300_000)
        let input = try dir.write(plaintext, "in")
        for digest in ["chunk-sha256", "chunk-tags"] {
            // A signed file whose chunk was altered: re-signing it, even by its own signer, is refused.
            let name = "s-\(digest).cof"
            #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "--signature-digest", digest,
                                "--chunk-size", "64K", "-o", dir.file(name), input]).status == 0)
            var altered = try dir.read(name)
            altered[Self.chunkOffset(altered, plaintext: plaintext.count, chunkSize: 65536, chunk: 2) + 5] ^= 1
            _ = try dir.write(altered, name)
            for signer in ["stranger", "producer"] {
                let resign = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("\(signer).key"),
                                         "--signed-by", dir.file("producer.pub"), dir.file(name)])
                #expect(resign.status == Exit.integrity, "\(digest) \(signer): \(resign.stderr)")
                #expect(try dir.read(name) == altered, "\(digest) \(signer): the file was changed")
                #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("\(signer).pub"), dir.file(name)]).status != 0)
            }
            // An unsigned file with an altered chunk is not signed for the first time either.
            let unsignedName = "u-\(digest).cof"
            #expect(try coffer(["encrypt", "--key-file", key, "--chunk-size", "64K", "-o", dir.file(unsignedName), input]).status == 0)
            var unsigned = try dir.read(unsignedName)
            unsigned[Self.chunkOffset(unsigned, plaintext: plaintext.count, chunkSize: 65536, chunk: 1, trailer: 0) + 5] ^= 1
            _ = try dir.write(unsigned, unsignedName)
            let first = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("producer.key"), "--signature-digest", digest,
                                    dir.file(unsignedName)])
            #expect(first.status == Exit.integrity, "\(digest): \(first.stderr)")
            #expect(try dir.read(unsignedName) == unsigned)
        }
        // The producer re-signs its own intact file without naming itself.
        #expect(try coffer(["encrypt", "--key-file", key, "--sign", dir.file("producer.key"), "-o", dir.file("g.cof"), input]).status == 0)
        let own = try coffer(["rewrap", "--key-file", key, "--sign", dir.file("producer.key"), dir.file("g.cof")])
        #expect(own.status == 0, "\(own.stderr)")
        #expect(try coffer(["verify", "--key-file", key, "--signed-by", dir.file("producer.pub"), dir.file("g.cof")]).status == 0)
    }
}
