import CofferFormat
import Foundation

/// A key to decrypt with, passed down before any header is read.
///
/// Most keys are given outright. Some are worth having only for a file that has a stanza they can
/// open, and cost something to make: a passphrase asked for on the terminal, or "every KMS key
/// whose credentials are found". Those are made (the prompt shown, say) only when the header read
/// has a stanza of one of their types, and are not named in "no key opens this file" otherwise.
public enum KeyCandidate {
    case given(Identity)
    case whenHeaderHas(stanzaTypes: Set<String>, make: () throws -> Identity)

    /// The identities that apply to `header`, in the order given; conditional ones are made here.
    public static func identities(_ candidates: [KeyCandidate], for header: Header) throws -> [Identity] {
        let present = Set(header.stanzas.map(\.type))
        var identities: [Identity] = []
        for candidate in candidates {
            switch candidate {
            case .given(let identity):
                identities.append(identity)
            case .whenHeaderHas(let types, let make):
                if !types.isDisjoint(with: present) { identities.append(try make()) }
            }
        }
        return identities
    }
}

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
        opened = try reading.open(with: try KeyCandidate.identities(keys, for: reading.header))
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
