@_spi(TestVectors) import CofferFormat
@_spi(TestVectors) import CofferKeys
import Foundation
import Testing

/// The test vectors listed in docs/FORMAT.md. Each is made through the deterministic API from
/// fixed keys, salts and nonces; the files are checked in under Tests/CofferFormatTests/Vectors.
/// `COFFER_WRITE_VECTORS=1 swift test --filter Vectors` rewrites them (only after a deliberate
/// format change, together with FORMAT.md).
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
        if keyFile { stanzas.append(try SymmetricKeyFile(keyBytes: Self.keyBytes).wrap(fileKey, salt: Self.keyfileSalt)) }
        if let passphrase {
            stanzas.append(try Passphrase(Array(passphrase.utf8), workFactor: Self.passphraseWorkFactor)
                .wrap(fileKey, salt: Self.scryptSalt))
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

    @Test("every vector file is exactly what the deterministic API makes", arguments: Vector.all.map(\.name))
    func reproducible(name: String) throws {
        let vector = Vector.all.first { $0.name == name }!
        let made = try vector.make()
        let path = "\(Vector.directory)/\(name)"
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
        #expect(try read(path) == made, "\(name) differs from the checked-in vector: the format changed")
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
