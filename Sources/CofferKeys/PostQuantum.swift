import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// The ML-KEM-768 + X25519 hybrid (X-Wing) recipient, with age v1.3's construction: HPKE base mode,
/// KEM X-Wing (0x647a), HKDF-SHA256, ChaCha20-Poly1305, info "age-encryption.org/mlkem768x25519".
///
/// ```
/// -> mlkem768x25519 ENC [KEYID]          ; ENC: the 1,120-byte encapsulated key
/// body = HPKE.Seal(file key)             ; 48 bytes for Coffer's 32-byte file key, 32 for age's 16
/// ```
/// Keys are age's `age1pq1…` (the 1,216-byte public key) and `AGE-SECRET-KEY-PQ-1…` (the 32-byte seed).
public struct HybridRecipient: NamedRecipient, StanzaKind {
    public static let stanzaType = "mlkem768x25519"
    public static let stanzaTypes = [stanzaType]
    public static let recipientHRP = "age1pq"
    public static let identityHRP = "AGE-SECRET-KEY-PQ-"
    public static let info = Data("age-encryption.org/mlkem768x25519".utf8)
    public static let suite = HPKE.Ciphersuite(kem: .XWingMLKEM768X25519, kdf: .HKDF_SHA256, aead: .chaChaPoly)
    public let publicKey: XWingMLKEM768X25519.PublicKey
    /// Write the KEYID argument in Coffer files. Never in age files (a 16-byte file key), whose
    /// stanza has exactly one argument.
    public var namesKey: Bool

    public init(publicKey: XWingMLKEM768X25519.PublicKey, namesKey: Bool = true) {
        self.publicKey = publicKey
        self.namesKey = namesKey
    }

    public init(encoded text: String) throws {
        guard let (hrp, data) = Bech32.decode(text), hrp == Self.recipientHRP, text == text.lowercased(),
              let key = try? XWingMLKEM768X25519.PublicKey(rawRepresentation: data) else {
            throw KeyError.invalid("'\(text.prefix(12))…' is not a post-quantum recipient (age1pq1…, 1216 bytes)")
        }
        self.init(publicKey: key)
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.rawRepresentation) }
    public var encoded: String { Bech32.encode(hrp: Self.recipientHRP, data: Array(publicKey.rawRepresentation)) }

    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        var sender = try HPKE.Sender(recipientKey: publicKey, ciphersuite: Self.suite, info: Self.info)
        let body = try sender.seal(fileKey)
        var arguments = [RawBase64.encode(Array(sender.encapsulatedKey))]
        if namesKey && fileKey.count == Limits.fileKeySize { arguments.append(keyID) }
        return [Stanza(type: Self.stanzaType, arguments: arguments, body: Array(body))]
    }

    public static func describe(_ stanza: Stanza) -> String {
        stanza.arguments.count > 1 ? "post-quantum key \(stanza.arguments[1])" : "a post-quantum (age) key"
    }

    public static func keyID(of stanza: Stanza) -> String? {
        stanza.arguments.count == 2 ? stanza.arguments[1] : nil
    }
}

public struct HybridIdentity: KeyPair {
    static let encapsulatedKeySize = 1120
    public let privateKey: XWingMLKEM768X25519.PrivateKey
    /// The 32-byte seed, from which the whole key pair is expanded.
    public let seed: [UInt8]

    public init(seed: [UInt8]) throws {
        guard seed.count == 32,
              let key = try? XWingMLKEM768X25519.PrivateKey(seedRepresentation: seed, publicKey: nil) else {
            throw KeyError.invalid("a post-quantum identity is a 32-byte seed")
        }
        privateKey = key
        self.seed = seed
    }

    public static func generate() -> HybridIdentity {
        try! HybridIdentity(seed: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public init(encoded text: String) throws {
        guard let (hrp, data) = Bech32.decode(text), hrp == HybridRecipient.identityHRP.lowercased(),
              text == text.uppercased() else {
            throw KeyError.invalid("not a post-quantum identity (AGE-SECRET-KEY-PQ-1…)")
        }
        try self.init(seed: data)
    }

    public var encoded: String { Bech32.encode(hrp: HybridRecipient.identityHRP, data: seed) }
    public var recipient: HybridRecipient { HybridRecipient(publicKey: privateKey.publicKey) }
    public func publicRecipient() -> Recipient { recipient }
    public var label: String { "post-quantum key \(recipient.keyID)" }

    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { $0.type == HybridRecipient.stanzaType }) { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard (1...2).contains(stanza.arguments.count) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 1 or 2 arguments (encapsulated key, key id)")
        }
        let enc = try WrapAEAD.argument(stanza.arguments[0], size: Self.encapsulatedKeySize, stanzaType: stanza.type,
                                        what: "encapsulated key")
        try WrapAEAD.checkBody(stanza, fileKeySizes: WrapAEAD.anyFileKeySize)
        let named = stanza.arguments.count == 2
        if named {
            try PublicKeyID.check(stanza.arguments[1], stanzaType: stanza.type)
            guard stanza.arguments[1] == recipient.keyID else { return nil }
        } else if WrapAEAD.isLowOrder(Array(enc.suffix(32))) {
            // age refuses a low-order X25519 half as malformed: it is no mere mismatch.
            throw CofferError.malformedStanza(type: stanza.type, reason: "the X25519 share is a low-order point")
        }
        guard var receiver = try? HPKE.Recipient(privateKey: privateKey, ciphersuite: HybridRecipient.suite,
                                                 info: HybridRecipient.info, encapsulatedKey: Data(enc)),
              let plain = try? receiver.open(stanza.body) else {
            if !named { return nil }
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the stanza for key \(stanza.arguments[1]) does not decrypt: it was altered")
        }
        return Array(plain)
    }
}
