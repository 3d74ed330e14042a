/// What a file is, told from its first bytes: the one place every command asks (decrypt, verify,
/// inspect, migrate), and where "not a Coffer file" gets its hint.
///
/// Only the magic bytes are looked at; nothing here is authenticated, and it only chooses which
/// reader parses the rest, each of which checks everything again.
public enum DetectedFormat: Equatable, Sendable {
    /// Starts with "coffer/" (a version this reader may not know: the header reader tells).
    case coffer
    /// A standard age v1 file, binary or ASCII-armored.
    case age(armored: Bool)
    /// An XtraBackup .xbcrypt file (XBCRYP01/02/03 chunks).
    case xbcrypt
    /// None of the encrypted formats read here; `hint` says what it looks like when known
    /// ("it looks like a gzip file"), or that it is empty.
    case other(hint: String?)
}

public enum FormatDetector {
    /// Enough leading bytes to tell every format apart: an armored age file may have up to 1 KiB
    /// of whitespace before its BEGIN line.
    public static let sniffLength = 1100

    /// The armored age file's first line (docs/AGE.md).
    public static let ageArmorBeginLine = "-----BEGIN AGE ENCRYPTED FILE-----"
    public static let ageVersionPrefix = "age-encryption.org/"
    public static let xbcryptMagicPrefix = Array("XBCRYP0".utf8)

    /// Detects the format of a source without consuming it (it is peeked at).
    public static func detect(_ source: ByteSource) throws -> DetectedFormat {
        detect(firstBytes: try source.peek(sniffLength))
    }

    public static func detect(firstBytes: [UInt8]) -> DetectedFormat {
        if firstBytes.starts(with: Array("coffer/".utf8)) { return .coffer }
        if firstBytes.starts(with: Array(ageVersionPrefix.utf8)) { return .age(armored: false) }
        if looksArmoredAge(firstBytes) { return .age(armored: true) }
        if isXbcrypt(firstBytes) { return .xbcrypt }
        return .other(hint: otherHint(firstBytes))
    }

    /// True for an .xbcrypt chunk's magic: "XBCRYP01", "XBCRYP02" or "XBCRYP03".
    public static func isXbcrypt(_ firstBytes: [UInt8]) -> Bool {
        firstBytes.count >= 8 && firstBytes.starts(with: xbcryptMagicPrefix) && (0x31...0x33).contains(firstBytes[7])
    }

    /// True when the BEGIN line of an armored age file comes first, after optional whitespace.
    public static func looksArmoredAge(_ firstBytes: [UInt8]) -> Bool {
        firstBytes.drop(while: isArmorWhitespace).starts(with: Array(ageArmorBeginLine.utf8))
    }

    /// The whitespace an armored age file may have around its armor.
    public static func isArmorWhitespace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C
    }

    /// Why input that is not a Coffer file is not one, when its first bytes tell: another
    /// encrypted format, a compressed or archive format, or nothing at all.
    public static func hint(firstBytes: [UInt8]) -> String? {
        switch detect(firstBytes: firstBytes) {
        case .coffer: return nil
        case .age(armored: false): return "it is an age file"
        case .age(armored: true): return "it is an ASCII-armored age file"
        case .xbcrypt: return "it is an XtraBackup .xbcrypt file"
        case .other(let hint): return hint
        }
    }

    /// Formats that are not encrypted (or not by a format read here), by their magic bytes.
    static let otherMagics: [(magic: [UInt8], name: String)] = [
        ([0x1F, 0x8B], "a gzip file"),
        ([0x28, 0xB5, 0x2F, 0xFD], "a zstd file"),
        ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], "an xz file"),
        ([0x04, 0x22, 0x4D, 0x18], "an lz4 file"),
        (Array("BZh".utf8), "a bzip2 file"),
        (Array("qpress10".utf8), "a qpress file"),
        (Array("xbstream".utf8) + [0x01], "an XtraBackup xbstream"),
        ([0x50, 0x4B, 0x03, 0x04], "a zip file"),
        (Array("-----BEGIN PGP MESSAGE-----".utf8), "an OpenPGP (gpg) message"),
        (Array("Salted__".utf8), "an 'openssl enc' file"),
    ]

    static func otherHint(_ firstBytes: [UInt8]) -> String? {
        if firstBytes.isEmpty { return "the input is empty" }
        for (magic, name) in otherMagics where firstBytes.starts(with: magic) {
            return "it looks like \(name)"
        }
        return nil
    }
}
