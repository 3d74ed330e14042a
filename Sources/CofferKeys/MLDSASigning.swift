import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

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

    /// Its own public key, for re-signing (see ``Ed25519Signer/publicVerifier``).
    public var publicVerifier: SignatureVerifier { verifier }

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
