import Crypto
import AgeTestVectors
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// age files through the real `coffer` binary, against the real `age` and `age-keygen` (Debian's
/// package, installed by scripts/test.sh): both directions, several recipients, armor, an empty
/// file, 100 MiB, SSH keys and passphrases; and every CCTV vector through `coffer decrypt`.
@Suite struct AgeCLI {
    static let ageBinary = "/usr/bin/age"
    static let keygenBinary = "/usr/bin/age-keygen"

    @discardableResult
    static func age(_ arguments: [String], stdin: [UInt8]? = nil) throws -> RunResult {
        try spawn([ageBinary] + arguments, environment: ProcessInfo.processInfo.environment, stdin: stdin)
    }

    /// Runs `command` on a pseudo-terminal (util-linux `script`), typing `input`: age reads
    /// passphrases from the terminal only.
    static func onTerminal(_ command: String, typing input: String) throws -> RunResult {
        try spawn(["/usr/bin/script", "-qec", command, "/dev/null"], environment: ProcessInfo.processInfo.environment,
                  stdin: Array(input.utf8))
    }

    /// An age-keygen identity file; returns its path and recipient.
    static func keygen(_ dir: Scratch, _ name: String) throws -> (path: String, recipient: String) {
        let path = dir.file(name)
        let result = try spawn([keygenBinary, "-o", path], environment: [:], stdin: nil)
        #expect(result.status == 0, "age-keygen: \(result.stderr)")
        let text = String(decoding: try dir.read(name), as: UTF8.self)
        let recipient = text.components(separatedBy: "# public key: ")[1].prefix(while: { !$0.isNewline })
        return (path, String(recipient))
    }

