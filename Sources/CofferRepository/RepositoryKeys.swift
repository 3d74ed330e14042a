import Crypto
import CofferFormat
import CofferKeys
import Foundation

// The one file of CofferRepository that uses the key protocols (`Recipient`, `Identity`) and the
// concrete key types of CofferKeys: when they change, only this file changes.

/// The user's keys that protect a key object: key files, passphrases, public keys, KMS keys — the
/// same recipients Coffer files are encrypted to (wrapped into the key object's header stanzas).
public struct KeyObjectRecipients: Sendable {
    let recipients: [Recipient]
    /// The key id of the recovery key among them, when the recovery policy names one.
    let recoveryKeyID: String?

    public init(recipients: [Recipient], recovery: Recipient? = nil) {
        self.recipients = recipients + (recovery.map { [$0] } ?? [])
        self.recoveryKeyID = recovery.flatMap(keyID(of:))
    }

    /// Wraps a key object's file key to every recipient. Runs on a thread of its own: KMS keys make
    /// blocking network calls, which must not run on the concurrency pool.
    func stanzas(for fileKey: FileKey) async throws -> [Stanza] {
        guard !recipients.isEmpty else { throw RepositoryError.key("no key given to protect the repository key with") }
        let recipients = self.recipients
        return try await onOwnThread { try recipients.flatMap { try $0.wrap(fileKey: fileKey.bytes) } }
    }
}

/// The key id a recipient writes into its stanza (its second argument for public keys), if any.
func keyID(of recipient: Recipient) -> String? {
    switch recipient {
    case let r as X25519Recipient: return r.keyID
    case let r as HybridRecipient: return r.keyID
    case let r as RSARecipient: return r.keyID
    case let r as SymmetricKeyFile: return r.keyID
    default: return nil
    }
}

/// The user's keys that open a key object.
public struct KeyObjectIdentities: Sendable {
    let identities: [Identity]
    private let record = UnwrapRecord()
    public init(identities: [Identity]) { self.identities = identities }

    /// The key object's file key, from the first identity that opens one of its stanzas (on a
    /// thread of its own, like ``KeyObjectRecipients/stanzas(for:)``).
    func fileKey(for header: Header) async throws -> FileKey {
        let identities = self.identities.map { RecordingIdentity(inner: $0, record: record) as Identity }
        return try await onOwnThread { try HeaderOpener.open(header, with: identities) }
    }

    /// The KMS key that unwrapped a key object's file key (its label), when a KMS key did: the
    /// key history records each such unwrap.
    public var kmsUnwrap: String? { record.kms }
}

/// Remembers which identity opened a stanza.
final class UnwrapRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var _kms: String?
    var kms: String? { lock.withLock { _kms } }
    func opened(by identity: Identity) {
        if identity is KMSIdentity { lock.withLock { _kms = identity.label } }
    }
}

/// An identity that reports a successful unwrap to an ``UnwrapRecord``.
struct RecordingIdentity: Identity {
    let inner: Identity
    let record: UnwrapRecord
    func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        let key = try inner.unwrap(stanzas: stanzas)
        if key != nil { record.opened(by: inner) }
        return key
    }
    var label: String { inner.label }
    func describe(_ stanza: Stanza) -> String? { inner.describe(stanza) }
}

/// A symmetric repository key (index key, ring key) used as a `keyfile` stanza recipient.
struct SymmetricObjectKey: Sendable {
    let key: SymmetricKeyFile
    init(_ bytes: [UInt8]) throws { key = try SymmetricKeyFile(keyBytes: bytes) }

    func stanzas(for fileKey: FileKey) throws -> [Stanza] { try key.wrap(fileKey: fileKey.bytes) }
    func fileKey(for header: Header, object: String) throws -> FileKey {
        do { return try HeaderOpener.open(header, with: [key]) } catch {
            throw RepositoryError.damaged(object: object, reason: "not encrypted under this repository's key (\(error))")
        }
    }
}

/// One generation of the data key pair: packs and snapshots are wrapped to its public half.
struct DataKeyPair: Sendable {
    let generation: Int
    let privateKey: Curve25519.KeyAgreement.PrivateKey
    var publicKey: DataPublicKey { DataPublicKey(generation: generation, publicKey: privateKey.publicKey) }

    init(generation: Int, privateKey: Curve25519.KeyAgreement.PrivateKey) {
        self.generation = generation
        self.privateKey = privateKey
    }

    init(generation: Int, rawPrivateKey: [UInt8]) throws {
        self.generation = generation
        do { privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: rawPrivateKey) } catch {
            throw RepositoryError.key("a data private key is not a valid X25519 key")
        }
    }
}

/// The public half of a data key generation (what a writer holds).
struct DataPublicKey: Sendable {
    let generation: Int
    let publicKey: Curve25519.KeyAgreement.PublicKey

    init(generation: Int, publicKey: Curve25519.KeyAgreement.PublicKey) {
        self.generation = generation
        self.publicKey = publicKey
    }

    init(generation: Int, raw: [UInt8]) throws {
        self.generation = generation
        do { publicKey = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw) } catch {
            throw RepositoryError.key("a data public key is not a valid X25519 key")
        }
    }

    /// The `X25519` stanza wrapping an object's file key to this public key.
    func stanzas(for fileKey: FileKey) throws -> [Stanza] { try X25519Recipient(publicKey: publicKey).wrap(fileKey: fileKey.bytes) }
}

/// Opens objects wrapped to any generation of the data key.
struct DataKeyring: Sendable {
    let pairs: [DataKeyPair]
    func fileKey(for header: Header, object: String) throws -> FileKey {
        do { return try HeaderOpener.open(header, with: pairs.map { X25519Identity(privateKey: $0.privateKey) }) } catch {
            throw RepositoryError.damaged(object: object, reason: "no data key of this repository opens it (\(error))")
        }
    }
}

/// The stanza descriptions of a header ("X25519 key 3f2a…", "a passphrase"), for `key list`.
func describeStanzas(_ header: Header) -> [String] {
    header.stanzas.map(KeyTypes.describe)
}

/// Runs blocking work (scrypt, KMS calls through a blocking bridge) on a new thread, not on the
/// concurrency pool, and awaits its result.
func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
