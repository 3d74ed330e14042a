import CofferFormat
import CofferKeys
import Crypto
import Foundation

/// Where an age file's bytes come from: a file or pipe (``ByteSource``), or the decoded content
/// of an ASCII-armored file (``AgeArmor/Reader``).
public protocol AgeInput: LineInput {
    /// Fills `buffer` unless the input ends first; returns the byte count read.
    func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// True when reads never block indefinitely (a regular file): a reader thread may then be
    /// waited for after a failure.
    var isRegularFile: Bool { get }
}

extension ByteSource: AgeInput {
    public var isRegularFile: Bool { regularFileSize != nil }
}

/// The header of an age v1 file (../shared/vectors/AGE-FORMAT.md §1.4–1.5):
///
/// ```
/// age-encryption.org/v1
/// -> TYPE ARG…            ; one or more stanzas, age's grammar (shared with Coffer: ``HeaderSyntax``)
/// BODY (raw base64, 64 columns, last line shorter)
/// --- MAC                 ; HMAC-SHA-256 over everything up to and including "---"
/// ```
/// Parsing is strict (canonical base64, LF only, no empty arguments), so the bytes read are the only
/// encoding of what was parsed and the MAC can be checked over them directly.
public struct AgeHeader: Sendable {
    public static let versionLine = "age-encryption.org/v1"
    public static let versionPrefix = FormatDetector.ageVersionPrefix
    /// Headers longer than this are refused rather than buffered (a post-quantum stanza is ~1.6 KB).
    public static let maxSize = 256 * 1024
    public static let fileKeySize = 16
    public static let nonceSize = 16

    public let stanzas: [Stanza]
    public let mac: [UInt8]
    /// The header bytes the MAC covers: from the version line through the "---" of the MAC line.
    let macInput: [UInt8]

    /// Reads a header, leaving `input` at the first byte after the MAC line.
    public static func read(from input: AgeInput) throws -> AgeHeader {
        let read = try HeaderSyntax.readLines(from: input, limit: maxSize) { line, index in
            try Header.checkCharacters(line)
            guard index == 0 else { return }
            let text = Substring(String(decoding: line.dropLast(), as: UTF8.self))
            if text != versionLine {
                if text.hasPrefix(versionPrefix) {
                    throw CofferError.unsupportedVersion("\(text) (this reader knows \(versionLine))")
                }
                throw CofferError.malformedHeader("the first line is not '\(versionLine)'")
            }
        }
        let bytes: [UInt8]
        switch read {
        case .complete(let lines): bytes = lines
        case .tooLong: throw CofferError.malformedHeader("the header is longer than \(maxSize) bytes")
        case .endsBeforeMACLine(empty: true): throw CofferError.malformedHeader("the input is empty")
        case .endsBeforeMACLine(empty: false), .unterminatedLine:
            throw CofferError.malformedHeader("the header ends before its MAC line")
        }
        let lines = String(decoding: bytes.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let macIndex = lines.count - 1
        let stanzas = try HeaderSyntax.parseStanzas(lines, from: 1, to: macIndex)
        guard !stanzas.isEmpty else { throw CofferError.malformedHeader("no stanza: nobody can open this file") }
        guard let mac = HeaderSyntax.mac(ofLine: lines[macIndex]) else {
            throw CofferError.malformedHeader("the MAC line must be '--- ' and 43 characters of canonical base64 (32 bytes)")
        }
        return AgeHeader(stanzas: stanzas, mac: mac,
                         macInput: HeaderSyntax.bytesCoveredByMAC(bytes, macLine: lines[macIndex]))
    }

    /// The header's length in bytes, through the MAC line's line feed.
    public var encodedLength: Int { macInput.count + 1 + 43 + 1 }

    /// age's rule: a passphrase (scrypt) stanza must be alone, so that a file that opens with a
    /// passphrase can only have been made by someone who knows it.
    public func checkScryptAlone() throws {
        if stanzas.count > 1, stanzas.contains(where: { $0.type == AgeScrypt.stanzaType }) {
            throw CofferError.malformedHeader("an age scrypt (passphrase) stanza must be the only stanza")
        }
    }

    static func macKey(fileKey: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: fileKey), salt: [UInt8](),
                               info: Array("header".utf8), outputByteCount: 32)
    }

    public func verifyMAC(fileKey: [UInt8]) throws {
        let key = Self.macKey(fileKey: fileKey)
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: macInput, using: key) else {
            throw CofferError.headerMACMismatch
        }
    }

    /// The encoded header for `stanzas`, ending with the MAC line's line feed.
    public static func encode(stanzas: [Stanza], fileKey: [UInt8]) -> [UInt8] {
        var out = Array((versionLine + "\n").utf8)
        for stanza in stanzas { out += stanza.encoded() }
        out += Array(HeaderSyntax.macLineStart.utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: out, using: macKey(fileKey: fileKey))
        out += Array(" \(RawBase64.encode(Array(mac)))\n".utf8)
        return out
    }
}
