import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// A key with a PEM text form (signing public keys: what `--signed-by` reads).
public protocol PEMEncodedKey {
    var pem: String { get }
}

extension Ed25519Verifier: PEMEncodedKey {}
extension MLDSA65Verifier: PEMEncodedKey {}

/// Signing keys as users give them: one PEM block, possibly after `#` comment lines.
public enum SigningKeyText {
    /// A public key for `--signed-by`: Ed25519 or ML-DSA-65.
    public static func verifier(_ content: String, source: String) throws -> SignatureVerifier {
        let item = try onePEM(content, source: source)
        if item.contains("PRIVATE KEY") {
            throw KeyError.invalid("\(source) is a private key; checking a signature takes the signer's public key (its .pub file)")
        }
        if let der = MLDSAKeyDER.der(item), let raw = MLDSAKeyDER.key(der, prefix: MLDSAKeyDER.publicPrefix, size: MLDSAKeyDER.publicKeySize) {
            do { return MLDSA65Verifier(publicKey: try MLDSA65.PublicKey(rawRepresentation: raw)) } catch {
                throw KeyError.invalid("\(source) is not a valid ML-DSA-65 public key")
            }
        }
        return try Ed25519Verifier(pem: item, source: source)
    }

    /// A private key for `--sign`: Ed25519 or ML-DSA-65.
    public static func signer(_ content: String, source: String) throws -> PayloadSigner {
        let item = try onePEM(content, source: source)
        if item.contains("PUBLIC KEY") {
            throw KeyError.invalid("\(source) is a public key; signing needs the private signing key (its .key file)")
        }
        if let der = MLDSAKeyDER.der(item), let seed = MLDSAKeyDER.key(der, prefix: MLDSAKeyDER.privatePrefix, size: MLDSAKeyDER.seedSize) {
            do { return MLDSA65Signer(privateKey: try MLDSA65.PrivateKey(seedRepresentation: seed, publicKey: nil)) } catch {
                throw KeyError.invalid("\(source) is not a valid ML-DSA-65 private key")
            }
        }
        return try Ed25519Signer(pem: item, source: source)
    }

    static func onePEM(_ content: String, source: String) throws -> String {
        let items = try KeyTextItems.split(content, source: source)
        guard items.count == 1, items[0].isPEM else {
            if items.contains(where: { $0.text.hasPrefix("age1") || $0.text.hasPrefix("AGE-SECRET-KEY-") }) {
                throw KeyError.invalid("\(source) is an encryption key (age/X25519), not a signing key (an Ed25519 or ML-DSA-65 PEM key)")
            }
            throw KeyError.invalid("\(source) must hold exactly one signing key in PEM form (Ed25519 or ML-DSA-65)")
        }
        return items[0].text
    }
}
