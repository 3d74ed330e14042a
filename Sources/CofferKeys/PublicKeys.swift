import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// Key ids of public keys: the first 8 bytes of
/// SHA-256("coffer/v1 public key id" || 0x00 || stanza type || 0x00 || public key bytes), in hex.
/// The type is part of the hash so one key's bytes can never name a key of another type.
public enum PublicKeyID {
    public static func of(type: String, publicKey: some DataProtocol) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("coffer/v1 public key id".utf8) + [0] + Array(type.utf8) + [0])
        hasher.update(data: Array(publicKey))
        return Hex.encode(Array(hasher.finalize()).prefix(8))
    }

    /// A stanza's key-id argument: 16 lower-case hex digits.
    static func check(_ id: String, stanzaType: String) throws {
        guard id.count == 16, id == id.lowercased(), Hex.decode(id) != nil else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "key id must be 16 lower-case hex digits")
        }
    }
}

// MARK: - X25519 (age's stanza)

/// The X25519 recipient stanza, with age's construction (age-encryption.org/v1, "X25519 recipient
/// stanza"), so keys made by `age-keygen` are Coffer keys and the other way round:
///
/// ```
/// -> X25519 SHARE [KEYID]
/// shared   = X25519(ephemeral secret, recipient)          ; SHARE = X25519(ephemeral secret, 9)
/// wrap key = HKDF(ikm: shared, salt: SHARE || recipient, info: "age-encryption.org/v1/X25519")
/// body     = ChaCha20-Poly1305(wrap key, 12 zero bytes, file key)
/// ```
/// Coffer adds the optional KEYID argument (``PublicKeyID``) so a file can say which recipients it
/// was made for; age's own stanza has none, and a stanza without it is tried like age does.
public struct X25519Recipient: Recipient {
    public static let stanzaType = "X25519"
    static let info = Array("age-encryption.org/v1/X25519".utf8)
    public let publicKey: Curve25519.KeyAgreement.PublicKey
    /// Write the KEYID argument (Coffer files); off for standard age files.
    public var namesKey = true

    public init(publicKey: Curve25519.KeyAgreement.PublicKey) {
        KeyTypes.registerAll()
        self.publicKey = publicKey
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.rawRepresentation) }
    public var encoded: String { AgeKeyEncoding.recipient(publicKey: publicKey) }

    /// The stanza's wrap key; shared with age files, whose stanza is the same (with a 16-byte file key).
    public static func wrappingKey(shared: SharedSecret, share: Data, recipient: Data) -> SymmetricKey {
        shared.hkdfDerivedSymmetricKey(using: SHA256.self, salt: share + recipient, sharedInfo: info, outputByteCount: 32)
    }

    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = ephemeral.publicKey.rawRepresentation
        let shared = try ephemeral.sharedSecretFromKeyAgreement(with: publicKey)
        let key = Self.wrappingKey(shared: shared, share: share, recipient: publicKey.rawRepresentation)
        var arguments = [RawBase64.encode(Array(share))]
        if namesKey { arguments.append(keyID) }
        return Stanza(type: Self.stanzaType, arguments: arguments, body: try WrapAEAD.seal(fileKey.bytes, key: key))
    }

    public static func registerDescription() {
        StanzaDescriptions.register(type: stanzaType) { stanza in
            stanza.arguments.count > 1 ? "X25519 key \(stanza.arguments[1])" : "an X25519 (age) key"
        }
    }
}

public struct X25519Identity: Identity {
    public let privateKey: Curve25519.KeyAgreement.PrivateKey

    public init(privateKey: Curve25519.KeyAgreement.PrivateKey) {
        KeyTypes.registerAll()
        self.privateKey = privateKey
    }

    public var recipient: X25519Recipient { X25519Recipient(publicKey: privateKey.publicKey) }
    public var label: String { "X25519 key \(recipient.keyID)" }

