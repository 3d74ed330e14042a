@_spi(TestVectors) import CofferFormat
@_spi(TestVectors) import CofferKeys
import Foundation
import Testing

/// The test vectors listed in docs/FORMAT.md. Each is made through the deterministic API from
/// fixed keys, salts and nonces; the files are checked in under Tests/CofferFormatTests/Vectors.
/// `COFFER_WRITE_VECTORS=1 swift test --filter Vectors` rewrites them (only after a deliberate
/// format change, together with FORMAT.md); then pin the new bytes with
/// `cd Tests/CofferFormatTests/Vectors && sha256sum *.cof *.cof.txt > SHA256SUMS`. The tests check
/// the files against SHA256SUMS with coreutils' `sha256sum`, not with the code under test, and
/// never compare a vector with bytes they have just written.
struct Vector: Sendable {
    let name: String
    let cipher: PayloadCipher
    let chunkSize: Int
    let objectName: String
    let keyFile: Bool
    let passphrase: String?
    let plaintext: [UInt8]
    /// Version 2 vectors: (slot size, slot, generation); nil for version 1.
    var slots: (size: Int, slot: Int, generation: UInt64)? = nil
    /// Signed vectors: the payload digest kind (signed with `signingSeed`).
    var signatureDigest: SignatureParameters.PayloadDigest? = nil
    /// Stanzas written as they are after the others (KMS stanzas with fixed bodies).
    var fixedStanzas: [Stanza] = []

    /// KMS stanzas as `coffer encrypt --kms` writes them, with fixed bodies: no KMS holds a key
    /// that opens them; they show the grammar, and that the header MAC covers them.
    static let kmsStanzas = [
        Stanza(type: "aws-kms", arguments: ["eu-west-1", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                                            "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf", "http://127.0.0.1:4566"],
               body: Array(repeating: 0xE1, count: 96)),
        Stanza(type: "vault-transit", arguments: ["https://vault.example:8200", "transit", "backup-kek", "3",
                                                  "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"],
               body: Array(repeating: 0xE2, count: 92)),
    ]

    static let keyBytes = Array(0x01...0x20).map(UInt8.init)
    static let fileKeyBytes = Array(0x40...0x5F).map(UInt8.init)
    static let keyfileSalt = Array(repeating: UInt8(0xA1), count: 16)
    static let scryptSalt = Array(repeating: UInt8(0xB2), count: 16)
    static let payloadNonce = Array(0xC0...0xCF).map(UInt8.init)
    static let passphraseWorkFactor = 10
    /// Ed25519 private key (RFC 8032 seed) of the signed vectors; Ed25519 signing is deterministic.
    static let signingSeed = Array(0x60...0x7F).map(UInt8.init)
    static var signer: Ed25519Signer {
        try! Ed25519Signer(seed: signingSeed)
    }