    static func sha256(file path: String) throws -> String {
        hex(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)))
    }

    @Test("the age binaries are installed (scripts/test.sh installs Debian's age)")
    func toolsPresent() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.ageBinary))
        #expect(FileManager.default.isExecutableFile(atPath: Self.keygenBinary))
    }

    @Test("age → coffer and coffer → age: one recipient, several, armor, an empty file", arguments: [0, 1, 65_536, 200_003])
    func bothDirections(_ size: Int) throws {
        let dir = Scratch()
        let plaintext = pseudoRandom(size, seed: UInt64(size))
        let input = try dir.write(plaintext, "in")
        let one = try Self.keygen(dir, "one.txt"), two = try Self.keygen(dir, "two.txt")
        for armor in [false, true] {
            let armorFlag = armor ? ["-a"] : []
            // age → coffer, one recipient and two.
            let single = dir.file("age-single-\(armor)")
            #expect(try Self.age(armorFlag + ["-r", one.recipient, "-o", single, input]).status == 0)
            var out = try coffer(["decrypt", "-i", one.path, single])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout == plaintext)
            // Through pipes both ways: standard input is read sequentially.
            out = try coffer(["decrypt", "-i", one.path], stdin: try dir.read("age-single-\(armor)"))
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout == plaintext)
            let piped = try coffer(["encrypt", "--format", "age", "-r", one.recipient] + (armor ? ["--armor"] : []), stdin: plaintext)
            #expect(piped.status == 0, "\(piped.stderr)")
            #expect(try Self.age(["-d", "-i", one.path], stdin: piped.stdout).stdout == plaintext)
            let double = dir.file("age-double-\(armor)")
            #expect(try Self.age(armorFlag + ["-r", one.recipient, "-r", two.recipient, "-o", double, input]).status == 0)
            for identity in [one.path, two.path] {
                out = try coffer(["decrypt", "-i", identity, "-o", dir.file("out"), "--force", double])
                #expect(out.status == 0, "\(out.stderr)")
                #expect(try dir.read("out") == plaintext)
            }
            // coffer → age, one recipient and two; the armored file is text that age reads.
            let ours = dir.file("coffer-\(armor)")
            let format = ["--format", "age"] + (armor ? ["--armor"] : [])
            out = try coffer(["encrypt"] + format + ["-r", one.recipient, "-r", two.recipient, "-o", ours, input])
            #expect(out.status == 0, "\(out.stderr)")
            if armor { #expect(try dir.read("coffer-true").starts(with: Array("-----BEGIN AGE ENCRYPTED FILE-----\n".utf8))) }
            for identity in [one.path, two.path] {
                let opened = try Self.age(["-d", "-i", identity, ours])
                #expect(opened.status == 0, "\(opened.stderr)")
                #expect(opened.stdout == plaintext)
            }
            // An identity file with both keys, # comments, as age-keygen writes them.
            _ = try dir.write(try dir.read("one.txt") + Array("\n# second\n".utf8) + (try dir.read("two.txt")), "both.txt")
            #expect(try Self.age(["-d", "-i", dir.file("both.txt"), ours]).stdout == plaintext)
            #expect(try coffer(["decrypt", "-i", dir.file("both.txt"), ours]).stdout == plaintext)
        }
    }

    @Test("a 100 MiB file, both directions")
    func hundredMiB() throws {
        let dir = Scratch()
        let block = pseudoRandom(1 << 20, seed: 99)
        let path = dir.file("big")
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        for i in 0..<100 {
            var chunk = block
            chunk[0] = UInt8(i)
            handle.write(Data(chunk))
        }
        try handle.close()
        let expected = try Self.sha256(file: path)
        let key = try Self.keygen(dir, "key.txt")
        #expect(try Self.age(["-r", key.recipient, "-o", dir.file("big.age"), path]).status == 0)
        let fromAge = try coffer(["decrypt", "-q", "-i", key.path, "-o", dir.file("big.fromage"), dir.file("big.age")])
        #expect(fromAge.status == 0, "\(fromAge.stderr)")
        #expect(try Self.sha256(file: dir.file("big.fromage")) == expected)
        let ours = try coffer(["encrypt", "-q", "--format", "age", "-r", key.recipient, "-o", dir.file("big.coffer.age"), path])
        #expect(ours.status == 0, "\(ours.stderr)")
        // Same size as age's own file: same header size, nonce, and 16 bytes per 64 KiB chunk.
        let sizes = try [dir.file("big.age"), dir.file("big.coffer.age")].map {
            try FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int
        }
        #expect(sizes[0] == sizes[1])
        let toAge = try Self.age(["-d", "-i", key.path, "-o", dir.file("big.toage"), dir.file("big.coffer.age")])
        #expect(toAge.status == 0, "\(toAge.stderr)")
        #expect(try Self.sha256(file: dir.file("big.toage")) == expected)
    }

    @Test("ssh-ed25519 keys both directions; an ssh-rsa file is named as unsupported")
    func sshKeys() throws {
        let dir = Scratch()
        let plaintext = pseudoRandom(100_000, seed: 5)
        let input = try dir.write(plaintext, "in")
        #expect(try spawn(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("id")],
                          environment: [:], stdin: nil).status == 0)
        #expect(try Self.age(["-R", dir.file("id.pub"), "-o", dir.file("a.age"), input]).status == 0)
        let out = try coffer(["decrypt", "-i", dir.file("id"), dir.file("a.age")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == plaintext)
        let ours = try coffer(["encrypt", "--format", "age", "-R", dir.file("id.pub"), "-o", dir.file("c.age"), input])
        #expect(ours.status == 0, "\(ours.stderr)")
        #expect(try Self.age(["-d", "-i", dir.file("id"), dir.file("c.age")]).stdout == plaintext)
        // -i with encrypt: to the private key's own public half.
        #expect(try coffer(["encrypt", "--format", "age", "-i", dir.file("id"), "-o", dir.file("i.age"), input]).status == 0)
        #expect(try Self.age(["-d", "-i", dir.file("id"), dir.file("i.age")]).stdout == plaintext)
        // Another ssh key does not open it.
        #expect(try spawn(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("other")],
                          environment: [:], stdin: nil).status == 0)
        #expect(try coffer(["decrypt", "-i", dir.file("other"), dir.file("c.age")]).status == Exit.key)
        // SSH keys make age files only.
        let coffer1 = try coffer(["encrypt", "-R", dir.file("id.pub"), "-o", dir.file("x.cof"), input])
        #expect(coffer1.status == Exit.key)
        #expect(coffer1.stderr.contains("--format age"))
        #expect(try spawn(["/usr/bin/ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", dir.file("rsa")],
                          environment: [:], stdin: nil).status == 0)
        #expect(try Self.age(["-R", dir.file("rsa.pub"), "-o", dir.file("r.age"), input]).status == 0)
        let rsa = try coffer(["decrypt", "-i", dir.file("rsa"), "-o", dir.file("r.out"), dir.file("r.age")])
        #expect(rsa.status == Exit.key)
        #expect(rsa.stderr.contains("ssh-rsa"))
        #expect(dir.absent("r.out"))
    }

    @Test("passphrases both directions (age reads them from a terminal)")
    func passphrases() throws {
        let dir = Scratch()
        let plaintext = pseudoRandom(70_000, seed: 3)
        let input = try dir.write(plaintext, "in")
        let env = ["COFFER_PASSPHRASE": "correct horse battery"]
        let ours = try coffer(["encrypt", "--format", "age", "-p", "--work-factor", "12", "-o", dir.file("p.age"), input],
                              environment: env)
        #expect(ours.status == 0, "\(ours.stderr)")
        #expect(try dir.read("p.age").starts(with: Array("age-encryption.org/v1\n-> scrypt ".utf8)))
        let opened = try Self.onTerminal("\(Self.ageBinary) -d -o \(dir.file("p.out")) \(dir.file("p.age"))",
                                         typing: "correct horse battery\n")
        #expect(opened.status == 0, "\(opened.stderr)")
        #expect(try dir.read("p.out") == plaintext)
        let made = try Self.onTerminal("\(Self.ageBinary) -p -o \(dir.file("a.age")) \(input)",
                                       typing: "correct horse battery\ncorrect horse battery\n")
        #expect(made.status == 0, "\(made.stderr)")
        let out = try coffer(["decrypt", "-p", dir.file("a.age")], environment: env)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == plaintext)
        let wrong = try coffer(["decrypt", "-p", "-o", dir.file("w.out"), dir.file("a.age")],
                               environment: ["COFFER_PASSPHRASE": "wrong"])
        #expect(wrong.status == Exit.key)
        #expect(dir.absent("w.out"))
        // A passphrase must be alone in an age file (age's rule).
        let key = try Self.keygen(dir, "k.txt")
        let mixed = try coffer(["encrypt", "--format", "age", "-p", "-r", key.recipient, "-o", dir.file("m.age"), input],
                               environment: env)
        #expect(mixed.status == Exit.usage)
        #expect(dir.absent("m.age"))
    }

    @Test("tampered, truncated, extended files and wrong keys fail with the right exit code and leave no output")
    func badInput() throws {
        let dir = Scratch()
        let plaintext = pseudoRandom(3 * 65_536 + 10, seed: 11)
        let input = try dir.write(plaintext, "in")
        let key = try Self.keygen(dir, "key.txt"), other = try Self.keygen(dir, "other.txt")
        #expect(try Self.age(["-r", key.recipient, "-o", dir.file("f.age"), input]).status == 0)
        let file = try dir.read("f.age")
        var tampered = file
        tampered[file.count - 100] ^= 0x20
        let cases: [(String, [UInt8], Int32)] = [
            ("tampered", tampered, Exit.integrity),
            ("truncated", Array(file.dropLast(1)), Exit.integrity),
            ("extended", file + [0x0A], Exit.integrity),
            ("header only", Array(file.prefix(upTo: file.firstRange(of: Array("\n--- ".utf8))!.upperBound + 44)), Exit.integrity),
        ]
        for (name, bytes, code) in cases {
            let path = try dir.write(bytes, name)
            let result = try coffer(["decrypt", "-i", key.path, "-o", dir.file("\(name).out"), path])
            #expect(result.status == code, "\(name): \(result.stderr)")
            #expect(dir.absent("\(name).out"), "\(name)")
        }
        // inspect shows an age file's stanzas and payload size without a key.
        let inspected = try coffer(["inspect", dir.file("f.age")])
        #expect(inspected.status == Exit.ok, "\(inspected.stderr)")
        #expect(inspected.stdoutText.contains("version:     age-encryption.org/v1"))
        #expect(inspected.stdoutText.contains("X25519         an X25519 (age) key"))
        #expect(inspected.stdoutText.contains("payload:     \(plaintext.count) bytes in 4 chunks"))
        // A final chunk of 26 bytes cut to 6 cannot even hold its tag: an impossible length.
        #expect(try coffer(["inspect", try dir.write(Array(file.dropLast(20)), "cut20")]).status == Exit.integrity)
        // verify authenticates an age file without writing anything.
        let verified = try coffer(["verify", "-i", key.path, dir.file("f.age")])
        #expect(verified.status == Exit.ok, "\(verified.stderr)")
        #expect(verified.stderr.contains("\(plaintext.count) bytes authenticated"))
        #expect(try coffer(["verify", "-i", key.path, dir.file("tampered")]).status == Exit.integrity)
        let wrongKey = try coffer(["decrypt", "-i", other.path, "-o", dir.file("w.out"), dir.file("f.age")])
        #expect(wrongKey.status == Exit.key)
        #expect(wrongKey.stderr.contains("no key given opens this file"))
        #expect(dir.absent("w.out"))
        // Key types that age files cannot use.
        let symmetric = try dir.keygen()
        let wrongType = try coffer(["decrypt", "--key-file", symmetric, dir.file("f.age")])
        #expect(wrongType.status == Exit.key)
        #expect(wrongType.stderr.contains("age has no symmetric keys"))
        let toSymmetric = try coffer(["encrypt", "--format", "age", "--key-file", symmetric, "-o", dir.file("s.age"), input])
        #expect(toSymmetric.status == Exit.key)
        #expect(dir.absent("s.age"))
        let range = try coffer(["decrypt", "-i", key.path, "--offset", "5", dir.file("f.age")])
        #expect(range.status == Exit.usage)
        // Coffer's payload options have no meaning in an age file.
        let chunked = try coffer(["encrypt", "--format", "age", "--chunk-size", "4M", "-r", key.recipient, "-o", dir.file("c.age"), input])
        #expect(chunked.status == Exit.usage)
        #expect(dir.absent("c.age"))
    }

    @Test("every CCTV vector through 'coffer decrypt': -o leaves no file on failure; stdout gets exactly the released plaintext")
    func vectors() throws {
        let (vectors, skipped, files) = AgeTestVectors.all
        #expect(files == AgeTestVectors.expectedCount && skipped.isEmpty)
        let dir = Scratch()
        var run = 0
        var failures: [Int32: Int] = [:]
        for vector in vectors {
            let name = vector.name
            let file = try dir.write(vector.file, name)
            var arguments = ["decrypt", "-q"]
            if !vector.identities.isEmpty {
                arguments += ["-i", try dir.write(Array(vector.identities.joined(separator: "\n").utf8), "\(name).key")]
            }
            if vector.identities.isEmpty && vector.passphrases.isEmpty {
                // A vector without keys: give one anyway, so that the file itself is judged.
                arguments += ["-i", try dir.write(Array("AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0\n".utf8), "\(name).key")]
            }
            let environment = vector.passphrases.first.map { ["COFFER_PASSPHRASE": $0] } ?? [:]
            let toFile = try coffer(arguments + ["-o", dir.file("\(name).out"), file], environment: environment)
            let toStdout = try coffer(arguments + [file], environment: environment)
            if vector.expect == "success" {
                #expect(toFile.status == 0, "\(name): \(toFile.stderr)")
                #expect(try hex(SHA256.hash(data: dir.read("\(name).out"))) == vector.payload, "\(name)")
            } else {
                // docs/AGE.md: no match → 2; an unsupported age-encryption.org version → 4; every
                // other header, HMAC, payload or armor failure → 3.
                // Input that is not recognisably age (no age-encryption.org/ line, no exact armor
                // BEGIN line) is "not a Coffer file" → 4, as for any unknown format.
                let firstLine = String(decoding: vector.file.prefix { $0 != 0x0A && $0 != 0x0D }, as: UTF8.self)
                let recognised = firstLine.hasPrefix("age-encryption.org/") || firstLine == "-----BEGIN AGE ENCRYPTED FILE-----"
                let expected: Int32 = switch vector.expect {
                case _ where !recognised: Exit.format
                case "no match": Exit.key
                case "header failure" where firstLine.hasPrefix("age-encryption.org/") && firstLine != "age-encryption.org/v1": Exit.format
                default: Exit.integrity
                }
                #expect(toFile.status == expected, "\(name) (\(vector.expect)): decrypt -o exited \(toFile.status): \(toFile.stderr)")
                #expect(toStdout.status == expected, "\(name) (\(vector.expect)): decrypt exited \(toStdout.status): \(toStdout.stderr)")
                #expect(dir.absent("\(name).out"), "\(name): a failed decryption left its output")
                failures[expected, default: 0] += 1
            }
            if let payload = vector.payload {
                #expect(hex(SHA256.hash(data: toStdout.stdout)) == payload, "\(name): released \(toStdout.stdout.count) bytes")
            }
            run += 1
        }
        print("age vectors through the CLI: \(run) run; failures by exit code: \(failures.sorted { $0.key < $1.key })")
        #expect(run == 143)
    }
}