    public func unwrap(_ stanza: Stanza) throws -> FileKey? {
        guard stanza.type == X25519Recipient.stanzaType else { return nil }
        guard (1...2).contains(stanza.arguments.count) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 1 or 2 arguments (share, key id)")
        }
        guard let share = RawBase64.decode(stanza.arguments[0]), share.count == 32 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share must be 32 bytes of unpadded base64")
        }
        try WrapAEAD.checkBodySize(stanza)
        let named = stanza.arguments.count == 2
        if named {
            try PublicKeyID.check(stanza.arguments[1], stanzaType: stanza.type)
            guard stanza.arguments[1] == recipient.keyID else { return nil }
        }
        let ours = privateKey.publicKey.rawRepresentation
        // A low-order share gives the all-zero shared secret, which swift-crypto returns without an
        // error (the age vector x25519_low_order showed it): refused here.
        guard let shared = try? privateKey.sharedSecretFromKeyAgreement(
            with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: share)),
              !shared.withUnsafeBytes({ $0.allSatisfy { $0 == 0 } }) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share is not a usable X25519 point")
        }
        let key = X25519Recipient.wrappingKey(shared: shared, share: Data(share), recipient: ours)
        guard let fileKey = WrapAEAD.open(stanza.body, key: key) else {
            // An anonymous (age-style) stanza that does not open is simply someone else's.
            if !named { return nil }
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the stanza for key \(stanza.arguments[1]) does not authenticate: it was altered")
        }
        return try FileKey(bytes: fileKey)
    }
}

// MARK: - RSA-OAEP

/// `-> rsa-oaep KEYID`, body = RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) of the file key under
/// the recipient's public key. KEYID hashes the key's SubjectPublicKeyInfo DER.
/// Keys under 2048 bits are refused on both sides.
// @unchecked: swift-crypto's RSA keys are immutable wrappers of BoringSSL keys that are safe to use
// from several threads, but are not marked Sendable.
public struct RSARecipient: Recipient, @unchecked Sendable {
    public static let stanzaType = "rsa-oaep"
    public static let minimumBits = 2048
    public let publicKey: _RSA.Encryption.PublicKey

    public init(publicKey: _RSA.Encryption.PublicKey) throws {
        KeyTypes.registerAll()
        try Self.checkSize(publicKey.keySizeInBits)
        self.publicKey = publicKey
    }

    /// Reads a PEM public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, as `openssl pkey -pubout`
    /// writes) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    public init(pem: String) throws {
        let key: _RSA.Encryption.PublicKey
        do { key = try _RSA.Encryption.PublicKey(unsafePEMRepresentation: pem) } catch {
            throw CofferError.invalidKey("not an RSA public key in PEM form (\(error))")
        }
        try self.init(publicKey: key)
    }

    static func checkSize(_ bits: Int) throws {
        guard bits >= minimumBits else {
            throw CofferError.invalidKey("an RSA key of \(bits) bits is too small: at least \(minimumBits) bits (3072 or more recommended)")
        }
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.derRepresentation) }

    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        let body = try publicKey.encrypt(fileKey.bytes, padding: .PKCS1_OAEP_SHA256)
        return Stanza(type: Self.stanzaType, arguments: [keyID], body: Array(body))
    }

    public static func registerDescription() {
        StanzaDescriptions.register(type: stanzaType) { stanza in "RSA key \(stanza.arguments.first ?? "?")" }
    }
}

public struct RSAIdentity: Identity, @unchecked Sendable {
    public let privateKey: _RSA.Encryption.PrivateKey

    public init(privateKey: _RSA.Encryption.PrivateKey) throws {
        KeyTypes.registerAll()
        try RSARecipient.checkSize(privateKey.keySizeInBits)
        self.privateKey = privateKey
    }

    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes) or PKCS#1.
    public init(pem: String) throws {
        let key: _RSA.Encryption.PrivateKey
        do { key = try _RSA.Encryption.PrivateKey(unsafePEMRepresentation: pem) } catch {
            throw CofferError.invalidKey("not an RSA private key in PEM form")
        }
        try self.init(privateKey: key)
    }

    public var recipient: RSARecipient { try! RSARecipient(publicKey: privateKey.publicKey) }
    public var label: String { "RSA key \(recipient.keyID)" }

    public func unwrap(_ stanza: Stanza) throws -> FileKey? {
        guard stanza.type == RSARecipient.stanzaType else { return nil }
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
        return try FileKey(bytes: Array(plain))
    }
}

// MARK: - Post-quantum hybrid (age v1.3's mlkem768x25519)

/// The ML-KEM-768 + X25519 hybrid (X-Wing) recipient, with age v1.3's construction: HPKE base mode,
/// KEM X-Wing (0x647a), HKDF-SHA256, ChaCha20-Poly1305, info "age-encryption.org/mlkem768x25519".
///
/// ```
/// -> mlkem768x25519 ENC [KEYID]          ; ENC: the 1,120-byte encapsulated key
/// body = HPKE.Seal(file key)             ; 48 bytes for Coffer's 32-byte file key
/// ```
/// Keys are age's `age1pq1…` (the 1,216-byte public key) and `AGE-SECRET-KEY-PQ-1…` (the 32-byte seed).
public struct HybridRecipient: Recipient {
    public static let stanzaType = "mlkem768x25519"
    public static let recipientHRP = "age1pq"
    public static let identityHRP = "AGE-SECRET-KEY-PQ-"
    public static let info = Data("age-encryption.org/mlkem768x25519".utf8)
    public static let suite = HPKE.Ciphersuite(kem: .XWingMLKEM768X25519, kdf: .HKDF_SHA256, aead: .chaChaPoly)
    public let publicKey: XWingMLKEM768X25519.PublicKey
    public var namesKey = true

