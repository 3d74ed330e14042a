import CofferFormat
@testable import CofferKeys
@testable import CofferInterop
import Crypto
import Foundation
import Testing

/// age files written and read by the library: sizes at chunk boundaries, armor, key types,
/// damage, and the release of plaintext before an error.
@Suite struct AgeFiles {
    static let identity = X25519Identity(privateKey: Curve25519.KeyAgreement.PrivateKey())
    static var recipient: X25519Recipient { X25519Recipient(publicKey: identity.privateKey.publicKey) }

    static func encrypt(_ plaintext: [UInt8], to recipients: [Recipient] = [recipient], armor: Bool = false,
                        threads: Int = 3) throws -> [UInt8] {
        let input = try AgeVectors.temporaryFile(plaintext)
        defer { try? FileManager.default.removeItem(atPath: input) }
        let source = try ByteSource.open(path: input)
        defer { source.close() }
        let sink = MemorySink()
        let encryptor = try AgeFile.Encryptor(recipients: recipients, armor: armor)
        #expect(try encryptor.encrypt(from: source, to: sink, engine: StreamEngine(threads: threads)) == UInt64(plaintext.count))
        return sink.bytes
    }

    /// Decrypts `file`; returns what was released and the error, if any.
    static func decrypt(_ file: [UInt8], identities: [Identity] = [identity],
                        threads: Int = 3) throws -> (released: [UInt8], error: Error?) {
        let path = try AgeVectors.temporaryFile(file)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let kind = try #require(AgeFile.kind(of: try source.peek(AgeFile.sniffLength)))
        let sink = MemorySink()
        do {
            _ = try AgeFile.decrypt(from: source, kind: kind, identities: identities, to: sink, threads: threads)
            return (sink.bytes, nil)
        } catch {
            return (sink.bytes, error)
        }
    }

    static let chunk = AgeStream.chunkSize

    @Test("round trip at chunk boundaries, 1 and 3 threads; a binary file is header + nonce + L + 16 per chunk",
          arguments: [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 5 * chunk + 7])
    func roundTrip(_ size: Int) throws {
        let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for threads in [1, 3] {
            let file = try Self.encrypt(plaintext, threads: threads)
            let header = try #require(file.firstRange(of: Array("\n--- ".utf8))).upperBound + 44
            let chunks = max(1, (size + Self.chunk - 1) / Self.chunk)
            #expect(file.count == header + 16 + size + 16 * chunks)
            let (released, error) = try Self.decrypt(file, threads: threads)
            #expect(error == nil)
            #expect(released == plaintext)
        }
    }

    @Test("armored files: BEGIN/END lines, 64-column lines, and they decrypt", arguments: [0, 47, 48, 100_000])
    func armored(_ size: Int) throws {
        let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let file = try Self.encrypt(plaintext, armor: true)
        let text = String(decoding: file, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first == Substring(AgeArmor.beginLine))
        #expect(lines[lines.count - 2] == Substring(AgeArmor.endLine))
        #expect(lines.last == "")
        #expect(lines.dropFirst().dropLast(2).allSatisfy { (1...64).contains($0.count) })
        #expect(lines.dropFirst().dropLast(3).allSatisfy { $0.count == 64 })
        let (released, error) = try Self.decrypt(file)
        #expect(error == nil)
        #expect(released == plaintext)
    }

    @Test("several recipients: each identity opens the file; another identity does not")
    func severalRecipients() throws {
        let second = X25519Identity(privateKey: Curve25519.KeyAgreement.PrivateKey())
        let pq = HybridIdentity.generate()
        let file = try Self.encrypt(Array("several".utf8),
                                    to: [Self.recipient, X25519Recipient(publicKey: second.privateKey.publicKey)])
        #expect(try Self.decrypt(file, identities: [second]).released == Array("several".utf8))
        #expect(try Self.decrypt(file, identities: [Self.identity]).released == Array("several".utf8))
        let stranger = X25519Identity(privateKey: Curve25519.KeyAgreement.PrivateKey())
        #expect(try Self.decrypt(file, identities: [stranger]).error.map(AgeVectors.failureClass) == "no match")
        let pqFile = try Self.encrypt(Array("pq".utf8), to: [HybridRecipient(publicKey: pq.privateKey.publicKey)])
        #expect(try Self.decrypt(pqFile, identities: [Self.identity, pq]).released == Array("pq".utf8))
    }