func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

extension AgeCLI {
    @Test("migrate --from age: a tree of binary and armored age files to .cof in one pass; resumable; originals removed once verified")
    func migrate() throws {
        let dir = Scratch()
        let old = try Self.keygen(dir, "old.txt")
        let first = pseudoRandom(150_000, seed: 21), second = Array("armored and small".utf8)
        _ = try dir.write(first, "plain1")
        _ = try dir.write(second, "plain2")
        try FileManager.default.createDirectory(atPath: dir.file("backup/db"), withIntermediateDirectories: true)
        #expect(try Self.age(["-r", old.recipient, "-o", dir.file("backup/dump.sql.age"), dir.file("plain1")]).status == 0)
        #expect(try Self.age(["-a", "-r", old.recipient, "-o", dir.file("backup/db/t1.age"), dir.file("plain2")]).status == 0)
        _ = try dir.write(Array("not encrypted".utf8), "backup/notes.txt")
        let newKey = try dir.keygen("new.key")

        // The wrong old key: nothing converted, nothing removed.
        let stranger = try Self.keygen(dir, "stranger.txt")
        let refused = try coffer(["migrate", "-q", "--from", "age", "--from-identity", stranger.path, "--key-file", newKey,
                                  "--remove-original", dir.file("backup")])
        #expect(refused.status == Exit.key, "\(refused.stderr)")
        #expect(dir.exists("backup/dump.sql.age") && dir.absent("backup/dump.sql.cof"))
        #expect(try coffer(["migrate", "--from", "age", "--key-file", newKey, dir.file("backup")]).status == Exit.key)

        // First without removal (as if interrupted before the removals), then again with it.
        let run1 = try coffer(["migrate", "-q", "--from", "age", "--from-identity", old.path, "--key-file", newKey, dir.file("backup")])
        #expect(run1.status == Exit.ok, "\(run1.stderr)")
        #expect(dir.exists("backup/dump.sql.age") && dir.exists("backup/dump.sql.cof"))
        let run2 = try coffer(["migrate", "--from", "age", "--from-identity", old.path, "--key-file", newKey,
                               "--remove-original", dir.file("backup")])
        #expect(run2.status == Exit.ok, "\(run2.stderr)")
        #expect(run2.stderr.contains("already converted"))
        #expect(dir.absent("backup/dump.sql.age") && dir.absent("backup/db/t1.age"))
        #expect(try coffer(["decrypt", "--key-file", newKey, dir.file("backup/dump.sql.cof")]).stdout == first)
        #expect(try coffer(["decrypt", "--key-file", newKey, dir.file("backup/db/t1.cof")]).stdout == second)
        #expect(try coffer(["inspect", dir.file("backup/db/t1.cof")]).stdoutText.contains("object:      db/t1"))
        #expect(try dir.read("backup/notes.txt") == Array("not encrypted".utf8))
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })

        // One file, from a passphrase-encrypted age file (as 'coffer encrypt --format age -p' writes it).
        _ = try dir.write(Array("pw\n".utf8), "pw.txt")
        let made = try coffer(["encrypt", "--format", "age", "-p", "--work-factor", "10", "-o", dir.file("one.age"), dir.file("plain2")],
                              environment: ["COFFER_PASSPHRASE": "pw"])
        #expect(made.status == 0, "\(made.stderr)")
        let single = try coffer(["migrate", "-q", "--from", "age", "--from-passphrase-file", dir.file("pw.txt"), "-r", old.recipient,
                                 "--remove-original", dir.file("one.age")])
        #expect(single.status == Exit.ok, "\(single.stderr)")
        #expect(dir.absent("one.age"))
        #expect(try coffer(["decrypt", "-i", old.path, dir.file("one.cof")]).stdout == second)
    }
}
