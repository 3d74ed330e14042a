import Crypto
import Foundation

/// A producer signature (docs/FORMAT.md, "Signatures"): declared by a `signed` header line,
/// written as a trailer after the final chunk, so encryption stays one streaming pass.
public struct SignatureParameters: Equatable, Sendable {
    public enum Algorithm: String, Sendable, CaseIterable {
        case ed25519
        /// ML-DSA-65 (FIPS 204), a post-quantum signature.
        case mlDSA65 = "ml-dsa-65"
        /// Bytes of one signature.
        public var signatureSize: Int {
            switch self {
            case .ed25519: return 64
            case .mlDSA65: return 3309
            }
        }
    }

    /// What the signature says about the payload.
    public enum PayloadDigest: String, Sendable, CaseIterable {
        /// SHA-256 of every sealed chunk (ciphertext and tag), computed by the workers in parallel,
        /// then SHA-256 over those chunk digests in order. Binds every ciphertext byte, so not even
        /// someone holding the file key can alter the payload under the signature.
        case chunkSHA256 = "chunk-sha256"
        /// SHA-256 over the chunks' 16-byte AEAD tags in order: nearly free, but the tags are not
        /// collision-resistant for someone who knows the payload key (GHASH and Poly1305 are linear
        /// under a known key), so a holder of a decryption key could change chunks under the same
        /// signature. It still proves origin against everyone who cannot decrypt.
        case chunkTags = "chunk-tags"
    }

    public var algorithm: Algorithm
    public var digest: PayloadDigest

    public init(algorithm: Algorithm = .ed25519, digest: PayloadDigest = .chunkSHA256) {
        self.algorithm = algorithm
        self.digest = digest
    }

    /// The header line, without its line feed.
    var headerLine: String { "signed \(algorithm.rawValue) \(digest.rawValue)" }

    static func parse(headerLine line: Substring) throws -> SignatureParameters {
        let words = line.split(separator: " ", omittingEmptySubsequences: false)
        guard words.count == 3, words[0] == "signed",
              let algorithm = Algorithm(rawValue: String(words[1])),
              let digest = PayloadDigest(rawValue: String(words[2])) else {
            throw CofferError.malformedHeader(
                "the signature line must be 'signed ALGORITHM DIGEST' with ALGORITHM ed25519 or ml-dsa-65 and DIGEST chunk-sha256 or chunk-tags")
        }
        return SignatureParameters(algorithm: algorithm, digest: digest)
    }

    /// Bytes of one trailer slot: the signer's 8-byte key id, then the signature.
    public var trailerSlotSize: Int { PayloadSignatureTrailer.keyIDSize + algorithm.signatureSize }
    /// Bytes of the whole trailer: two slots, so that a re-signing writes one and then clears the other.
    public var trailerSize: Int { 2 * trailerSlotSize }
}

/// A private signing key, as the keys layer provides it.
public protocol PayloadSigner: Sendable {
    var algorithm: SignatureParameters.Algorithm { get }
    /// The signer's 8-byte key id, written beside the signature so verifiers find their key.
    var keyID: [UInt8] { get }
    func sign(_ message: [UInt8]) throws -> [UInt8]
    /// The matching public key: a re-signing checks the signer's own earlier signature with it.
    var publicVerifier: SignatureVerifier { get }
}

/// A public key a reader accepts signatures from (`--signed-by`).
public protocol SignatureVerifier: Sendable {
    var algorithm: SignatureParameters.Algorithm { get }
    var keyID: [UInt8] { get }
    func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool
    /// How messages name this key ("ed25519 3f2a…").
    var label: String { get }
}

/// The trailer after the final chunk: two slots, each the signer's key id and a signature, or all
/// zero bytes when empty.
public struct PayloadSignatureTrailer: Equatable, Sendable {
    public static let keyIDSize = 8

    public struct Entry: Equatable, Sendable {
        public var keyID: [UInt8]
        public var signature: [UInt8]
        public init(keyID: [UInt8], signature: [UInt8]) {
            self.keyID = keyID
            self.signature = signature
        }
        public var keyIDText: String { Hex.encode(keyID) }
    }

    public var slots: [Entry?]
    public let algorithm: SignatureParameters.Algorithm

    public init(slots: [Entry?], algorithm: SignatureParameters.Algorithm) {
        precondition(slots.count == 2)
        self.slots = slots
        self.algorithm = algorithm
    }