    public init(publicKey: XWingMLKEM768X25519.PublicKey) {
        KeyTypes.registerAll()
        self.publicKey = publicKey
    }

    public init(encoded text: String) throws {
        guard let (hrp, data) = Bech32.decode(text), hrp == Self.recipientHRP, text == text.lowercased(),
              let key = try? XWingMLKEM768X25519.PublicKey(rawRepresentation: data) else {
            throw CofferError.invalidKey("'\(text.prefix(12))…' is not a post-quantum recipient (age1pq1…, 1216 bytes)")
        }
        self.init(publicKey: key)
    }

    public var keyID: String { PublicKeyID.of(type: Self.stanzaType, publicKey: publicKey.rawRepresentation) }
    public var encoded: String { Bech32.encode(hrp: Self.recipientHRP, data: Array(publicKey.rawRepresentation)) }

    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        var sender = try HPKE.Sender(recipientKey: publicKey, ciphersuite: Self.suite, info: Self.info)
        let body = try sender.seal(fileKey.bytes)
        var arguments = [RawBase64.encode(Array(sender.encapsulatedKey))]
        if namesKey { arguments.append(keyID) }
        return Stanza(type: Self.stanzaType, arguments: arguments, body: Array(body))
    }

    public static func registerDescription() {
        StanzaDescriptions.register(type: stanzaType) { stanza in
            stanza.arguments.count > 1 ? "post-quantum key \(stanza.arguments[1])" : "a post-quantum (age) key"
        }
    }
}

public struct HybridIdentity: Identity {
    static let encapsulatedKeySize = 1120
    public let privateKey: XWingMLKEM768X25519.PrivateKey
    /// The 32-byte seed, from which the whole key pair is expanded.
    public let seed: [UInt8]

    public init(seed: [UInt8]) throws {
        KeyTypes.registerAll()
        guard seed.count == 32,
              let key = try? XWingMLKEM768X25519.PrivateKey(seedRepresentation: seed, publicKey: nil) else {
            throw CofferError.invalidKey("a post-quantum identity is a 32-byte seed")
        }
        privateKey = key
        self.seed = seed
    }

    public static func generate() -> HybridIdentity {
        try! HybridIdentity(seed: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public init(encoded text: String) throws {
        guard let (hrp, data) = Bech32.decode(text), hrp == HybridRecipient.identityHRP.lowercased(),
              text == text.uppercased() else {
            throw CofferError.invalidKey("not a post-quantum identity (AGE-SECRET-KEY-PQ-1…)")
        }
        try self.init(seed: data)
    }

    public var encoded: String { Bech32.encode(hrp: HybridRecipient.identityHRP, data: seed) }
    public var recipient: HybridRecipient { HybridRecipient(publicKey: privateKey.publicKey) }
    public var label: String { "post-quantum key \(recipient.keyID)" }

    public func unwrap(_ stanza: Stanza) throws -> FileKey? {
        guard stanza.type == HybridRecipient.stanzaType else { return nil }
        guard (1...2).contains(stanza.arguments.count) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 1 or 2 arguments (encapsulated key, key id)")
        }
        guard let enc = RawBase64.decode(stanza.arguments[0]), enc.count == Self.encapsulatedKeySize else {
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the encapsulated key must be \(Self.encapsulatedKeySize) bytes of unpadded base64")
        }
        try WrapAEAD.checkBodySize(stanza)
        let named = stanza.arguments.count == 2
        if named {
            try PublicKeyID.check(stanza.arguments[1], stanzaType: stanza.type)
            guard stanza.arguments[1] == recipient.keyID else { return nil }
        }
        guard var receiver = try? HPKE.Recipient(privateKey: privateKey, ciphersuite: HybridRecipient.suite,
                                                 info: HybridRecipient.info, encapsulatedKey: Data(enc)),
              let plain = try? receiver.open(stanza.body) else {
            if !named { return nil }
            throw CofferError.malformedStanza(type: stanza.type,
                                              reason: "the stanza for key \(stanza.arguments[1]) does not decrypt: it was altered")
        }
        return try FileKey(bytes: Array(plain))
    }
}
