import Crypto
import Foundation

/// A file whose header authenticated: its payload can now be decrypted.
public struct OpenedFile: Sendable {
    public let reading: HeaderReading
    /// The header that authenticated (in version 2, the slot that opened).
    public let header: Header
    public let fileKey: FileKey
    let payloadKey: SymmetricKey

    /// Decrypts the rest of `source` (positioned right after the payload nonce) into `sink`.
    /// With `signedBy`, the file must carry a valid signature by one of those keys: an unsigned
    /// file or another signer is refused before any output. From a regular file with
    /// `signatureFirst` (the default), the whole signature is checked before the first byte is
    /// written (a pass that hashes the ciphertext; with `chunk-tags`, one that authenticates every
    /// chunk, since a tag alone proves nothing), and again over the chunks as they are opened.
    /// Otherwise (a pipe, or `signatureFirst` false for a sink that publishes nothing until it
    /// completes, such as an atomic output file) a signature that does not match the payload is
    /// found at the end, after the plaintext was written to `sink`.
    public func decrypt(from source: ByteSource, to sink: ByteSink, engine: StreamEngine,
                        signedBy verifiers: [SignatureVerifier] = [], signatureFirst: Bool = true) throws -> UInt64 {
        let parameters = header.parameters
        let signature = try reading.requireSignature(verifiers: verifiers)
        var trailer: PayloadSignatureTrailer?
        if signature != nil, !verifiers.isEmpty, let (size, start) = source.positionedReadStart {
            // A regular file: the trailer is read first, so a wrong signer is refused before any output.
            trailer = try reading.readTrailer(from: source, fileSize: size)
            do {
                try trailer!.checkSigners(verifiers)
            } catch let refusal as AccessError {
                // A file cut short or extended shows payload bytes where the trailer should be, and
                // they read as unknown signers: the final chunk tells which it is.
                try engine.authenticateFinalChunk(from: source, payloadStart: start, layout: layout(fileSize: size),
                                                  key: payloadKey, cipher: parameters.cipher)
                throw refusal
            }
            if signatureFirst {
                let first = StreamEngine(threads: engine.threads)
                if signature!.digest == .chunkTags {
                    // Signed tags say nothing of a chunk that does not authenticate: open them all first.
                    let payload = try authenticatedSignedPayload(of: source, fileSize: size, engine: first, digest: .chunkTags)
                    _ = try trailer!.verify(payload, parameters: parameters, verifiers: verifiers)
                } else {
                    _ = try reading.verifySignature(in: source, verifiers: verifiers, engine: first, parameters: parameters)
                }
            }
        }
        let summary = try engine.open(from: source, to: sink, key: payloadKey, cipher: parameters.cipher,
                                      chunkSize: parameters.chunkSize, trailerSize: parameters.trailerSize,
                                      digest: verifiers.isEmpty ? nil : signature?.digest)
        if let signature, !verifiers.isEmpty {
            if trailer == nil { trailer = try PayloadSignatureTrailer.parse(source.withheldTail(), parameters: signature) }
            let payload = SignedPayload(payloadNonce: reading.payloadNonce, plaintextLength: summary.plaintextLength,
                                        chunkCount: summary.chunkCount, digest: summary.digest!)
            _ = try trailer!.verify(payload, parameters: parameters, verifiers: verifiers)
        }
        return summary.plaintextLength
    }

    /// The payload layout of a regular file of `fileSize` bytes.
    public func layout(fileSize: UInt64) throws -> StreamEngine.PayloadLayout {
        try reading.layout(fileSize: fileSize)
    }

    /// The plaintext size, when `source` is a regular file of a valid length (for progress lines).
    public func plaintextSize(of source: ByteSource) -> UInt64? {
        source.regularFileSize.flatMap { try? layout(fileSize: $0).plaintextSize }
    }