    @Test("age's mixing rules: a passphrase stands alone, post-quantum and classic recipients do not mix")
    func mixingRules() throws {
        let passphrase = try AgeScrypt(passphrase: Array("pw".utf8), workFactor: 10)
        #expect(throws: InteropError.self) { try AgeFile.Encryptor(recipients: [passphrase, Self.recipient]) }
        let pq = HybridIdentity.generate()
        #expect(throws: InteropError.self) {
            try AgeFile.Encryptor(recipients: [HybridRecipient(publicKey: pq.privateKey.publicKey), Self.recipient])
        }
        let file = try Self.encrypt(Array("secret".utf8), to: [passphrase])
        #expect(try Self.decrypt(file, identities: [try AgeScrypt(passphrase: Array("pw".utf8))]).released == Array("secret".utf8))
        let wrong = try Self.decrypt(file, identities: [try AgeScrypt(passphrase: Array("nope".utf8))])
        #expect(wrong.error.map(AgeVectors.failureClass) == "no match")
    }

    @Test("a bad tag in chunk 5 of 9: exactly chunks 0-4 are released, whatever the thread count")
    func releaseBeforeError() throws {
        let plaintext = (0..<(9 * Self.chunk)).map { UInt8(truncatingIfNeeded: $0 >> 3) }
        var file = try Self.encrypt(plaintext)
        let payloadStart = file.count - (plaintext.count + 9 * 16)
        file[payloadStart + 5 * (Self.chunk + 16) + 100] ^= 0x01
        for threads in [1, 2, 4] {
            let (released, error) = try Self.decrypt(file, threads: threads)
            #expect(released == Array(plaintext.prefix(5 * Self.chunk)))
            #expect(error.map(AgeVectors.failureClass) == "payload failure")
        }
    }

    @Test("damage: a flipped header byte, a cut payload, appended bytes, a wrong key type")
    func damage() throws {
        let plaintext = (0..<(2 * Self.chunk + 5)).map { UInt8(truncatingIfNeeded: $0) }
        let file = try Self.encrypt(plaintext)
        // The X25519 stanza: "-> X25519 SHARE\nBODY\n". A different share, or a different body (the
        // wrapped file key), each still well-formed base64, no longer unwraps: no key opens the file.
        let stanza = try #require(file.firstRange(of: Array("-> X25519 ".utf8))).upperBound
        let bodyStart = try #require(file[stanza...].firstIndex(of: 0x0A)) + 1
        #expect(bodyStart - stanza == 44, "a 43-letter share")
        for (what, at) in [("share", stanza + 20), ("body", bodyStart + 20)] {
            var damaged = file
            damaged[at] = damaged[at] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            let result = try Self.decrypt(damaged)
            #expect(result.error.map(AgeVectors.failureClass) == "no match", "\(what) changed: \(String(describing: result.error))")
            #expect(result.released.isEmpty)
        }
        // The stanza type changed (X25519 to X25518): a stanza nobody here can open.
        var type = file
        type[stanza - 2] ^= 0x01
        #expect(try Self.decrypt(type).error.map(AgeVectors.failureClass) == "no match")
        var mac = file
        let macAt = try #require(file.firstRange(of: Array("\n--- ".utf8))).upperBound
        mac[macAt + 3] = mac[macAt + 3] == 0x41 ? 0x42 : 0x41
        #expect(try Self.decrypt(mac).error.map(AgeVectors.failureClass) == "HMAC failure")
        let cut = try Self.decrypt(Array(file.dropLast(10)))
        #expect(cut.error.map(AgeVectors.failureClass) == "payload failure")
        #expect(cut.released == Array(plaintext.prefix(2 * Self.chunk)))
        let extended = try Self.decrypt(file + [0])
        #expect(extended.error.map(AgeVectors.failureClass) == "payload failure")
        let noNonce = try Self.decrypt(Array(file.prefix(macAt + 44 + 8)))
        #expect(noNonce.error.map(AgeVectors.failureClass) == "header failure")
        let pq = try Self.decrypt(file, identities: [HybridIdentity.generate()])
        #expect(pq.error.map(AgeVectors.failureClass) == "no match")
        #expect(pq.released.isEmpty)
    }

    @Test("the sniffer tells binary from armored age files (leading whitespace allowed) and from other data")
    func sniffing() throws {
        for vector in AgeVectors.all.vectors where vector.expect == "success" {
            #expect(AgeFile.kind(of: Array(vector.file.prefix(AgeFile.sniffLength))) == (vector.armored ? .armored : .binary),
                    "\(vector.name)")
        }
        #expect(AgeFile.kind(of: Array("coffer/v1\n".utf8)) == nil)
        #expect(AgeFile.kind(of: []) == nil)
    }

    @Test("Ed25519 public keys map to the X25519 key of their seed (u = (1 + y) / (1 − y))")
    func edwardsToMontgomery() throws {
        for _ in 0..<20 {
            let signing = Curve25519.Signing.PrivateKey()
            let seed = Array(signing.rawRepresentation)
            let derived = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(SHA512.hash(data: seed)).prefix(32))
            let converted = Ed25519Conversion.montgomeryU(edwardsY: Array(signing.publicKey.rawRepresentation))
            #expect(converted == Array(derived.publicKey.rawRepresentation))
        }
        // y = 1 (the neutral point) has no u.
        #expect(Ed25519Conversion.montgomeryU(edwardsY: [1] + [UInt8](repeating: 0, count: 31)) == nil)
    }
}
