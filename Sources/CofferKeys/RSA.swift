import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// `-> rsa-oaep KEYID`, body = RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) of the file key under
/// the recipient's public key. KEYID hashes the key's SubjectPublicKeyInfo DER.
/// Keys under 2048 bits are refused on both sides.
// @unchecked: swift-crypto's RSA keys are immutable wrappers of BoringSSL keys that are safe to use
// from several threads, but are not marked Sendable.
public struct RSARecipient: NamedRecipient, StanzaKind, @unchecked Sendable {
    public static let stanzaType = "rsa-oaep"
    public static let stanzaTypes = [stanzaType]
    public static let minimumBits = 2048
    public let publicKey: _RSA.Encryption.PublicKey

    public init(publicKey: _RSA.Encryption.PublicKey) throws {
        try Self.checkSize(publicKey.keySizeInBits)
        self.publicKey = publicKey
    }

    /// Reads a PEM public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, as `openssl pkey -pubout`
    /// writes) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    public init(pem: String) throws {
        let key: _RSA.Encryption.PublicKey
        do { key = try _RSA.Encryption.PublicKey(unsafePEMRepresentation: pem) } catch {
            throw KeyError.invalid("not an RSA public key in PEM form (\(error))")
        }
        try self.init(publicKey: key)
    }

    static func checkSize(_ bits: Int) throws {
        guard bits >= minimumBits else {
            throw KeyError.invalid("an RSA key of \(bits) bits is too small: at least \(minimumBits) bits (3072 or more recommended)")
        }
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.derRepresentation) }

    /// Coffer's RSA stanza carries Coffer's 32-byte file keys only: age's RSA keys are ssh-rsa keys.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        guard fileKey.count == Limits.fileKeySize else {
            throw KeyError.invalid("a PEM RSA key cannot be a recipient of an age file: age's RSA keys are ssh-rsa keys")
        }
        let body = try publicKey.encrypt(fileKey, padding: .PKCS1_OAEP_SHA256)
        return [Stanza(type: Self.stanzaType, arguments: [keyID], body: Array(body))]
    }

    public static func describe(_ stanza: Stanza) -> String { "RSA key \(stanza.arguments.first ?? "?")" }
    public static func keyID(of stanza: Stanza) -> String? { stanza.arguments.first }
}

public struct RSAIdentity: KeyPair, @unchecked Sendable {
    public let privateKey: _RSA.Encryption.PrivateKey

    public init(privateKey: _RSA.Encryption.PrivateKey) throws {
        try RSARecipient.checkSize(privateKey.keySizeInBits)
        self.privateKey = privateKey
    }

    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes) or PKCS#1.
    public init(pem: String) throws {
        let key: _RSA.Encryption.PrivateKey
        do { key = try _RSA.Encryption.PrivateKey(unsafePEMRepresentation: pem) } catch {
            throw KeyError.invalid("not an RSA private key in PEM form")
        }
        try self.init(privateKey: key)
    }

    public var recipient: RSARecipient { try! RSARecipient(publicKey: privateKey.publicKey) }
    public func publicRecipient() -> Recipient { recipient }
    public var label: String { "RSA key \(recipient.keyID)" }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { $0.type == RSARecipient.stanzaType }) { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard stanza.arguments.count == 1 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 1 argument (key id)")
        }
        try PublicKeyID.check(stanza.arguments[0], stanzaType: stanza.type)
        guard stanza.arguments[0] == recipient.keyID else { return nil }
        guard stanza.body.count == privateKey.keySizeInBits / 8,
              let plain = try? privateKey.decrypt(stanza.body, padding: .PKCS1_OAEP_SHA256),
              plain.count == Limits.fileKeySize else {
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the stanza for key \(stanza.arguments[0]) does not decrypt: it was altered")
        }
        return Array(plain)
    }
}