    /// Decrypts a byte range of a regular file, reading only the chunks it needs. With `signedBy`,
    /// the whole payload's signature is checked first (a pass that hashes without decrypting).
    public func decryptRange(from source: ByteSource, offset: UInt64, length: UInt64, to sink: ByteSink,
                             engine: StreamEngine, signedBy verifiers: [SignatureVerifier] = []) throws -> UInt64 {
        guard let size = source.regularFileSize else {
            throw CofferError.invalidParameter("a byte range can be decrypted only from a regular file, not from a pipe")
        }
        guard let (_, start) = source.positionedReadStart else {
            throw CofferError.invalidParameter("a byte range can be decrypted only from a regular file, not from a pipe")
        }
        if !verifiers.isEmpty {
            _ = try reading.verifySignature(in: source, verifiers: verifiers, engine: engine, parameters: header.parameters)
        }
        return try engine.openRange(from: source, payloadStart: start, layout: layout(fileSize: size),
                                    offset: offset, length: length, to: sink, key: payloadKey,
                                    cipher: header.parameters.cipher)
    }
}

extension HeaderReading {
    /// The file's signature parameters; throws when signers are required but the file is unsigned.
    func requireSignature(verifiers: [SignatureVerifier]) throws -> SignatureParameters? {
        let signature = header.parameters.signature
        if !verifiers.isEmpty, signature == nil {
            throw AccessError.signerNotAccepted(found: [], accepted: verifiers.map(\.label))
        }
        return signature
    }

    /// The signature trailer at the end of a regular file; nil when the file is unsigned.
    public func readTrailer(from source: ByteSource, fileSize: UInt64) throws -> PayloadSignatureTrailer? {
        guard let signature = header.parameters.signature else { return nil }
        _ = try layout(fileSize: fileSize)
        var bytes = [UInt8](repeating: 0, count: signature.trailerSize)
        let got = try bytes.withUnsafeMutableBytes { try source.read(into: $0, at: fileSize - UInt64(signature.trailerSize)) }
        guard got == bytes.count else { throw CofferError.truncated("the signature trailer is cut short") }
        return try PayloadSignatureTrailer.parse(bytes, parameters: signature)
    }

    /// Checks a regular file's signature without decrypting it (no file key needed): the payload is
    /// hashed as it stands. Proves the ciphertext is the signer's; decrypting still authenticates
    /// every chunk under the file key. `parameters` default to the newest slot's (a rewrap keeps
    /// the parameter lines, so both slots agree).
    public func verifySignature(in source: ByteSource, verifiers: [SignatureVerifier], engine: StreamEngine,
                                parameters: HeaderParameters? = nil) throws -> SignatureVerifier {
        let parameters = parameters ?? header.parameters
        guard let size = source.regularFileSize else {
            throw CofferError.invalidParameter("checking a signature without decrypting needs a regular file, not a pipe")
        }
        guard try requireSignature(verifiers: verifiers) != nil, let trailer = try readTrailer(from: source, fileSize: size) else {
            throw CofferError.invalidParameter("no signer given to check the signature against")
        }
        try trailer.checkSigners(verifiers)
        let payload = try signedPayload(of: source, fileSize: size, engine: engine)
        return try trailer.verify(payload, parameters: parameters, verifiers: verifiers)
    }

    /// What a signature of this regular file covers, computed by hashing the sealed payload.
    public func signedPayload(of source: ByteSource, fileSize: UInt64, engine: StreamEngine,
                              digest: SignatureParameters.PayloadDigest? = nil) throws -> SignedPayload {
        guard let kind = digest ?? header.parameters.signature?.digest else {
            throw CofferError.invalidParameter("the file declares no signature digest")
        }
        let summary = try engine.digestPayload(from: source, payloadStart: payloadStart, layout: layout(fileSize: fileSize),
                                               kind: kind)
        return SignedPayload(payloadNonce: payloadNonce, plaintextLength: summary.plaintextLength,
                             chunkCount: summary.chunkCount, digest: summary.digest!)
    }
}
