import CofferFormat
import Crypto

/// age's text encodings of X25519 keys (age-encryption.org/v1): a recipient is Bech32 with the
/// human-readable part `age` (`age1…`), an identity is upper-case Bech32 with `AGE-SECRET-KEY-`
/// (`AGE-SECRET-KEY-1…`). Existing age keys are Coffer keys through these.
public enum AgeKeyEncoding {
    public static let recipientPrefix = "age"
    public static let identityPrefix = "AGE-SECRET-KEY-"

    public static func recipient(publicKey: Curve25519.KeyAgreement.PublicKey) -> String {
        Bech32.encode(hrp: recipientPrefix, data: Array(publicKey.rawRepresentation))
    }

    public static func identity(privateKey: Curve25519.KeyAgreement.PrivateKey) -> String {
        Bech32.encode(hrp: identityPrefix, data: Array(privateKey.rawRepresentation))
    }

    public static func parseRecipient(_ text: String) throws -> Curve25519.KeyAgreement.PublicKey {
        guard let (hrp, data) = Bech32.decode(text), hrp == recipientPrefix, data.count == 32,
              text == text.lowercased() else {
            throw KeyError.invalid("'\(text.prefix(12))…' is not an age X25519 recipient (age1… , 32 bytes)")
        }
        return try Curve25519.KeyAgreement.PublicKey(rawRepresentation: data)
    }

    public static func parseIdentity(_ text: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        guard let (hrp, data) = Bech32.decode(text), hrp == identityPrefix.lowercased(), data.count == 32,
              text == text.uppercased() else {
            // The key itself is never echoed into a message.
            throw KeyError.invalid("not an age X25519 identity (AGE-SECRET-KEY-1…, 32 bytes)")
        }
        return try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: data)
    }
}
