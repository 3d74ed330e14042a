import Crypto
import Foundation

/// Writes Coffer files: header, payload nonce, STREAM payload.
///
/// One encryptor can write many files that share its file key and stanzas (a directory run):
/// the keys are wrapped once, and each file is told apart by its object name and payload nonce.
public struct CofferEncryptor: Sendable {
    public let fileKey: FileKey
    public let stanzas: [Stanza]

    /// Wraps a fresh file key once for every recipient.
    public init(recipients: [Recipient]) throws {
        guard !recipients.isEmpty else { throw CofferError.noKeyGiven("no key to encrypt to") }
        let key = FileKey.random()
        self.init(fileKey: key, stanzas: try recipients.map { try $0.wrap(key) })
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
        precondition(payloadNonce.count == Limits.payloadNonceSize)
        let header = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey)
        try header.encoded().withUnsafeBytes { try sink.write($0) }
        try payloadNonce.withUnsafeBytes { try sink.write($0) }
        let objectKey = KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName)
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: payloadNonce, cipher: parameters.cipher)
        return try engine.seal(from: source, to: sink, key: payloadKey,
                               cipher: parameters.cipher, chunkSize: parameters.chunkSize)
    }
}

/// A Coffer file whose header was read, and whose payload is about to be.
public struct HeaderReading: Sendable {
    public let header: Header
    /// Offset of the first payload chunk (after the header and the payload nonce).
    public let payloadStart: UInt64
    public let payloadNonce: [UInt8]

    /// Reads and parses the header and the payload nonce from the start of `source`.
    public static func read(from source: ByteSource) throws -> HeaderReading {
        var bytes: [UInt8] = []
        guard let first = try source.readLine(limit: 128) else {
            throw CofferError.notCofferFile(hint: "the input is empty")
        }
        guard first.last == 0x0A else {
            if first.starts(with: Array("coffer/".utf8)) {
                throw CofferError.malformedHeader("the version line does not end")
            }
            throw CofferError.notCofferFile(hint: FormatSniffer.hint(firstBytes: first))
        }
        try Header.checkVersionLine(Substring(String(decoding: first.dropLast(), as: UTF8.self)))
        bytes += first
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
        var nonce = [UInt8](repeating: 0, count: Limits.payloadNonceSize)
        let got = try nonce.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard got == Limits.payloadNonceSize else {
            throw CofferError.truncated("the payload nonce after the header is missing or short")
        }
        return HeaderReading(header: header, payloadStart: UInt64(bytes.count + got), payloadNonce: nonce)
    }

    /// Unwraps the file key with the first identity that opens a stanza and checks the MAC.
    /// When `expectedObjectName` is given (a directory run), the file must have been encrypted
    /// under that name: a file moved or swapped within the run is refused.
    public func open(with identities: [Identity], expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        let fileKey = try HeaderOpener.open(header, with: identities)
        return try open(fileKey: fileKey, expectedObjectName: expectedObjectName)
    }

    /// Opens with a file key already known (e.g. unwrapped once for a whole run).
    public func open(fileKey: FileKey, expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        let objectKey = try header.verifyMAC(fileKey: fileKey)
        if let expected = expectedObjectName, expected != header.parameters.objectName {
            throw CofferError.objectMismatch(expected: String(decoding: expected, as: UTF8.self),
                                             found: header.parameters.objectNameText)
        }
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: payloadNonce,
                                                cipher: header.parameters.cipher)
        return OpenedFile(reading: self, fileKey: fileKey, payloadKey: payloadKey)
    }
}

/// A file whose header authenticated: its payload can now be decrypted.
public struct OpenedFile: Sendable {
    public let reading: HeaderReading
    public let fileKey: FileKey
    let payloadKey: SymmetricKey

    public var header: Header { reading.header }

    /// Decrypts the rest of `source` (positioned right after the payload nonce) into `sink`.
    public func decrypt(from source: ByteSource, to sink: ByteSink, engine: StreamEngine) throws -> UInt64 {
        try engine.open(from: source, to: sink, key: payloadKey, cipher: header.parameters.cipher,
                        chunkSize: header.parameters.chunkSize)
    }

    /// The payload layout of a regular file of `fileSize` bytes.
    public func layout(fileSize: UInt64) throws -> StreamEngine.PayloadLayout {
        guard fileSize >= reading.payloadStart else { throw CofferError.truncated("no payload after the header") }
        return try StreamEngine.PayloadLayout(sealedLength: fileSize - reading.payloadStart,
                                              chunkSize: header.parameters.chunkSize)
    }

    /// The plaintext size, when `source` is a regular file of a valid length (for progress lines).
    public func plaintextSize(of source: ByteSource) -> UInt64? {
        source.regularFileSize.flatMap { try? layout(fileSize: $0).plaintextSize }
    }

    /// Decrypts a byte range of a regular file, reading only the chunks it needs.
    public func decryptRange(from source: ByteSource, offset: UInt64, length: UInt64, to sink: ByteSink,
                             engine: StreamEngine) throws -> UInt64 {
        guard let size = source.regularFileSize else {
            throw CofferError.invalidParameter("--offset/--length need a regular file, not a pipe")
        }
        guard let (_, start) = source.positionedReadStart else {
            throw CofferError.invalidParameter("--offset/--length need a regular file, not a pipe")
        }
        return try engine.openRange(from: source, payloadStart: start, layout: layout(fileSize: size),
                                    offset: offset, length: length, to: sink, key: payloadKey,
                                    cipher: header.parameters.cipher)
    }
}