    /// How messages name the signers in the trailer ("ed25519 3f2a…").
    public var signerLabels: [String] { entries.map { "\(algorithm.rawValue) \($0.keyIDText)" } }

    /// What is wrong with the trailer's structure, found without any public key; nil when nothing
    /// is (docs/FORMAT.md, "Signatures"). A signed file whose trailer holds no signature, or a slot
    /// whose key id or signature is all zero bytes, was damaged or stripped after signing. Whether
    /// a signature is genuine only a public key can tell (``verify(_:parameters:verifiers:)``).
    public var structuralDamage: String? {
        if entries.isEmpty { return "the file declares a signature but its trailer holds none (both slots are empty)" }
        for (index, slot) in slots.enumerated() {
            guard let slot else { continue }
            if slot.keyID.allSatisfy({ $0 == 0 }) {
                return "trailer slot \(index + 1) holds a signature without a key id (zero bytes)"
            }
            if slot.signature.allSatisfy({ $0 == 0 }) {
                return "trailer slot \(index + 1) names key id \(slot.keyIDText) but its signature is zero bytes"
            }
        }
        return nil
    }

    public var entries: [Entry] { slots.compactMap { $0 } }

    public func encoded(_ parameters: SignatureParameters) -> [UInt8] {
        var out: [UInt8] = []
        for slot in slots {
            if let slot {
                out += slot.keyID + slot.signature
            } else {
                out += [UInt8](repeating: 0, count: parameters.trailerSlotSize)
            }
        }
        return out
    }

    public static func parse(_ bytes: [UInt8], parameters: SignatureParameters) throws -> PayloadSignatureTrailer {
        guard bytes.count == parameters.trailerSize else {
            throw CofferError.truncated("the signature trailer is \(bytes.count) bytes, not \(parameters.trailerSize)")
        }
        var slots: [Entry?] = []
        for index in 0..<2 {
            let slot = Array(bytes[(index * parameters.trailerSlotSize)..<((index + 1) * parameters.trailerSlotSize)])
            if slot.allSatisfy({ $0 == 0 }) {
                slots.append(nil)
            } else {
                slots.append(Entry(keyID: Array(slot[..<keyIDSize]), signature: Array(slot[keyIDSize...])))
            }
        }
        return PayloadSignatureTrailer(slots: slots, algorithm: parameters.algorithm)
    }

    /// Whether `verifier` is the key that made `entry`: its key id, and this trailer's algorithm.
    func isSigner(_ verifier: SignatureVerifier, of entry: Entry) -> Bool {
        verifier.keyID == entry.keyID && verifier.algorithm == algorithm
    }

    /// Refuses, before any work, a trailer that holds no signature by an accepted key.
    public func checkSigners(_ verifiers: [SignatureVerifier]) throws {
        guard entries.contains(where: { entry in verifiers.contains { isSigner($0, of: entry) } }) else {
            throw AccessError.signerNotAccepted(found: signerLabels, accepted: verifiers.map(\.label))
        }
    }

    /// Checks that a signer in `verifiers` signed `payload` (any accepted signer will do).
    /// Unsigned or signed-by-others: ``AccessError/signerNotAccepted(found:accepted:)``; an
    /// accepted signer's signature that does not verify: ``CofferError/signatureInvalid(_:)``.
    public func verify(_ payload: SignedPayload, parameters: HeaderParameters, verifiers: [SignatureVerifier]) throws -> SignatureVerifier {
        var invalid: SignatureVerifier?
        for entry in entries {
            for verifier in verifiers where isSigner(verifier, of: entry) {
                let message = payload.message(parameters: parameters, keyID: entry.keyID)
                if verifier.isValidSignature(entry.signature, for: message) { return verifier }
                invalid = verifier
            }
        }
        if let invalid {
            throw CofferError.signatureInvalid(
                "the signature by \(invalid.label) does not match the file: it was altered after signing")
        }
        throw AccessError.signerNotAccepted(found: signerLabels, accepted: verifiers.map(\.label))
    }
}

