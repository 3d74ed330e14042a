import CofferFormat
import CofferKeys
import Crypto
import _CryptoExtras
import Foundation

/// Opens age stanzas: returns age's 16-byte file key when the stanza was made for this identity,
/// nil when it is of another type or for another key, and throws when a stanza of this identity's
/// type is malformed (age's header failure).
public protocol AgeIdentity: Sendable {
    func unwrap(_ stanza: Stanza) throws -> [UInt8]?
    var label: String { get }
}

/// Wraps age's 16-byte file key into a stanza.
public protocol AgeRecipient: Sendable {
    func wrap(_ fileKey: [UInt8]) throws -> Stanza
}

/// age's stanza key wrap: ChaCha20-Poly1305 under a single-use key with the all-zero nonce.
/// The body is exactly the sealed 16-byte file key (32 bytes); anything else is refused before
/// any decryption, as age does against partitioning oracles.
enum AgeWrap {
    static let bodySize = AgeHeader.fileKeySize + 16
    static let zeroNonce = [UInt8](repeating: 0, count: 12)

    static func seal(_ fileKey: [UInt8], key: SymmetricKey) throws -> [UInt8] {
        let box = try ChaChaPoly.seal(fileKey, using: key, nonce: ChaChaPoly.Nonce(data: zeroNonce))
        return Array(box.ciphertext) + Array(box.tag)
    }

    static func checkBody(_ stanza: Stanza) throws {
        guard stanza.body.count == bodySize else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the body must be \(bodySize) bytes, got \(stanza.body.count)")
        }
    }

    static func open(_ body: [UInt8], key: SymmetricKey) -> [UInt8]? {
        guard body.count == bodySize,
              let box = try? ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: zeroNonce),
                                                  ciphertext: body.prefix(AgeHeader.fileKeySize), tag: body.suffix(16)),
              let plain = try? ChaChaPoly.open(box, using: key) else { return nil }
        return Array(plain)
    }

    /// One base64 argument of exactly `size` bytes.
    static func argument(_ text: String, size: Int, stanzaType: String, what: String) throws -> [UInt8] {
        guard let bytes = RawBase64.decode(text), bytes.count == size else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "the \(what) must be \(size) bytes of canonical unpadded base64")
        }
        return bytes
    }

    /// X25519 of `privateKey` and `point`, refusing the all-zero result of a low-order point (swift-crypto
    /// returns it without an error); nil for such a point.
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

// MARK: - X25519

/// age's `X25519` stanza with age's 16-byte file key: the construction of ``X25519Recipient``
/// (whose wrap key it reuses), with exactly one argument, the ephemeral share.
public struct AgeX25519Recipient: AgeRecipient {
    public let publicKey: Curve25519.KeyAgreement.PublicKey

    public init(publicKey: Curve25519.KeyAgreement.PublicKey) { self.publicKey = publicKey }

    public func wrap(_ fileKey: [UInt8]) throws -> Stanza {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = ephemeral.publicKey.rawRepresentation
        let shared = try ephemeral.sharedSecretFromKeyAgreement(with: publicKey)
        let key = X25519Recipient.wrappingKey(shared: shared, share: share, recipient: publicKey.rawRepresentation)
        return Stanza(type: X25519Recipient.stanzaType, arguments: [RawBase64.encode(Array(share))],
                      body: try AgeWrap.seal(fileKey, key: key))
    }
}

public struct AgeX25519Identity: AgeIdentity {
    public let privateKey: Curve25519.KeyAgreement.PrivateKey

    public init(privateKey: Curve25519.KeyAgreement.PrivateKey) { self.privateKey = privateKey }

    public var label: String { "age X25519 key \(AgeKeyEncoding.recipient(publicKey: privateKey.publicKey).prefix(16))…" }

