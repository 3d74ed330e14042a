import CofferFormat
import Crypto
import Foundation

/// A 256-bit secret key kept in a file: the `keyfile` stanza (docs/FORMAT.md, "keyfile stanza").
///
/// ```
/// -> keyfile KEYID SALT
/// body = ChaCha20-Poly1305(key: HKDF-SHA256(ikm: K, salt: SALT, info: "coffer/v1 keyfile"),
///                          nonce: 12 zero bytes, plaintext: file key)      ; 48 bytes
/// ```
/// SALT is 16 fresh random bytes per stanza, so every wrapping key is used once and the zero
/// nonce is safe. KEYID names the key (see ``keyID``) so a wrong key can be reported by id.
public struct SymmetricKeyFile: NamedRecipient, KeyPair, StanzaKind, Equatable {
    public static let stanzaType = "keyfile"
    public static let stanzaTypes = [stanzaType]
    /// The prefix of the text encoding's key line.
    public static let textPrefix = "COFFER-SYMMETRIC-KEY-V1:"
    static let keySize = 32

    public let keyBytes: [UInt8]

    public init(keyBytes: [UInt8]) throws {
        guard keyBytes.count == Self.keySize else {
            throw KeyError.invalid("a symmetric key is \(Self.keySize) bytes, got \(keyBytes.count)")
        }
        self.keyBytes = keyBytes
    }

    public static func generate() -> SymmetricKeyFile {
        // Cannot throw: a 256-bit SymmetricKey is exactly the 32 bytes the initializer requires.
        try! SymmetricKeyFile(keyBytes: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    /// The key id: the first 8 bytes of HMAC-SHA256(key: K, message: "coffer/v1 key id"), in hex.
    /// It identifies the key without revealing anything usable about it.
    public var keyID: String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("coffer/v1 key id".utf8), using: SymmetricKey(data: keyBytes))
        return Hex.encode(Array(mac).prefix(8))
    }

    public var label: String { "key file \(keyID)" }
    /// A symmetric key encrypts to itself.
    public func publicRecipient() -> Recipient { self }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    /// The text form written by `coffer keygen --symmetric`.
    public func textEncoding(created: Date = Date()) -> String {
        let stamp = ISO8601DateFormatter().string(from: created)
        return """
        # Coffer symmetric key. Anyone holding this file can decrypt what it protects: keep it secret.
        # created: \(stamp)
        # key id: \(keyID)
        \(Self.textPrefix)\(Hex.encode(keyBytes))

        """
    }

    // MARK: Parsing key files

    /// Parses a key file's content (docs/FORMAT.md, "Key files"):
    /// 1. text: `#` comment lines, blank lines, and one line `COFFER-SYMMETRIC-KEY-V1:` + 64 hex digits;
    ///    lines may end in LF or CRLF, and trailing spaces are ignored;
    /// 2. otherwise exactly 32 raw bytes.
    /// A 32-byte key followed by LF or CRLF is refused with a message that names the line ending:
    /// guessing would turn an editor's newline into a silent wrong key.
    public static func parse(_ content: [UInt8], source: String) throws -> SymmetricKeyFile {
        if let text = String(validating: content, as: UTF8.self), text.contains(textPrefix) {
            var keyLines: [Substring] = []
            // "\r\n" is one Character in Swift, so split on both forms.
            for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
                var line = rawLine
                while let last = line.last, last == "\r" || last == " " || last == "\t" { line.removeLast() }
                if line.isEmpty || line.hasPrefix("#") { continue }
                keyLines.append(line)
            }
            guard keyLines.count == 1, let line = keyLines.first, line.hasPrefix(textPrefix) else {
                throw KeyError.invalid(
                    "key file \(source): expected exactly one '\(textPrefix)…' line besides # comments, found \(keyLines.count) lines")
            }
            let hex = String(line.dropFirst(textPrefix.count))
            guard hex.count == 64, let bytes = Hex.decode(hex) else {
                throw KeyError.invalid(
                    "key file \(source): after '\(textPrefix)' expected 64 hex digits, found \(hex.count) characters")
            }
            return try SymmetricKeyFile(keyBytes: bytes)
        }
        if content.count == keySize { return try SymmetricKeyFile(keyBytes: content) }
        if content.count == keySize + 1 && content.last == 0x0A {
            throw KeyError.invalid(
                "key file \(source) is 33 bytes: 32 raw bytes followed by a line feed (LF). A raw key must be exactly 32 bytes; remove the line ending (truncate -s 32 \(source)) or use a key from 'coffer keygen --symmetric'")
        }
        if content.count == keySize + 2 && content.suffix(2).elementsEqual([0x0D, 0x0A]) {
            throw KeyError.invalid(
                "key file \(source) is 34 bytes: 32 raw bytes followed by CRLF (a Windows line ending). A raw key must be exactly 32 bytes; remove the line ending (truncate -s 32 \(source)) or use a key from 'coffer keygen --symmetric'")
        }
        var hint = ""
        if let text = String(validating: content, as: UTF8.self) {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.count == 64, Hex.decode(trimmed) != nil {
                hint = "; it looks like 64 hex digits: put '\(textPrefix)' in front of them"
            }
        }
        throw KeyError.invalid(
            "key file \(source) is \(content.count) bytes; expected a Coffer key file ('\(textPrefix)' and 64 hex digits, from 'coffer keygen --symmetric') or exactly 32 raw bytes\(hint)")
    }

    // MARK: Wrapping

    static func wrappingKey(_ keyBytes: [UInt8], salt: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: keyBytes), salt: salt,
                               info: Array("coffer/v1 keyfile".utf8), outputByteCount: 32)
    }

    /// Coffer's key files wrap Coffer's 32-byte file keys only: age has no symmetric keys.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        [try wrap(fileKey: fileKey, salt: SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })]
    }

    /// Deterministic variant for test vectors only.
    @_spi(TestVectors)
    public func wrap(fileKey: [UInt8], salt: [UInt8]) throws -> Stanza {
        guard fileKey.count == Limits.fileKeySize else {
            throw KeyError.invalid("a Coffer key file cannot be a recipient of an age file: age has no symmetric keys (use a passphrase, age1… or ssh-ed25519 recipients)")
        }
        let body = try WrapAEAD.seal(fileKey, key: Self.wrappingKey(keyBytes, salt: salt))
        return Stanza(type: Self.stanzaType, arguments: [keyID, RawBase64.encode(salt)], body: body)
    }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { $0.type == Self.stanzaType }) { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        let (id, salt) = try Self.parseArguments(stanza)
        guard id == keyID else { return nil }
        guard let key = WrapAEAD.open(stanza.body, key: Self.wrappingKey(keyBytes, salt: salt)) else {
            throw CofferError.malformedStanza(type: Self.stanzaType,
                                              reason: "the stanza for key \(id) does not authenticate: it was altered")
        }
        return key
    }

    static func parseArguments(_ stanza: Stanza) throws -> (String, [UInt8]) {
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "expected 2 arguments (key id, salt)")
        }
        let id = stanza.arguments[0]
        guard id.count == 16, id == id.lowercased(), Hex.decode(id) != nil else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "key id must be 16 lower-case hex digits")
        }
        let salt = try WrapAEAD.salt(stanza.arguments[1], stanzaType: stanzaType)
        try WrapAEAD.checkBody(stanza, fileKeySizes: [Limits.fileKeySize])
        return (id, salt)
    }

    public static func describe(_ stanza: Stanza) -> String { "key file \(stanza.arguments.first ?? "?")" }
    public static func keyID(of stanza: Stanza) -> String? { stanza.arguments.first }
}
