import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// An Ed25519 public key that signatures are accepted from (`--signed-by`).
public struct Ed25519Verifier: SignatureVerifier {
    public static let keyType = "ed25519"
    public let publicKey: Curve25519.Signing.PublicKey
    public var algorithm: SignatureParameters.Algorithm { .ed25519 }
    public let keyID: [UInt8]

    public init(publicKey: Curve25519.Signing.PublicKey) {
        self.publicKey = publicKey
        keyID = Hex.decode(PublicKeyID.of(type: Self.keyType, publicKey: publicKey.rawRepresentation))!
    }

    public var keyIDText: String { Hex.encode(keyID) }
    /// The 32-byte public key.
    public var rawPublicKey: [UInt8] { Array(publicKey.rawRepresentation) }
    public var label: String { "ed25519 \(keyIDText)" }

    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        publicKey.isValidSignature(signature, for: message)
    }

    /// SubjectPublicKeyInfo PEM, as `openssl pkey -pubout` writes for Ed25519.
    public var pem: String { publicKey.pemRepresentation + "\n" }

    public init(pem: String, source: String) throws {
        do { self.init(publicKey: try Curve25519.Signing.PublicKey(pemRepresentation: pem)) } catch {
            throw CofferError.invalidKey("\(source) is not an Ed25519 public key in PEM form (signing keys are Ed25519: coffer keygen --type ed25519)")
        }
    }
}

/// An Ed25519 private key that signs files (`encrypt --sign`).
public struct Ed25519Signer: PayloadSigner {
    public let privateKey: Curve25519.Signing.PrivateKey
    public let verifier: Ed25519Verifier
    public var algorithm: SignatureParameters.Algorithm { .ed25519 }
    public var keyID: [UInt8] { verifier.keyID }

    public init(privateKey: Curve25519.Signing.PrivateKey = .init()) {
        self.privateKey = privateKey
        verifier = Ed25519Verifier(publicKey: privateKey.publicKey)
    }

    /// From the 32-byte RFC 8032 private key (the seed).
    public init(seed: [UInt8]) throws {
        do { self.init(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: seed)) } catch {
            throw CofferError.invalidKey("an Ed25519 private key is 32 bytes")
        }
    }

    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        Array(try privateKey.signature(for: message))
    }

    /// PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes.
    public var pem: String { privateKey.pemRepresentation + "\n" }

    public init(pem: String, source: String) throws {
        do { self.init(privateKey: try Curve25519.Signing.PrivateKey(pemRepresentation: pem)) } catch {
            throw CofferError.invalidKey("\(source) is not an Ed25519 private key in PEM form (signing keys are Ed25519: coffer keygen --type ed25519)")
        }
    }
}

/// Signing keys as users give them: one PEM block, possibly after `#` comment lines.
public enum SigningKeyText {
    /// A public key for `--signed-by`.
    public static func verifier(_ content: String, source: String) throws -> Ed25519Verifier {
        let item = try onePEM(content, source: source)
        if item.contains("PRIVATE KEY") {
            throw CofferError.invalidKey("\(source) is a private key; --signed-by takes the signer's public key (its .pub file)")
        }
        return try Ed25519Verifier(pem: item, source: source)
    }

    /// A private key for `--sign`.
    public static func signer(_ content: String, source: String) throws -> Ed25519Signer {
        let item = try onePEM(content, source: source)
        if item.contains("PUBLIC KEY") {
            throw CofferError.invalidKey("\(source) is a public key; --sign needs the private signing key (its .key file)")
        }
        return try Ed25519Signer(pem: item, source: source)
    }

    static func onePEM(_ content: String, source: String) throws -> String {
        let items = try KeyTextItems.split(content, source: source)
        guard items.count == 1, items[0].isPEM else {
            if items.contains(where: { $0.text.hasPrefix("age1") || $0.text.hasPrefix("AGE-SECRET-KEY-") }) {
                throw CofferError.invalidKey("\(source) is an encryption key (age/X25519), not a signing key: make one with coffer keygen --type ed25519")
            }
            throw CofferError.invalidKey("\(source) must hold exactly one Ed25519 key in PEM form (coffer keygen --type ed25519)")
        }
        return items[0].text
    }
}