    static let all: [Vector] = [
        Vector(name: "keyfile_aes_hello.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "", keyFile: true,
               passphrase: nil, plaintext: Array("Hello, Coffer!\n".utf8)),
        Vector(name: "keyfile_aes_empty.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "", keyFile: true,
               passphrase: nil, plaintext: []),
        Vector(name: "keyfile_aes_exact_two_chunks.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "", keyFile: true,
               passphrase: nil, plaintext: Array(repeating: UInt8(ascii: "x"), count: 8192)),
        Vector(name: "keyfile_chacha_three_chunks_and_one_byte.cof", cipher: .chacha20poly1305, chunkSize: 4096,
               objectName: "", keyFile: true, passphrase: nil,
               plaintext: (0..<(3 * 4096 + 1)).map { UInt8(truncatingIfNeeded: $0 * 7) }),
        Vector(name: "keyfile_and_passphrase_object.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "db/ibdata1",
               keyFile: true, passphrase: "coffer test vector",
               plaintext: Array("-- PostgreSQL database dump\n".utf8)),
        Vector(name: "passphrase_only_chacha.cof", cipher: .chacha20poly1305, chunkSize: 16384, objectName: "", keyFile: false,
               passphrase: "correct horse battery staple", plaintext: Array(repeating: 0, count: 20000)),
        Vector(name: "v2_keyfile_aes_hello.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "", keyFile: true,
               passphrase: nil, plaintext: Array("Hello, Coffer!\n".utf8), slots: (1024, 0, 1)),
        Vector(name: "v2_rewrapped_slot2_generation7.cof", cipher: .chacha20poly1305, chunkSize: 4096, objectName: "db/ibdata1",
               keyFile: true, passphrase: "coffer test vector", plaintext: (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 13) },
               slots: (2048, 1, 7)),
        Vector(name: "v2_signed_ed25519_chunk_sha256.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "db/base.sql",
               keyFile: true, passphrase: nil, plaintext: (0..<9000).map { UInt8(truncatingIfNeeded: $0 * 31) },
               slots: (1024, 0, 1), signatureDigest: .chunkSHA256),
        Vector(name: "v2_signed_ed25519_chunk_tags.cof", cipher: .chacha20poly1305, chunkSize: 4096, objectName: "",
               keyFile: true, passphrase: nil, plaintext: Array("signed, tags only\n".utf8),
               slots: (1024, 0, 1), signatureDigest: .chunkTags),
        Vector(name: "v2_keyfile_and_kms_stanzas.cof", cipher: .aes256gcm, chunkSize: 4096, objectName: "base/16384/2619",
               keyFile: true, passphrase: nil, plaintext: Array("KMS stanzas beside a key file\n".utf8), slots: (2048, 1, 1),
               fixedStanzas: kmsStanzas),
    ]

    static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors").path
    }

    func make() throws -> [UInt8] {
        let fileKey = try FileKey(bytes: Self.fileKeyBytes)
        var stanzas: [Stanza] = []
        if keyFile { stanzas.append(try SymmetricKeyFile(keyBytes: Self.keyBytes).wrap(fileKey: fileKey.bytes, salt: Self.keyfileSalt)) }
        if let passphrase {
            stanzas.append(try Passphrase(Array(passphrase.utf8), workFactor: Self.passphraseWorkFactor)
                .wrap(fileKey: fileKey.bytes, salt: Self.scryptSalt))
        }
        stanzas += fixedStanzas
        let sink = MemorySink()
        var encryptor = CofferEncryptor(fileKey: fileKey, stanzas: stanzas)
        let parameters = HeaderParameters(cipher: cipher, chunkSize: chunkSize, objectName: Array(objectName.utf8))
        if let signatureDigest {
            encryptor.signer = Self.signer
            encryptor.signatureDigest = signatureDigest
        }
        if let slots {
            encryptor.version = .v2(slotSize: slots.size)
            _ = try encryptor.encrypt(from: pipeSource(plaintext), to: sink, parameters: parameters, engine: StreamEngine(threads: 1),
                                      payloadNonce: Self.payloadNonce, slot: slots.slot, generation: slots.generation)
        } else {
            encryptor.version = .v1
            _ = try encryptor.encrypt(from: pipeSource(plaintext), to: sink, parameters: parameters,
                                      engine: StreamEngine(threads: 1), payloadNonce: Self.payloadNonce)
        }
        return sink.bytes
    }

    func identities() throws -> [Identity] {
        var out: [Identity] = []
        if keyFile { out.append(try SymmetricKeyFile(keyBytes: Self.keyBytes)) }
        if let passphrase { out.append(try Passphrase(Array(passphrase.utf8), workFactor: Self.passphraseWorkFactor)) }
        return out
    }
}

