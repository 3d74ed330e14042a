import Crypto
import Foundation

/// Writes Coffer files: header, payload nonce, STREAM payload.
///
/// One encryptor can write many files that share its file key and stanzas (a directory run):
/// the keys are wrapped once, and each file is told apart by its object name and payload nonce.
public struct CofferEncryptor: Sendable {
    public let fileKey: FileKey
    public let stanzas: [Stanza]

    /// Which file version to write. Version 2 (the default) keeps two header slots so the keys
    /// can be changed later in place (`coffer rewrap`); nil slot size: ``Header/defaultSlotSize(forTextSize:)``.
    public enum FileVersion: Equatable, Sendable {
        case v1
        case v2(slotSize: Int?)
    }
    public var version: FileVersion = .v2(slotSize: nil)

    /// Signs each file written (docs/FORMAT.md, "Signatures"): a `signed` header line, and a
    /// trailer after the final chunk. Version 2 only.
    public var signer: PayloadSigner?
    public var signatureDigest: SignatureParameters.PayloadDigest = .chunkSHA256

    /// Wraps a fresh file key once for every recipient.
    public init(recipients: [Recipient]) throws {
        guard !recipients.isEmpty else { throw AccessError.noRecipient("no key to encrypt to") }
        let key = FileKey.random()
        self.init(fileKey: key, stanzas: try recipients.flatMap { try $0.wrap(fileKey: key.bytes) })
    }

    public init(fileKey: FileKey, stanzas: [Stanza]) {
        self.fileKey = fileKey
        self.stanzas = stanzas
    }

    /// Encrypts all of `source` into `sink`; returns the plaintext byte count.
    public func encrypt(from source: ByteSource, to sink: ByteSink, parameters: HeaderParameters,
                        engine: StreamEngine) throws -> UInt64 {
        var nonce = [UInt8](repeating: 0, count: Limits.payloadNonceSize)
        SymmetricKey(size: .bits128).withUnsafeBytes { nonce = Array($0) }
        return try encrypt(from: source, to: sink, parameters: parameters, engine: engine, payloadNonce: nonce)
    }

    /// Deterministic variant for test vectors only: a caller-chosen payload nonce.
    /// Reusing a nonce with the same file key and object name reuses the payload key; never do that.
    @_spi(TestVectors)
    public func encrypt(from source: ByteSource, to sink: ByteSink, parameters: HeaderParameters,
                        engine: StreamEngine, payloadNonce: [UInt8]) throws -> UInt64 {
        try encrypt(from: source, to: sink, parameters: parameters, engine: engine, payloadNonce: payloadNonce,
                    slot: 0, generation: 1)
    }
}

extension CofferEncryptor {
    /// Writes the header (version 1) or the lead line and both slots (version 2, the header in
    /// `slot` with `generation`, the other slot empty).
    func writeHeader(to sink: ByteSink, parameters: HeaderParameters, slot: Int = 0, generation: UInt64 = 1) throws {
        switch version {
        case .v1:
            let header = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey)
            try header.encoded().withUnsafeBytes { try sink.write($0) }
        case .v2(let requested):
            var size = requested ?? 0
            if requested == nil {
                let probe = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey,
                                              layout: .slots(size: Limits.maxHeaderSize, generation: generation))
                size = Header.defaultSlotSize(forTextSize: probe.slotText().count)
            }
            let header = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey,
                                           layout: .slots(size: size, generation: generation))
            let empty = [UInt8](repeating: 0, count: size)
            var bytes = Array("\(header.leadLine)\n".utf8)
            bytes += slot == 0 ? header.encodedSlot() + empty : empty + header.encodedSlot()
            try bytes.withUnsafeBytes { try sink.write($0) }
        }
    }

    /// Writes only the header (version 2: lead line and both slots), for a rewrap that copies an
    /// existing payload behind it.
    public func writeHeaderOnly(to sink: ByteSink, parameters: HeaderParameters) throws {
        try writeHeader(to: sink, parameters: parameters)
    }

    /// Deterministic variant for test vectors only: the header in slot 1 with a later generation,
    /// as a rewrap leaves it.
    @_spi(TestVectors)
    public func encrypt(from source: ByteSource, to sink: ByteSink, parameters: HeaderParameters,
                        engine: StreamEngine, payloadNonce: [UInt8], slot: Int, generation: UInt64) throws -> UInt64 {
        precondition(payloadNonce.count == Limits.payloadNonceSize)
        // Whether the file is signed follows from the signer alone (parameters copied from another
        // file, by reencrypt say, may declare a signature that this encryptor cannot make).
        var parameters = parameters
        parameters.signature = nil
        if let signer {
            guard version != .v1 else { throw CofferError.invalidParameter("signatures need file version 2") }
            parameters.signature = SignatureParameters(algorithm: signer.algorithm, digest: signatureDigest)
        }
        try writeHeader(to: sink, parameters: parameters, slot: slot, generation: generation)
        try payloadNonce.withUnsafeBytes { try sink.write($0) }
        let objectKey = KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName)
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: payloadNonce, cipher: parameters.cipher)
        let summary = try engine.seal(from: source, to: sink, key: payloadKey, cipher: parameters.cipher,
                                      chunkSize: parameters.chunkSize, digest: parameters.signature?.digest)
        if let signer, let signature = parameters.signature {
            let payload = SignedPayload(payloadNonce: payloadNonce, plaintextLength: summary.plaintextLength,
                                        chunkCount: summary.chunkCount, digest: summary.digest!)
            let trailer = try payload.trailer(signedBy: signer, parameters: parameters)
            try trailer.encoded(signature).withUnsafeBytes { try sink.write($0) }
        }
        return summary.plaintextLength
    }
}
