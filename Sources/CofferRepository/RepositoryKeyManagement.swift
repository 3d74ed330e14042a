import Crypto
import CofferFormat
import Foundation

/// A key object as `key list` shows it. Only the header is readable without the key object's own
/// key, so other key objects show their stanzas (which keys open them) but no creation details.
public struct KeyObjectInfo: Codable, Sendable, Equatable {
    public var id: String
    /// Whether this is the key object that opened the repository.
    public var current: Bool
    /// Which keys open it ("key file 3f2a…", "a passphrase", "X25519 key …").
    public var keys: [String]
    /// Whether the recovery key named in the config opens it.
    public var recovery: Bool
    public var created: Date?
    public var hostname: String?
    public var username: String?
    /// Set when the header does not parse.
    public var damaged: String?
}

extension Repository {
    /// The key objects, sorted by id.
    /// What opens the key object this repository was opened (or created) with, read without listing
    /// (a fresh repository on a server that refuses listings to this credential can still record it).
    public func currentKeyLabels() async throws -> [String] {
        guard let keyID else { return [] }
        let name = try ObjectName(.keys, keyID)
        let bytes = try await storage.load(name)
        return describeStanzas(try CofferObject.parseHeader(bytes, object: name.description).header)
    }

    public func listKeys() async throws -> [KeyObjectInfo] {
        try requireFullAccess("key objects")
        var out: [KeyObjectInfo] = []
        for item in try await storage.listAll(.keys) where Self.isKeyObjectName(item.name.name) {
            var info = KeyObjectInfo(id: item.name.name, current: item.name.name == keyID, keys: [], recovery: false)
            do {
                let bytes = try await storage.load(item.name)
                let header = try CofferObject.parseHeader(bytes, object: item.name.description).header
                info.keys = describeStanzas(header)
                info.recovery = config.recoveryKeyId.map { id in header.stanzas.contains { $0.arguments.contains(id) } } ?? false
            } catch {
                info.damaged = "\(error)"
            }
            out.append(info)
        }
        if let keyID, let i = out.firstIndex(where: { $0.id == keyID }) {
            // Details of the current key object (its payload is ours to read).
            if let details = try? await currentKeyDetails() {
                out[i].created = details.created
                out[i].hostname = details.hostname
                out[i].username = details.username
            }
        }
        return out.sorted { $0.id < $1.id }
    }

    private func currentKeyDetails() async throws -> KeyObjectPayload? { stateLock.withLock { currentKeyPayload } }

    /// Adds a key object holding this repository's secrets, wrapped to `keys`. Returns its id.
    @discardableResult
    public func addKey(_ keys: KeyObjectRecipients, hostname: String = ProcessInfo.processInfo.hostName,
                       username: String = ProcessInfo.processInfo.environment["USER"] ?? "") async throws -> String {
        try requireFullAccess("key objects")
        guard let secrets else { throw RepositoryError.writerKeyCannotRead("key objects") }
        if config.requireRecovery, let id = config.recoveryKeyId, keys.recoveryKeyID != id {
            throw RepositoryError.refused("the repository's recovery policy requires every key object to include its recovery key (\(id))")
        }
        let id = randomObjectName()
        let payload = KeyObjectPayload(secrets: secrets, created: Date(), hostname: hostname, username: username)
        let fileKey = FileKey.random()
        let stanzas = try await keys.stanzas(for: fileKey)
        _ = try await Self.writeStatic(storage, try ObjectName(.keys, id), try RepositoryJSON.encode(payload), fileKey: fileKey) { _ in stanzas }
        let header = try CofferObject.parseHeader(try await storage.load(try ObjectName(.keys, id)), object: "keys/\(id)").header
        try await appendKeyEvent(KeyEvent(.add, key: id, detail: describeStanzas(header).joined(separator: ", "),
                                          hostname: hostname, username: username))
        return id
    }

    /// Removes a key object (by full id or unique prefix). Refuses to remove the key that opened the
    /// repository, the last key object, or the last one the recovery key opens when the config
    /// requires recovery; and, on a storage with object lock, a key object that is still retained,
    /// unless `evenIfRetained` (``KeyRemoval/consequence`` says why: the locked version stays and
    /// still opens the repository). Nothing is removed when it refuses. Returns what it removed.
    @discardableResult
    public func removeKey(_ reference: String, evenIfRetained: Bool = false) async throws -> KeyRemoval {
        let removal = try await planKeyRemoval(reference)
        if removal.retainedUntil != nil && !evenIfRetained {
            throw RepositoryError.refused(removal.consequence + " Nothing was removed.")
        }
        try await storage.remove(try ObjectName(.keys, removal.id))
        try await appendKeyEvent(KeyEvent(.remove, key: removal.id, detail: removal.keys.joined(separator: ", ")))
        return removal
    }

    /// Starts a new data-key generation: a fresh X25519 key pair stored as `keys/data-N`; new packs
    /// and snapshots are wrapped to it. Old generations stay, so old data remains readable; no key
    /// object and no data is rewritten. Returns the new generation.
    @discardableResult
    public func rotateDataKey() async throws -> Int {
        try requireFullAccess("data keys")
        guard let secrets else { throw RepositoryError.writerKeyCannotRead("data keys") }
        try await flush()
        let existing = try await Self.readDataKeys(storage, secrets: secrets)
        let generation = (existing.last?.generation ?? 0) + 1
        let key = Curve25519.KeyAgreement.PrivateKey()
        let payload = DataKeyPayload(version: 1, repository: config.id, generation: generation, created: Date(),
                                     privateKey: Base64Bytes(Array(key.rawRepresentation)))
        let ring = try SymmetricObjectKey(secrets.ringKey)
        _ = try await writeObject(try ObjectName(.keys, "data-\(generation)"), try RepositoryJSON.encode(payload)) { try ring.stanzas(for: $0) }
        let pair = DataKeyPair(generation: generation, privateKey: key)
        stateLock.withLock {
            dataKeys = existing + [pair]
            currentPublicKey = pair.publicKey
        }
        try await appendKeyEvent(KeyEvent(.rotate, key: "data-\(generation)", detail: "data-key generation \(generation)"))
        return generation
    }

    /// A writer key for this repository (docs/REPOSITORY.md, "Writer keys"): chunker, chunk-id and
    /// index keys, the current data public key, the repository id and the config's digest.
    public func makeWriterKey() throws -> WriterKeyFile {
        try requireFullAccess("key objects")
        guard let secrets else { throw RepositoryError.writerKeyCannotRead("key objects") }
        let pub = currentDataPublicKey
        return WriterKeyFile(type: WriterKeyFile.typeName, version: 1, repository: config.id, configSha256: Hex.encode(configDigest),
                             created: Date(), chunkerKey: Base64Bytes(secrets.chunkerKey), chunkIdKey: Base64Bytes(secrets.chunkIDKey),
                             indexKey: Base64Bytes(secrets.indexKey), dataKeyGeneration: pub.generation,
                             dataPublicKey: Base64Bytes(Array(pub.publicKey.rawRepresentation)))
    }
}
