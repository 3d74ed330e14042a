import CofferFormat
import Crypto
import Foundation

/// The X25519 recipient stanza, with age's construction (age-encryption.org/v1, "X25519 recipient
/// stanza"), so keys made by `age-keygen` are Coffer keys and the other way round; the same type
/// writes and reads Coffer files (32-byte file keys) and age files (16-byte file keys):
///
/// ```
/// -> X25519 SHARE [KEYID]
/// shared   = X25519(ephemeral secret, recipient)          ; SHARE = X25519(ephemeral secret, 9)
/// wrap key = HKDF(ikm: shared, salt: SHARE || recipient, info: "age-encryption.org/v1/X25519")
/// body     = ChaCha20-Poly1305(wrap key, 12 zero bytes, file key)
/// ```
/// Coffer adds the optional KEYID argument (``PublicKeyID``) so a file can say which recipients it
/// was made for; age's own stanza has none, and a stanza without it is tried like age does.
/// Text forms: `age1…` and `AGE-SECRET-KEY-1…` (``AgeKeyEncoding``).
public struct X25519Recipient: NamedRecipient, StanzaKind {
    public static let stanzaType = "X25519"
    public static let stanzaTypes = [stanzaType]
    static let info = Array("age-encryption.org/v1/X25519".utf8)
    public let publicKey: Curve25519.KeyAgreement.PublicKey
    /// Write the KEYID argument in Coffer files. Never in age files (a 16-byte file key), whose
    /// stanza has exactly one argument.
    public var namesKey: Bool

    public init(publicKey: Curve25519.KeyAgreement.PublicKey, namesKey: Bool = true) {
        self.publicKey = publicKey
        self.namesKey = namesKey
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.rawRepresentation) }
    public var encoded: String { AgeKeyEncoding.recipient(publicKey: publicKey) }

    static func wrappingKey(shared: SharedSecret, share: Data, recipient: Data) -> SymmetricKey {
        shared.hkdfDerivedSymmetricKey(using: SHA256.self, salt: share + recipient, sharedInfo: info, outputByteCount: 32)
    }

    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = ephemeral.publicKey.rawRepresentation
        let shared = try ephemeral.sharedSecretFromKeyAgreement(with: publicKey)
        let key = Self.wrappingKey(shared: shared, share: share, recipient: publicKey.rawRepresentation)
        var arguments = [RawBase64.encode(Array(share))]
        if namesKey && fileKey.count == Limits.fileKeySize { arguments.append(keyID) }
        return [Stanza(type: Self.stanzaType, arguments: arguments, body: try WrapAEAD.seal(fileKey, key: key))]
    }

    public static func describe(_ stanza: Stanza) -> String {
        stanza.arguments.count > 1 ? "X25519 key \(stanza.arguments[1])" : "an X25519 (age) key"
    }

    public static func keyID(of stanza: Stanza) -> String? {
        stanza.arguments.count == 2 ? stanza.arguments[1] : nil
    }
}

public struct X25519Identity: KeyPair {
    public let privateKey: Curve25519.KeyAgreement.PrivateKey

    public init(privateKey: Curve25519.KeyAgreement.PrivateKey) {
        self.privateKey = privateKey
    }

    public var recipient: X25519Recipient { X25519Recipient(publicKey: privateKey.publicKey) }
    public func publicRecipient() -> Recipient { recipient }
    public var label: String { "X25519 key \(recipient.keyID)" }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { $0.type == X25519Recipient.stanzaType }) { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard (1...2).contains(stanza.arguments.count) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 1 or 2 arguments (share, key id)")
        }
        let share = try WrapAEAD.argument(stanza.arguments[0], size: 32, stanzaType: stanza.type, what: "share")
        try WrapAEAD.checkBody(stanza, fileKeySizes: WrapAEAD.anyFileKeySize)
        let named = stanza.arguments.count == 2
        if named {
            try PublicKeyID.check(stanza.arguments[1], stanzaType: stanza.type)
            guard stanza.arguments[1] == recipient.keyID else { return nil }
        }
        guard let shared = WrapAEAD.sharedSecret(privateKey, share) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share is a low-order point")
        }
        let key = X25519Recipient.wrappingKey(shared: shared, share: Data(share), recipient: privateKey.publicKey.rawRepresentation)
        guard let fileKey = WrapAEAD.open(stanza.body, key: key) else {
            // An anonymous (age-style) stanza that does not open is simply someone else's.
            if !named { return nil }
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the stanza for key \(stanza.arguments[1]) does not authenticate: it was altered")
        }
        return fileKey
    }
}