    public func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard stanza.type == X25519Recipient.stanzaType else { return nil }
        guard stanza.arguments.count == 1 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected exactly 1 argument (the share)")
        }
        let share = try AgeWrap.argument(stanza.arguments[0], size: 32, stanzaType: stanza.type, what: "share")
        try AgeWrap.checkBody(stanza)
        guard let shared = AgeWrap.sharedSecret(privateKey, share) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share is a low-order point")
        }
        let key = X25519Recipient.wrappingKey(shared: shared, share: Data(share), recipient: privateKey.publicKey.rawRepresentation)
        return AgeWrap.open(stanza.body, key: key)  // nil: another recipient's stanza
    }
}

// MARK: - scrypt

/// age's passphrase stanza (AGE-FORMAT.md §1.8):
/// `-> scrypt SALT LOG2N`, wrap key = scrypt(passphrase, "age-encryption.org/v1/scrypt" || SALT, N = 2^LOG2N, r = 8, p = 1).
/// It differs from Coffer's own `scrypt` stanza in its salt label and its 16-byte file key.
public final class AgeScrypt: AgeIdentity, AgeRecipient, @unchecked Sendable {
    public static let stanzaType = "scrypt"
    static let saltLabel = Array("age-encryption.org/v1/scrypt".utf8)
    /// age's defaults: 2^18 when writing (about a second); at most 2^22 (4 GiB) when reading.
    public static let defaultWorkFactor = 18
    public static let maxWorkFactor = 22

    private let passphrase: [UInt8]
    public let workFactor: Int

    public init(passphrase: [UInt8], workFactor: Int = AgeScrypt.defaultWorkFactor) throws {
        guard !passphrase.isEmpty else { throw CofferError.invalidKey("the passphrase is empty") }
        guard (1...Self.maxWorkFactor).contains(workFactor) else {
            throw CofferError.invalidParameter("scrypt work factor must be 1...\(Self.maxWorkFactor), got \(workFactor)")
        }
        self.passphrase = passphrase
        self.workFactor = workFactor
    }

    public var label: String { "passphrase" }

    func wrappingKey(salt: [UInt8], workFactor: Int) throws -> SymmetricKey {
        try KDF.Scrypt.deriveKey(from: passphrase, salt: Self.saltLabel + salt, outputByteCount: 32,
                                 rounds: 1 << workFactor, blockSize: 8, parallelism: 1)
    }

    public func wrap(_ fileKey: [UInt8]) throws -> Stanza {
        let salt = SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }
        let body = try AgeWrap.seal(fileKey, key: wrappingKey(salt: salt, workFactor: workFactor))
        return Stanza(type: Self.stanzaType, arguments: [RawBase64.encode(salt), String(workFactor)], body: body)
    }

    public func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard stanza.type == Self.stanzaType else { return nil }
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 2 arguments (salt, work factor)")
        }
        let salt = try AgeWrap.argument(stanza.arguments[0], size: 16, stanzaType: stanza.type, what: "salt")
        let text = stanza.arguments[1]
        // Decimal, no sign, no leading zero: one spelling per number.
        guard let first = text.utf8.first, first != 0x30, text.utf8.count <= 2,
              text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let workFactor = Int(text) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the work factor must be a decimal number without sign or leading zeros")
        }
        guard workFactor <= Self.maxWorkFactor else {
            throw CofferError.malformedStanza(
                type: stanza.type, reason: "work factor 2^\(workFactor) exceeds the maximum 2^\(Self.maxWorkFactor) (it would need \((1 << workFactor) >> 20) GiB of memory)")
        }
        try AgeWrap.checkBody(stanza)
        return AgeWrap.open(stanza.body, key: try wrappingKey(salt: salt, workFactor: workFactor))
    }
}

// MARK: - mlkem768x25519 (post-quantum hybrid)

/// age v1.3's `mlkem768x25519` stanza with the 16-byte file key: HPKE with X-Wing, as
/// ``HybridRecipient`` (whose suite it reuses), with exactly one argument, the encapsulated key.
public struct AgeHybridRecipient: AgeRecipient {
    public let publicKey: XWingMLKEM768X25519.PublicKey

