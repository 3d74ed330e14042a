import CofferFormat
import Crypto
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
            throw KeyError.invalid("\(source) is not an Ed25519 or ML-DSA-65 public key in PEM form (signing keys are Ed25519 or ML-DSA-65 PEM keys, as coffer keygen makes them)")
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
    /// Its own public key, for re-signing (Sources/CofferFiles/Rewrap.swift): a signer's earlier
    /// signature on a file is checked before it signs the file again.
    public var publicVerifier: SignatureVerifier { verifier }

    public init(seed: [UInt8]) throws {
        do { self.init(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: seed)) } catch {
            throw KeyError.invalid("an Ed25519 private key is 32 bytes")
        }
    }

    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        Array(try privateKey.signature(for: message))
    }

    /// PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes.
    public var pem: String { privateKey.pemRepresentation + "\n" }

    public init(pem: String, source: String) throws {
        do { self.init(privateKey: try Curve25519.Signing.PrivateKey(pemRepresentation: pem)) } catch {
            throw KeyError.invalid("\(source) is not an Ed25519 or ML-DSA-65 private key in PEM form (signing keys are Ed25519 or ML-DSA-65 PEM keys, as coffer keygen makes them)")
        }
    }
}
