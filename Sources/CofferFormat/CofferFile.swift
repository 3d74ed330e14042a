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
        guard !recipients.isEmpty else { throw CofferError.noKeyGiven("no key to encrypt to") }
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

/// A Coffer file whose header was read, and whose payload is about to be.
public struct HeaderReading: Sendable {
    /// The header to use: version 1's only header, or version 2's valid slot with the highest generation.
    public let header: Header
    /// Version 2: the other slot's header when it is valid too (an older generation, present only
    /// when a rewrap was interrupted after writing its new slot). Tried when `header` does not open.
    public let alternate: Header?
    /// Version 2: slots that could not be parsed, with the reason (an interrupted rewrap, or damage).
    public let damagedSlots: [(slot: Int, reason: String)]
    /// Version 2: the slot `header` was read from.
    public let activeSlot: Int?
    /// Offset of the first payload chunk (after the header and the payload nonce).
    public let payloadStart: UInt64
    public let payloadNonce: [UInt8]

    /// Bytes before the payload nonce: the header, or the lead line and both slots.
    public var headerLength: UInt64 { payloadStart - UInt64(Limits.payloadNonceSize) }

    /// Version 2: the file offset of slot `index` (0 or 1).
    public func slotOffset(_ index: Int) -> UInt64? {
        guard case .slots(let size, _) = header.layout else { return nil }
        return UInt64(header.leadLine.utf8.count + 1 + index * size)
    }

    /// Reads and parses the header and the payload nonce from the start of `source`.
    public static func read(from source: ByteSource) throws -> HeaderReading {
        guard let first = try source.readLine(limit: 128) else {
            throw CofferError.notCofferFile(hint: "the input is empty")
        }
        guard first.last == 0x0A else {
            if first.starts(with: Array("coffer/".utf8)) {
                throw CofferError.malformedHeader("the version line does not end")
            }
            throw CofferError.notCofferFile(hint: FormatSniffer.hint(firstBytes: first))
        }
        let firstLine = Substring(String(decoding: first.dropLast(), as: UTF8.self))
        if let size = try Header.slotSize(leadLine: firstLine) {
            return try readSlots(from: source, leadLength: first.count, size: size)
        }
        try Header.checkVersionLine(firstLine)
        var bytes = first
        while true {
            let remaining = Limits.maxHeaderSize - bytes.count
            guard remaining > 0, let line = try source.readLine(limit: remaining) else {
                throw bytes.count >= Limits.maxHeaderSize
                    ? CofferError.malformedHeader("no MAC line within \(Limits.maxHeaderSize) bytes")
                    : CofferError.truncated("the header ends before its MAC line")
            }
            bytes += line
            if line.starts(with: Array("---".utf8)) {
                guard line.last == 0x0A else { throw CofferError.truncated("the header's MAC line is cut short") }
                break
            }
        }
        let header = try Header.parse(bytes)
        let nonce = try readNonce(from: source)
        return HeaderReading(header: header, alternate: nil, damagedSlots: [], activeSlot: nil,
                             payloadStart: UInt64(bytes.count + nonce.count), payloadNonce: nonce)
    }

    static func readNonce(from source: ByteSource) throws -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: Limits.payloadNonceSize)
        let got = try nonce.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard got == Limits.payloadNonceSize else {
            throw CofferError.truncated("the payload nonce after the header is missing or short")
        }
        return nonce
    }

    /// Version 2: both slots, then the nonce. A slot that does not parse is set aside as long as
    /// the other one does (a rewrap interrupted while writing it leaves exactly that).
    static func readSlots(from source: ByteSource, leadLength: Int, size: Int) throws -> HeaderReading {
        var valid: [(slot: Int, header: Header)] = []
        var damaged: [(slot: Int, reason: String)] = []
        var firstError: Error?
        for index in 0..<2 {
            var slot = [UInt8](repeating: 0, count: size)
            let got = try slot.withUnsafeMutableBytes { try source.readFully(into: $0) }
            guard got == size else { throw CofferError.truncated("header slot \(index + 1) is cut short") }
            do {
                if let header = try Header.parseSlot(slot, size: size) { valid.append((index, header)) }
            } catch {
                firstError = firstError ?? error
                damaged.append((index, "\(error)"))
            }
        }
        guard let newest = valid.max(by: { $0.header.generation! < $1.header.generation! }) else {
            throw firstError ?? CofferError.malformedHeader("both header slots are empty")
        }
        if valid.count == 2 && valid[0].header.generation == valid[1].header.generation {
            throw CofferError.malformedHeader("both header slots have generation \(newest.header.generation!)")
        }
        let older = valid.first { $0.slot != newest.slot }
        let nonce = try readNonce(from: source)
        return HeaderReading(header: newest.header, alternate: older?.header, damagedSlots: damaged,
                             activeSlot: newest.slot,
                             payloadStart: UInt64(leadLength + 2 * size + nonce.count), payloadNonce: nonce)
    }

    /// Unwraps the file key with the first identity that opens a stanza and checks the MAC.
    /// When `expectedObjectName` is given (a directory run), the file must have been encrypted
    /// under that name: a file moved or swapped within the run is refused.
    public func open(with identities: [Identity], expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        var firstError: Error?
        for candidate in [header] + (alternate.map { [$0] } ?? []) {
            do {
                let fileKey = try HeaderOpener.open(candidate, with: identities)
                return try open(fileKey: fileKey, header: candidate, expectedObjectName: expectedObjectName)
            } catch {
                firstError = firstError ?? error
            }
        }
        throw firstError!
    }

    /// Opens with a file key already known (e.g. unwrapped once for a whole run).
    public func open(fileKey: FileKey, expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        do {
            return try open(fileKey: fileKey, header: header, expectedObjectName: expectedObjectName)
        } catch CofferError.headerMACMismatch where alternate != nil {
            return try open(fileKey: fileKey, header: alternate!, expectedObjectName: expectedObjectName)
        }
    }

    func open(fileKey: FileKey, header: Header, expectedObjectName: [UInt8]?) throws -> OpenedFile {
        let objectKey = try header.verifyMAC(fileKey: fileKey)
        if let expected = expectedObjectName, expected != header.parameters.objectName {
            throw CofferError.objectMismatch(expected: String(decoding: expected, as: UTF8.self),
                                             found: header.parameters.objectNameText)
        }
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: payloadNonce,
                                                cipher: header.parameters.cipher)
        return OpenedFile(reading: self, header: header, fileKey: fileKey, payloadKey: payloadKey)
    }
}

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
            } catch let refusal as CofferError {
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
            throw CofferError.invalidParameter("--offset/--length need a regular file, not a pipe")
        }
        guard let (_, start) = source.positionedReadStart else {
            throw CofferError.invalidParameter("--offset/--length need a regular file, not a pipe")
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
    /// The payload layout of a regular file of `fileSize` bytes (the signature trailer excluded).
    public func layout(fileSize: UInt64) throws -> StreamEngine.PayloadLayout {
        guard fileSize >= payloadStart else { throw CofferError.truncated("no payload after the header") }
        return try StreamEngine.PayloadLayout(sealedLength: fileSize - payloadStart,
                                              chunkSize: header.parameters.chunkSize,
                                              trailerSize: header.parameters.trailerSize)
    }

    /// The file's signature parameters; throws when signers are required but the file is unsigned.
    func requireSignature(verifiers: [SignatureVerifier]) throws -> SignatureParameters? {
        let signature = header.parameters.signature
        if !verifiers.isEmpty, signature == nil {
            throw CofferError.signerNotAccepted(found: [], accepted: verifiers.map(\.label))
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