    public init(publicKey: XWingMLKEM768X25519.PublicKey) { self.publicKey = publicKey }

    public func wrap(_ fileKey: [UInt8]) throws -> Stanza {
        var sender = try HPKE.Sender(recipientKey: publicKey, ciphersuite: HybridRecipient.suite, info: HybridRecipient.info)
        let body = try sender.seal(fileKey)
        return Stanza(type: HybridRecipient.stanzaType, arguments: [RawBase64.encode(Array(sender.encapsulatedKey))],
                      body: Array(body))
    }
}

public struct AgeHybridIdentity: AgeIdentity {
    static let encapsulatedKeySize = 1120
    public let identity: HybridIdentity

    public init(_ identity: HybridIdentity) { self.identity = identity }

    public var label: String { "age post-quantum key" }

    public func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard stanza.type == HybridRecipient.stanzaType else { return nil }
        guard stanza.arguments.count == 1 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected exactly 1 argument (the encapsulated key)")
        }
        let enc = try AgeWrap.argument(stanza.arguments[0], size: Self.encapsulatedKeySize, stanzaType: stanza.type,
                                       what: "encapsulated key")
        try AgeWrap.checkBody(stanza)
        // The X25519 half must not be a low-order point (age refuses it as malformed, it is no mere mismatch).
        if AgeWrap.isLowOrder(Array(enc.suffix(32))) {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the X25519 share is a low-order point")
        }
        guard var receiver = try? HPKE.Recipient(privateKey: identity.privateKey, ciphersuite: HybridRecipient.suite,
                                                 info: HybridRecipient.info, encapsulatedKey: Data(enc)),
              let plain = try? receiver.open(stanza.body), plain.count == AgeHeader.fileKeySize else { return nil }
        return Array(plain)
    }
}

// MARK: - From Coffer's key types

public enum AgeKeys {
    private static let registration: Void = {
        KeyTypes.registerAll()
        for type in [SSHKey.ed25519Type, SSHKey.rsaType] {
            StanzaDescriptions.register(type: type) { "\(type) key \($0.arguments.first ?? "?")" }
        }
    }()

    /// Which key a stanza of an age file needs, for messages ("an X25519 (age) key", "ssh-ed25519 key gfecRg").
    public static func describe(_ stanza: Stanza) -> String {
        registration
        return StanzaDescriptions.describe(stanza)
    }

    /// The age identities among keys parsed from identity files (`-i`): X25519, post-quantum and
    /// OpenSSH keys; key types that do not exist in age (Coffer key files, PEM RSA keys) are left out.
    public static func identities(from identities: [Identity]) -> [AgeIdentity] {
        identities.compactMap { identity -> AgeIdentity? in
            switch identity {
            case let key as X25519Identity: return AgeX25519Identity(privateKey: key.privateKey)
            case let key as HybridIdentity: return AgeHybridIdentity(key)
            case let key as SSHIdentity: return AgeSSHIdentity(key)
            default: return nil
            }
        }
    }

    /// The age recipients among Coffer recipients; throws for a type that age files cannot carry.
    public static func recipient(from recipient: Recipient) throws -> AgeRecipient {
        switch recipient {
        case let key as X25519Recipient: return AgeX25519Recipient(publicKey: key.publicKey)
        case let key as HybridRecipient: return AgeHybridRecipient(publicKey: key.publicKey)
        case let key as SSHRecipient: return try AgeSSHEd25519Recipient(key)
        case is SymmetricKeyFile:
            throw CofferError.invalidKey("a Coffer key file cannot open an age file: age has no symmetric keys (use a passphrase, age1… or ssh-ed25519 recipients)")
        case is RSARecipient:
            throw CofferError.invalidKey("a PEM RSA key cannot open an age file: age's RSA keys are ssh-rsa keys")
        default:
            throw CofferError.invalidKey("this key type cannot be written to an age file")
        }
    }
}
