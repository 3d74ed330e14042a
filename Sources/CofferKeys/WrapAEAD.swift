import CofferFormat
import Crypto
import Foundation

/// The AEAD that wraps a file key inside a stanza body, for every key type that wraps locally
/// (key files, passphrases, X25519, SSH): ChaCha20-Poly1305 with the all-zero nonce under a
/// single-use key (each stanza derives its own wrapping key from a fresh salt or share). The body is
/// exactly the sealed file key: 16 + 16 bytes for age's file keys, 32 + 16 for Coffer's; anything
/// else is refused before any decryption, as age does against partitioning oracles.
enum WrapAEAD {
    static let tagSize = 16
    /// age's file key: 16 bytes.
    static let ageFileKeySize = 16
    /// The file key sizes a stanza of a type shared by both formats may wrap.
    static let anyFileKeySize = [ageFileKeySize, Limits.fileKeySize]
    static let zeroNonce = [UInt8](repeating: 0, count: 12)

    static func seal(_ fileKey: [UInt8], key: SymmetricKey) throws -> [UInt8] {
        let box = try ChaChaPoly.seal(fileKey, using: key, nonce: ChaChaPoly.Nonce(data: zeroNonce))
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// The file key, or nil when `sealed` does not authenticate under `key`.
    static func open(_ sealed: [UInt8], key: SymmetricKey) -> [UInt8]? {
        guard sealed.count > tagSize,
              let box = try? ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: zeroNonce),
                                                  ciphertext: sealed.dropLast(tagSize), tag: sealed.suffix(tagSize)),
              let plain = try? ChaChaPoly.open(box, using: key) else { return nil }
        return Array(plain)
    }

    /// Refuses a body that is not exactly one wrapped file key of one of `fileKeySizes` (no
    /// partial or padded bodies).
    static func checkBody(_ stanza: Stanza, fileKeySizes: [Int]) throws {
        guard fileKeySizes.contains(stanza.body.count - tagSize) else {
            let sizes = fileKeySizes.map { String($0 + tagSize) }.joined(separator: " or ")
            throw CofferError.malformedStanza(type: stanza.type, reason: "body must be \(sizes) bytes, got \(stanza.body.count)")
        }
    }

    /// A stanza's salt argument: base64 of exactly 16 bytes.
    static func salt(_ argument: String, stanzaType: String) throws -> [UInt8] {
        guard let salt = RawBase64.decode(argument), salt.count == 16 else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "salt must be 16 bytes of unpadded base64")
        }
        return salt
    }

    /// One base64 argument of exactly `size` bytes.
    static func argument(_ text: String, size: Int, stanzaType: String, what: String) throws -> [UInt8] {
        guard let bytes = RawBase64.decode(text), bytes.count == size else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "the \(what) must be \(size) bytes of canonical unpadded base64")
        }
        return bytes
    }

    /// X25519 of `privateKey` and `point`, refusing the all-zero result of a low-order point (swift-crypto
    /// returns it without an error; the age vector x25519_low_order showed it); nil for such a point.
    static func sharedSecret(_ privateKey: Curve25519.KeyAgreement.PrivateKey, _ point: [UInt8]) -> SharedSecret? {
        guard let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: point),
              let shared = try? privateKey.sharedSecretFromKeyAgreement(with: key),
              !shared.withUnsafeBytes({ $0.allSatisfy { $0 == 0 } }) else { return nil }
        return shared
    }

    /// True when X25519 with `point` gives the all-zero secret for every key (a low-order point):
    /// X25519 clamps every scalar to a multiple of the cofactor, so any key shows it.
    static func isLowOrder(_ point: [UInt8]) -> Bool {
        sharedSecret(Curve25519.KeyAgreement.PrivateKey(), point) == nil
    }
}
