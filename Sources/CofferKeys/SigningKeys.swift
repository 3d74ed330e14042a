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
            throw CofferError.invalidKey("\(source) is not an Ed25519 or ML-DSA-65 public key in PEM form (make signing keys with coffer keygen --type ed25519 or ml-dsa-65)")
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
            throw CofferError.invalidKey("\(source) is not an Ed25519 or ML-DSA-65 private key in PEM form (make signing keys with coffer keygen --type ed25519 or ml-dsa-65)")
        }
    }
}

/// An ML-DSA-65 (FIPS 204) public key that signatures are accepted from: post-quantum.
public struct MLDSA65Verifier: SignatureVerifier {
    public static let keyType = "ml-dsa-65"
    public let publicKey: MLDSA65.PublicKey
    public var algorithm: SignatureParameters.Algorithm { .mlDSA65 }
    public let keyID: [UInt8]

    public init(publicKey: MLDSA65.PublicKey) {
        self.publicKey = publicKey
        keyID = Hex.decode(PublicKeyID.of(type: Self.keyType, publicKey: publicKey.rawRepresentation))!
    }

    public var label: String { "ml-dsa-65 \(Hex.encode(keyID))" }

    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        publicKey.isValidSignature(signature, for: message)
    }

    /// SubjectPublicKeyInfo PEM with the id-ml-dsa-65 algorithm (RFC 9881).
    public var pem: String { MLDSAKeyDER.pem(MLDSAKeyDER.publicPrefix + publicKey.rawRepresentation, label: "PUBLIC KEY") }
}

/// An ML-DSA-65 private key that signs files. Signing is hedged (randomized), as FIPS 204 recommends.
public struct MLDSA65Signer: PayloadSigner {
    public let privateKey: MLDSA65.PrivateKey
    public let verifier: MLDSA65Verifier
    public var algorithm: SignatureParameters.Algorithm { .mlDSA65 }
    public var keyID: [UInt8] { verifier.keyID }

    public init(privateKey: MLDSA65.PrivateKey) {
        self.privateKey = privateKey
        verifier = MLDSA65Verifier(publicKey: privateKey.publicKey)
    }

    public static func generate() throws -> MLDSA65Signer { MLDSA65Signer(privateKey: try MLDSA65.PrivateKey()) }

    public func sign(_ message: [UInt8]) throws -> [UInt8] { Array(try privateKey.signature(for: message)) }

    /// PKCS#8 PEM holding the 32-byte seed (RFC 9881's seed-only form).
    public var pem: String { MLDSAKeyDER.pem(MLDSAKeyDER.privatePrefix + privateKey.seedRepresentation, label: "PRIVATE KEY") }
}

/// The two DER forms of ML-DSA-65 keys are a fixed prefix followed by the key bytes (RFC 9881:
/// SubjectPublicKeyInfo with a 1952-byte BIT STRING; PKCS#8 whose privateKey is the [0] seed).
enum MLDSAKeyDER {
    static let oid: [UInt8] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12]  // 2.16.840.1.101.3.4.3.18
    static let publicPrefix: [UInt8] = [0x30, 0x82, 0x07, 0xb2, 0x30, 0x0b] + oid + [0x03, 0x82, 0x07, 0xa1, 0x00]
    static let privatePrefix: [UInt8] = [0x30, 0x34, 0x02, 0x01, 0x00, 0x30, 0x0b] + oid + [0x04, 0x22, 0x80, 0x20]
    static let publicKeySize = 1952, seedSize = 32

    static func pem(_ der: some Collection<UInt8>, label: String) -> String {
        let body = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(label)-----\n\(body)\n-----END \(label)-----\n"
    }

    /// The DER inside a PEM block, when it is one.
    static func der(_ pem: String) -> [UInt8]? {
        let lines = pem.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.count >= 2, lines.first!.hasPrefix("-----BEGIN "), lines.last!.hasPrefix("-----END ") else { return nil }
        return Data(base64Encoded: lines.dropFirst().dropLast().joined()).map { Array($0) }
    }

    static func key(_ der: [UInt8], prefix: [UInt8], size: Int) -> [UInt8]? {
        guard der.count == prefix.count + size, der.starts(with: prefix) else { return nil }
        return Array(der.suffix(size))
    }
}

/// Signing keys as users give them: one PEM block, possibly after `#` comment lines.
public enum SigningKeyText {
    /// A public key for `--signed-by`: Ed25519 or ML-DSA-65.
    public static func verifier(_ content: String, source: String) throws -> SignatureVerifier {
        let item = try onePEM(content, source: source)
        if item.contains("PRIVATE KEY") {
            throw CofferError.invalidKey("\(source) is a private key; --signed-by takes the signer's public key (its .pub file)")
        }
        if let der = MLDSAKeyDER.der(item), let raw = MLDSAKeyDER.key(der, prefix: MLDSAKeyDER.publicPrefix, size: MLDSAKeyDER.publicKeySize) {
            do { return MLDSA65Verifier(publicKey: try MLDSA65.PublicKey(rawRepresentation: raw)) } catch {
                throw CofferError.invalidKey("\(source) is not a valid ML-DSA-65 public key")
            }
        }
        return try Ed25519Verifier(pem: item, source: source)
    }

    /// A private key for `--sign`: Ed25519 or ML-DSA-65.
    public static func signer(_ content: String, source: String) throws -> PayloadSigner {
        let item = try onePEM(content, source: source)
        if item.contains("PUBLIC KEY") {
            throw CofferError.invalidKey("\(source) is a public key; --sign needs the private signing key (its .key file)")
        }
        if let der = MLDSAKeyDER.der(item), let seed = MLDSAKeyDER.key(der, prefix: MLDSAKeyDER.privatePrefix, size: MLDSAKeyDER.seedSize) {
            do { return MLDSA65Signer(privateKey: try MLDSA65.PrivateKey(seedRepresentation: seed, publicKey: nil)) } catch {
                throw CofferError.invalidKey("\(source) is not a valid ML-DSA-65 private key")
            }
        }
        return try Ed25519Signer(pem: item, source: source)
    }

    static func onePEM(_ content: String, source: String) throws -> String {
        let items = try KeyTextItems.split(content, source: source)
        guard items.count == 1, items[0].isPEM else {
            if items.contains(where: { $0.text.hasPrefix("age1") || $0.text.hasPrefix("AGE-SECRET-KEY-") }) {
                throw CofferError.invalidKey("\(source) is an encryption key (age/X25519), not a signing key: make one with coffer keygen --type ed25519")
            }
            throw CofferError.invalidKey("\(source) must hold exactly one signing key in PEM form (coffer keygen --type ed25519 or ml-dsa-65)")
        }
        return items[0].text
    }
}