@Suite struct Vectors {
    @Test("the KMS stanzas of the vector parse, name their keys and give back their URIs")
    func kmsStanzas() throws {
        let path = "\(Vector.directory)/v2_keyfile_and_kms_stanzas.cof"
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let header = try HeaderReading.read(from: source).header
        let kms = header.stanzas.filter { KMSStanza.types.contains($0.type) }
        #expect(kms == Vector.kmsStanzas)
        #expect(kms.map { KMSStanza.uri(of: $0) } == [
            "aws-kms:///arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab?REGION=eu-west-1&AWS_ENDPOINT=http://127.0.0.1:4566",
            "vault:///backup-kek?ADDR=https://vault.example:8200&MOUNT=transit",
        ])
        #expect(kms.allSatisfy { KeyTypes.keyID(of: $0)?.count == 16 })
    }

    @Test("every vector file is exactly what the deterministic API makes, and both are the bytes pinned in SHA256SUMS (by coreutils sha256sum)",
          arguments: Vector.all.map(\.name))
    func reproducible(name: String) throws {
        let vector = Vector.all.first { $0.name == name }!
        let made = try vector.make()
        let path = "\(Vector.directory)/\(name)"
        // The committed bytes, read before any rewrite below.
        let committed = try read(path)
        let pinned = try pinnedHashes()
        #expect(try externalSHA256(made) == pinned[name], "\(name): the API makes other bytes than those pinned in SHA256SUMS")
        #expect(try externalSHA256(vector.plaintext) == manifestPlaintextHash(name),
                "\(name): the manifest's plaintext hash is not the plaintext's SHA-256 (by sha256sum)")
        if ProcessInfo.processInfo.environment["COFFER_WRITE_VECTORS"] == "1" {
            try FileManager.default.createDirectory(atPath: Vector.directory, withIntermediateDirectories: true)
            try write(made, to: path)
            var manifest = "\(name)  plaintext \(vector.plaintext.count) bytes  sha256 \(sha256Hex(vector.plaintext))\n"
            if vector.signatureDigest != nil {
                let verifier = Vector.signer.verifier
                manifest += "signed by ed25519 public key \(Hex.encode(verifier.rawPublicKey)) (key id \(verifier.keyIDText))\n"
            }
            try Data(manifest.utf8).write(to: URL(fileURLWithPath: path + ".txt"))
        }
        #expect(committed == made, "\(name) differs from the checked-in vector: the format changed")
    }

    @Test("sha256sum -c SHA256SUMS: every vector file and manifest is the committed one; every vector is listed")
    func committedHashes() throws {
        let check = try runTool(["/usr/bin/sha256sum", "--strict", "--quiet", "-c", "SHA256SUMS"], in: Vector.directory)
        #expect(check.status == 0, "sha256sum -c: \(check.output)")
        let pinned = try pinnedHashes()
        for vector in Vector.all {
            #expect(pinned[vector.name] != nil && pinned[vector.name + ".txt"] != nil, "\(vector.name) is not in SHA256SUMS")
        }
        let onDisk = try FileManager.default.contentsOfDirectory(atPath: Vector.directory).filter { $0 != "SHA256SUMS" }
        #expect(Set(onDisk) == Set(pinned.keys), "files and SHA256SUMS differ")
    }

    /// SHA256SUMS as name → hash.
    func pinnedHashes() throws -> [String: String] {
        let text = try String(contentsOfFile: "\(Vector.directory)/SHA256SUMS", encoding: .utf8)
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            out[String(parts[1].drop { $0 == " " || $0 == "*" })] = String(parts[0])
        }
        return out
    }

    /// The plaintext hash a vector's manifest states.
    func manifestPlaintextHash(_ name: String) throws -> String? {
        let manifest = try String(contentsOfFile: "\(Vector.directory)/\(name).txt", encoding: .utf8)
        return manifest.components(separatedBy: " sha256 ").dropFirst().first.map { String($0.prefix(64)) }
    }

    /// SHA-256 by coreutils' sha256sum: independent of the code under test.
    func externalSHA256(_ bytes: [UInt8]) throws -> String {
        let dir = TemporaryDirectory()
        try write(bytes, to: dir.file("data"))
        let result = try runTool(["/usr/bin/sha256sum", dir.file("data")], in: dir.path)
        #expect(result.status == 0, "\(result.output)")
        return String(result.output.prefix(64))
    }

    /// Runs a tool (through coreutils' `env -C DIRECTORY`) with standard output and error into one
    /// pipe, through ``ChildSpawn`` as the product starts its children: descriptors 3 and up closed in
    /// the child, no Coffer secret in its environment. (Foundation's `Process` was used here, the
    /// only spawner in the test process not under the project's control: while the suite's rare
    /// crash on an NIO epoll descriptor closed by someone else is unexplained, every child is
    /// started the way the product starts its own.)
    func runTool(_ argv: [String], in directory: String) throws -> (status: Int32, output: String) {
        var fds: [Int32] = [0, 0]
        try #require(closeOnExecPipe(&fds, O_CLOEXEC) == 0)
        let started: ChildSpawn.Started
        do {
            started = try ChildSpawn.start(["/usr/bin/env", "-C", directory] + argv, stdout: .fd(fds[1]), stderr: .fd(fds[1]))
        } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[1])
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n > 0 { output += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(started.pid, &status, 0) < 0 && errno == EINTR {}
        // Exited normally: the status; killed by a signal: 128 + the signal, as a shell says.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, String(decoding: output, as: UTF8.self))
    }

    @Test("every vector file decrypts, with each of its keys alone, to the plaintext in its manifest",
          arguments: Vector.all.map(\.name))
    func decrypts(name: String) throws {
        let vector = Vector.all.first { $0.name == name }!
        let path = "\(Vector.directory)/\(name)"
        let manifest = try String(contentsOfFile: path + ".txt", encoding: .utf8)
        for identity in try vector.identities() {
            for threads in [1, 3] {
                let source = try ByteSource.open(path: path)
                defer { source.close() }
                let opened = try HeaderReading.read(from: source).open(with: [identity])
                let sink = MemorySink()
                _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: threads))
                #expect(manifest.contains("sha256 \(sha256Hex(sink.bytes))"), "\(name) with \(identity.label)")
                #expect(sink.bytes == vector.plaintext)
            }
        }
        guard vector.signatureDigest != nil else { return }
        // The signature: checked while decrypting, and without any key by hashing the ciphertext.
        let verifier = Vector.signer.verifier
        #expect(manifest.contains(Hex.encode(verifier.rawPublicKey)))
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let reading = try HeaderReading.read(from: source)
        #expect(try reading.verifySignature(in: source, verifiers: [verifier], engine: StreamEngine(threads: 2)).label == verifier.label)
        let opened = try reading.open(with: try vector.identities())
        #expect(try opened.decrypt(from: source, to: MemorySink(), engine: StreamEngine(threads: 2), signedBy: [verifier])
                == UInt64(vector.plaintext.count))
    }
}