extension OpenedFile {
    /// Authenticates every chunk of a regular file's payload under the file key, writing nothing,
    /// and returns what a signature of it covers (`kind` digest). What a re-signing signs: only
    /// a payload that opens, hashed in the same pass that opened it.
    public func authenticatedSignedPayload(of source: ByteSource, fileSize: UInt64, engine: StreamEngine,
                                           digest kind: SignatureParameters.PayloadDigest) throws -> SignedPayload {
        let layout = try reading.layout(fileSize: fileSize)
        var digester = PayloadDigester(kind: kind)
        _ = try engine.openChunks(from: source, payloadStart: reading.payloadStart, layout: layout,
                                  chunks: 0...(layout.chunkCount - 1), key: payloadKey, cipher: header.parameters.cipher,
                                  digest: kind) { slot in
            digester.add(slot.digest)
            return UInt64(slot.inputCount - Limits.tagSize)
        }
        return SignedPayload(payloadNonce: reading.payloadNonce, plaintextLength: layout.plaintextSize,
                             chunkCount: layout.chunkCount, digest: digester.finalize())
    }
}

extension HeaderReading {
    /// The signature trailer as it stands, unchecked (no public key needed): read from a regular
    /// file, or the tail a pipe withheld once its payload was read. Nil when the file is unsigned.
    public func unverifiedTrailer(in source: ByteSource) throws -> PayloadSignatureTrailer? {
        guard let signature = header.parameters.signature else { return nil }
        if let size = source.regularFileSize { return try readTrailer(from: source, fileSize: size) }
        return try PayloadSignatureTrailer.parse(source.withheldTail(), parameters: signature)
    }
}

/// What a signature covers besides the header's parameter lines: the payload nonce, the payload's
/// plaintext length and chunk count, and the payload digest.
public struct SignedPayload: Equatable, Sendable {
    public var payloadNonce: [UInt8]
    public var plaintextLength: UInt64
    public var chunkCount: UInt64
    public var digest: [UInt8]

    /// For objects sealed in memory (the repository's): what their signature covers.
    public init(payloadNonce: [UInt8], plaintextLength: UInt64, chunkCount: UInt64, digest: [UInt8]) {
        self.payloadNonce = payloadNonce; self.plaintextLength = plaintextLength
        self.chunkCount = chunkCount; self.digest = digest
    }

    /// The exact bytes signed (docs/FORMAT.md, "Signatures"). The stanzas and the slot generation
    /// are left out, so a rewrap that changes who can decrypt keeps the signature valid.
    public func message(parameters: HeaderParameters, keyID: [UInt8]) -> [UInt8] {
        var text = "coffer/v2 signature\n"
        text += "signer \(Hex.encode(keyID))\n"
        text += parameters.headerLines()
        text += "nonce \(RawBase64.encode(payloadNonce))\n"
        text += "plaintext-length \(plaintextLength)\n"
        text += "chunks \(chunkCount)\n"
        text += "digest \(RawBase64.encode(digest))\n"
        return Array(text.utf8)
    }
}

extension SignedPayload {
    /// A new trailer holding one signature, by `signer`, in its first slot.
    public func trailer(signedBy signer: PayloadSigner, parameters: HeaderParameters) throws -> PayloadSignatureTrailer {
        let signature = try signer.sign(message(parameters: parameters, keyID: signer.keyID))
        return PayloadSignatureTrailer(slots: [.init(keyID: signer.keyID, signature: signature), nil], algorithm: signer.algorithm)
    }
}

/// Accumulates the payload digest from chunk digests taken in order.
struct PayloadDigester {
    let kind: SignatureParameters.PayloadDigest
    private var hasher = SHA256()
    private(set) var chunkCount: UInt64 = 0

    init(kind: SignatureParameters.PayloadDigest) { self.kind = kind }

    /// The per-chunk part, computed on a worker thread: SHA-256 of the sealed chunk, or its tag.
    static func chunkDigest(kind: SignatureParameters.PayloadDigest, sealed parts: [UnsafeRawBufferPointer]) -> [UInt8] {
        switch kind {
        case .chunkSHA256:
            var h = SHA256()
            for part in parts { h.update(bufferPointer: part) }
            return Array(h.finalize())
        case .chunkTags:
            // The tag is the last 16 bytes of the sealed chunk, which may span the parts.
            var tail: [UInt8] = []
            for part in parts.reversed() where tail.count < Limits.tagSize {
                tail = Array(part.suffix(Limits.tagSize - tail.count)) + tail
            }
            return tail
        }
    }

    mutating func add(_ chunkDigest: [UInt8]) {
        hasher.update(data: chunkDigest)
        chunkCount += 1
    }

    func finalize() -> [UInt8] { Array(hasher.finalize()) }
}
