import CofferFormat
import CofferKeys
import Foundation

/// Decrypting or verifying one Coffer file (not a directory run): the header is read once and
/// opened with the keys passed in, then the payload is decrypted, all of it or a byte range.
/// The command-line tool tells the format first (``FormatDetector``); age and .xbcrypt files have
/// their own readers (CofferInterop).
public struct FileDecryption {
    public let source: ByteSource
    public let reading: HeaderReading
    public let opened: OpenedFile

    /// Reads the header of `source` and opens it with the first identity that unwraps a stanza.
    public init(source: ByteSource, keys: [KeyCandidate]) throws {
        try self.init(reading: try HeaderReading.read(from: source), source: source, keys: keys)
    }

    /// Opens a header already read from `source` (to check only its signature first, say).
    public init(reading: HeaderReading, source: ByteSource, keys: [KeyCandidate]) throws {
        self.source = source
        self.reading = reading
        do {
            opened = try reading.open(with: try KeyCandidate.identities(keys, for: reading.header))
        } catch AccessError.noMatchingKey(_, let tried) {
            // Name what each stanza needs from the table of every key type, also for the types
            // no key was given for.
            var needed: [String] = []
            for description in reading.header.stanzas.map(KeyTypes.describe) where !needed.contains(description) {
                needed.append(description)
            }
            throw AccessError.noMatchingKey(needed: needed, tried: tried)
        }
    }

    /// The plaintext size, when the source is a regular file of a valid length.
    public var plaintextSize: UInt64? { opened.plaintextSize(of: source) }

    /// The size of the plaintext range `offset`, `length` (nil: to the end), when the size is known.
    public func rangeSize(offset: UInt64?, length: UInt64?) -> UInt64? {
        plaintextSize.map { min(length ?? .max, $0 - min($0, offset ?? 0)) }
    }

    /// Decrypts the payload into `sink`; with `offset` or `length`, only that plaintext range
    /// (from a regular file only). With `signedBy`, the file must carry a valid signature
    /// by one of those keys; `signatureFirst`: see ``OpenedFile/decrypt(from:to:engine:signedBy:signatureFirst:)``.
    /// Returns the plaintext byte count.
    public func decrypt(to sink: ByteSink, engine: StreamEngine, offset: UInt64? = nil, length: UInt64? = nil,
                        signedBy verifiers: [SignatureVerifier] = [], signatureFirst: Bool = true) throws -> UInt64 {
        if offset != nil || length != nil {
            return try opened.decryptRange(from: source, offset: offset ?? 0, length: length ?? .max, to: sink,
                                           engine: engine, signedBy: verifiers)
        }
        return try opened.decrypt(from: source, to: sink, engine: engine, signedBy: verifiers, signatureFirst: signatureFirst)
    }

    /// What is structurally wrong with an unchecked signature trailer, if anything (a warning
    /// after a decryption that did not check the signature; see ``HeaderReading/unverifiedTrailer(in:)``).
    public func unverifiedTrailer() throws -> PayloadSignatureTrailer? {
        try reading.unverifiedTrailer(in: source)
    }
}
