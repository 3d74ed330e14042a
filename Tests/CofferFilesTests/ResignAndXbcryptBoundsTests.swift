@_spi(TestVectors) import CofferFormat
@testable import CofferFiles
import CofferKeys
import Foundation
import Testing

/// Issue 10, items 4 and 5 in CofferFiles: a re-signing never launders a key holder's payload, and
/// lengths read from an .xbcrypt file cannot trap the process.
@Suite struct ResignAndXbcryptBounds {
    static func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "coffer-resign-\(UUID().uuidString)-\(name)"
    }

    static func readAll(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// A signed file of `plaintext` under `fileKey` and `nonce`, by `signer`, in 4 KiB chunks.
    static func signed(_ plaintext: [UInt8], key: SymmetricKeyFile, fileKey: FileKey, nonce: [UInt8],
                       signer: Ed25519Signer, digest: SignatureParameters.PayloadDigest) throws -> [UInt8] {
        var encryptor = CofferEncryptor(fileKey: fileKey, stanzas: [try key.wrap(fileKey: fileKey.bytes)[0]])
        encryptor.signer = signer
        encryptor.signatureDigest = digest
        let path = temporaryPath("plain")
        defer { unlink(path) }
        try Data(plaintext).write(to: URL(fileURLWithPath: path))
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let sink = MemorySink()
        _ = try encryptor.encrypt(from: source, to: sink, parameters: HeaderParameters(chunkSize: 4096),
                                  engine: StreamEngine(threads: 2), payloadNonce: nonce)
        return sink.bytes
    }

    @Test("rewrap --sign refuses a payload a key holder rewrote under the producer's signature (both digests); the file is unchanged",
          arguments: SignatureParameters.PayloadDigest.allCases)
    func keyHolderPayloadNotLaundered(digest: SignatureParameters.PayloadDigest) throws {
        let key = SymmetricKeyFile.generate()
        let producer = Ed25519Signer(), insider = Ed25519Signer(), newSigner = Ed25519Signer()
        let fileKey = FileKey.random()
        let nonce = [UInt8](repeating: 5, count: 16)
        // The insider holds the file key: its own payload, under the same key and nonce,
        // authenticates chunk by chunk behind the producer's header and trailer.
        let genuine = try Self.signed(Array(repeating: 0x41, count: 20_000), key: key, fileKey: fileKey, nonce: nonce,
                                      signer: producer, digest: digest)
        let forged = try Self.signed(Array(repeating: 0x42, count: 20_000), key: key, fileKey: fileKey, nonce: nonce,
                                     signer: insider, digest: digest)
        let trailer = SignatureParameters().trailerSize
        let spliced = Array(forged.dropLast(trailer)) + genuine.suffix(trailer)
        let path = Self.temporaryPath("spliced.cof")
        defer { unlink(path) }
        try Data(spliced).write(to: URL(fileURLWithPath: path))

        var rewrap = CofferFiles.Rewrap()
        rewrap.signer = newSigner
        // Without naming the producer: its signature cannot be checked, so nothing is signed.
        #expect(throws: AccessError.self) { _ = try rewrap.rewrap(path: path, identities: [key]) }
        #expect(try Self.readAll(path) == spliced)
        // Naming it: the signature does not match the payload, so nothing is signed either.
        rewrap.signedBy = [producer.verifier]
        do {
            _ = try rewrap.rewrap(path: path, identities: [key])
            Issue.record("the insider's payload was signed by the new signer")
        } catch CofferError.signatureInvalid {
        }
        #expect(try Self.readAll(path) == spliced)

        // The genuine file is re-signed, and the new signature then checks.
        try Data(genuine).write(to: URL(fileURLWithPath: path))
        let result = try rewrap.rewrap(path: path, identities: [key])
        #expect(result.signed)
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let reading = try HeaderReading.read(from: source)
        #expect(try reading.verifySignature(in: source, verifiers: [newSigner.verifier], engine: StreamEngine(threads: 1)).label
                == newSigner.verifier.label)
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// A chunk header (XBCRYP03, with its IV) claiming `payload` bytes, followed by `body`.
    static func chunk(claiming payload: UInt64, body: [UInt8] = []) -> [UInt8] {
        Array("XBCRYP03".utf8) + le(0, 8) + le(32, 8) + le(payload, 8) + le(0, 4) + le(16, 8)
            + [UInt8](repeating: 0, count: 16) + body
    }

    @Test("chunk lengths in an .xbcrypt file that overflow, or point past its end, are errors, not a trapped process")
    func xbcryptLengths() throws {
        let path = Self.temporaryPath("crafted.xbcrypt")
        defer { unlink(path) }
        for claimed in [UInt64.max, UInt64.max - 59, UInt64.max - 100, 1 << 63, UInt64(256 << 20) + 1, 1000] {
            // A first chunk that is well formed, so that the second starts at a non-zero offset.
            let bytes = Self.chunk(claiming: 4, body: [1, 2, 3, 4]) + Self.chunk(claiming: claimed, body: [9, 9])
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            #expect(throws: CofferError.self, "claimed \(claimed)") { _ = try Migration.isXbcryptVerifiable(path) }
        }
        // A well-formed file is still recognised.
        try Data(Self.chunk(claiming: 4, body: [1, 2, 3, 4]) + Self.chunk(claiming: 0)).write(to: URL(fileURLWithPath: path))
        #expect(try Migration.isXbcryptVerifiable(path))
    }
}
