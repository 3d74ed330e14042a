import Crypto
import CofferFormat
import Foundation

/// A backup repository (docs/REPOSITORY.md): config, key objects, data packs, index, snapshots and
/// locks on a ``Storage``. Implements ``BlobStore`` for the archiver and the restorer.
///
/// Opened with a key object (full access: read and write) or with a writer key (write only: it
/// can chunk, compute ids, read the index for deduplication and write packs, index and snapshots,
/// but decrypts no pack and no snapshot).
public final class Repository: BlobStore, @unchecked Sendable {
    public enum Access: String, Sendable { case full, writer }

    public let storage: any Storage
    public let config: RepositoryConfig
    public let access: Access
    /// The key object that opened the repository (full access), e.g. for `key list`'s "current".
    public let keyID: String?
    /// SHA-256 of the stored config object (a writer key records it).
    let configDigest: [UInt8]
    let secrets: RepositorySecrets?
    let chunkIDKey: ChunkIDKey
    let gear: GearTable
    let indexKey: SymmetricObjectKey
    let chunkerParameters: ChunkerParameters

    let stateLock = NSLock()
    var dataKeys: [DataKeyPair]
    /// The payload of the key object that opened the repository (full access).
    var currentKeyPayload: KeyObjectPayload?
    var currentPublicKey: DataPublicKey
    var index = BlobIndex()
    /// Index objects that did not authenticate or parse (only when opened with `tolerateDamage`).
    public private(set) var damagedIndexObjects: [String: String] = [:]
    var pending: [BlobKey: PendingBlob] = [:]
    /// The open pack of each kind: data blobs and tree blobs go to packs of their own (restic's
    /// rule), so that listing and planning a restore read the few tree packs, and a restore reads
    /// each data pack once, not a pack shared with trees again. A tree pack's buffer grows as
    /// trees come (trees are small), a data pack's is a pooled buffer of the pack size.
    var openPacks: [BlobKind: PackBuilder] = [:]
    /// Full packs being sealed (in their own buffer: their plaintext is overwritten) and stored: a
    /// load of one of their blobs waits until the pack is stored, then reads it from the storage.
    var uploading: Set<String> = []
    var finishedPacks: [IndexedPack] = []
    var tasks: [Task<Void, Error>] = []
    var headerCache: [String: CofferObject.Opened] = [:]
    /// Decrypted tree packs on remote storage (``treePackPlaintext(_:size:)``) and their total size.
    var treePackCache: [String: [UInt8]] = [:]
    var treePackCacheBytes = 0
    var compressors: [ChunkCompressor] = []
    private let limiter: AsyncLimiter
    /// Full packs being sealed and stored; a save that must start a new pack while
    /// ``packsInFlight(_:)`` are still in flight waits for one (bounds memory).
    let packSlots: PackSlots
    /// Full packs being sealed and stored at once: each holds one buffer of the pack size (sealed in
    /// place: ``CofferObject/sealInPlace(_:_:)``). One is enough: a save waits only when it must start
    /// a new pack while the previous one is still being sealed and written (milliseconds: sealing runs
    /// at GB/s, far faster than compressing a pack's worth of chunks); blobs are compressed and
    /// appended to the open pack meanwhile. With the open pack, a backup holds 2 pack buffers.
    /// On remote storage a save is a network round trip (an upload of several MiB), not
    /// milliseconds: with one pack in flight the next pack filled and waited (an S3 backup of 128 MiB
    /// took 1.56 s instead of 1.1 s), so there ``maxRemotePacksInFlight`` (two more buffers).
    static let maxPacksInFlight = 1
    static let maxRemotePacksInFlight = 3
    static func packsInFlight(_ storage: any Storage) -> Int {
        storage.properties.remote ? maxRemotePacksInFlight : maxPacksInFlight
    }
    /// The pack buffers (open pack and packs in flight), reused for the whole run.
    let packBuffers: BufferPool
    /// Room a pack's buffer keeps beyond its plaintext for sealing in place: header slots and
    /// payload nonce (a data pack's header takes ~4 KiB) and 16 bytes per 64 KiB chunk.
    static func packBufferCapacity(plaintext: Int) -> Int {
        plaintext + 16 << 10 + (plaintext / CofferObject.packChunkSize + 1) * Limits.tagSize
    }

    /// How new blobs are compressed (default: zstd level 2, raw when that does not shrink a blob).
    public var compression: CompressionMode {
        get { stateLock.withLock { _compression } }
        set { stateLock.withLock { _compression = newValue; compressors = [] } }
    }
    private var _compression: CompressionMode = .auto

    /// Target plaintext size of packs; packs are sealed when they reach it (default: the config's).
    public var packSize: Int {
        get { stateLock.withLock { _packSize } }
        set { stateLock.withLock { _packSize = max(4096, newValue) } }
    }
    private var _packSize: Int

    struct PendingBlob {
        var pack: String
        var blob: PackedBlob?
    }

    struct PackBuilder {
        let name: String
        /// The blobs, then (once full) the trailer: the pack's whole plaintext, sealed as it is.
        var buffer: [UInt8]
        var blobs: [PackedBlob] = []
        /// Whether `buffer` came from (and goes back to) ``Repository/packBuffers`` (data packs).
        let pooled: Bool

        /// `buffer`: empty, with capacity reserved up front (pack size and sealing room), so that it
        /// is not reallocated (and its bytes copied, its capacity doubled) as blobs are appended;
        /// or (a tree pack, `pooled` false) empty, growing as trees come.
        init(name: String, buffer: [UInt8], pooled: Bool = true) {
            self.name = name
            self.buffer = buffer
            self.pooled = pooled
        }

        /// The pack's plaintext size with one more blob of `length` bytes and the trailer.
        func size(adding length: Int) -> Int { buffer.count + length + (blobs.count + 1) * PackedBlob.encodedSize + 8 }

        /// Appends the trailer in place (no copy of the blob area; blob offsets stay valid) and
        /// hands the pack over for sealing: its buffer moves into a box, so that the task that seals
        /// it holds the only reference (sealed in place, no copy).
        consuming func full() -> FullPack {
            buffer += PackTrailer.encode(blobs)
            var bytes: [UInt8] = []
            swap(&bytes, &buffer)
            return FullPack(name: name, blobs: blobs, buffer: BufferBox(bytes), pooled: pooled)
        }
    }

    /// A full pack on its way to the storage.
    struct FullPack {
        let name: String
        let blobs: [PackedBlob]
        let buffer: BufferBox
        let pooled: Bool
    }

    init(storage: any Storage, config: RepositoryConfig, configDigest: [UInt8], access: Access, keyID: String?,
         secrets: RepositorySecrets?, chunkerKey: [UInt8], chunkIDKey: [UInt8], indexKey: [UInt8],
         dataKeys: [DataKeyPair], currentPublicKey: DataPublicKey) throws {
        self.storage = storage
        packSlots = PackSlots(limit: Repository.packsInFlight(storage))
        packBuffers = BufferPool(keep: Repository.packsInFlight(storage) + 1)
        self.config = config
        self.configDigest = configDigest
        self.access = access
        self.keyID = keyID
        self.secrets = secrets
        self.chunkIDKey = try ChunkIDKey(key: SymmetricKey(data: chunkIDKey))
        self.gear = GearTable(key: SymmetricKey(data: chunkerKey))
        self.indexKey = try SymmetricObjectKey(indexKey)
        self.chunkerParameters = try config.chunkerParameters
        self.dataKeys = dataKeys
        self.currentPublicKey = currentPublicKey
        self._packSize = config.packSize
        storage.useObjectLock(config.objectLock)
        self.limiter = AsyncLimiter(ProcessInfo.processInfo.activeProcessorCount)
    }

    var currentDataPublicKey: DataPublicKey { stateLock.withLock { currentPublicKey } }

    /// The data-key generation new packs and snapshots are wrapped to.
    public var dataKeyGeneration: Int { stateLock.withLock { currentPublicKey.generation } }

    var dataKeyring: DataKeyring {
        get throws {
            let keys = stateLock.withLock { dataKeys }
            guard access == .full, !keys.isEmpty else { throw RepositoryError.writerKeyCannotRead("the repository's data") }
            return DataKeyring(pairs: keys)
        }
    }

    func requireFullAccess(_ what: String) throws {
        if access != .full { throw RepositoryError.writerKeyCannotRead(what) }
    }

    // MARK: Objects

    /// Seals `plaintext` as object `name` with a fresh file key wrapped by `stanzas`, and stores it.
    func writeObject(_ name: ObjectName, _ plaintext: [UInt8], overwrite: Bool = false,
                     stanzas: (FileKey) throws -> [Stanza]) async throws -> [UInt8] {
        let fileKey = FileKey.random()
        let sealed = try CofferObject.seal(plaintext, objectName: name.description, fileKey: fileKey, stanzas: try stanzas(fileKey))
        try await storage.save(name, contents: sealed, overwrite: overwrite)
        return sealed
    }

    /// Loads and decrypts a whole object; `fileKey` finds its file key from the parsed header.
    static func readObject(_ storage: any Storage, _ name: ObjectName,
                           fileKey: (Header) throws -> FileKey) async throws -> (plaintext: [UInt8], header: Header, stored: [UInt8]) {
        let bytes = try await loadObjectBytes(storage, name)
        let (plaintext, header) = try openObject(bytes, name, fileKey: fileKey)
        return (plaintext, header, bytes)
    }

    /// A whole object's stored bytes; a missing object is ``RepositoryError/missing(object:reason:)``.
    static func loadObjectBytes(_ storage: any Storage, _ name: ObjectName) async throws -> [UInt8] {
        do { return try await storage.load(name) } catch StorageError.notFound {
            throw RepositoryError.missing(object: name.description, reason: "not in the storage")
        }
    }

    /// Decrypts an object from its stored `bytes`; `fileKey` finds its file key from the parsed header.
    static func openObject(_ bytes: [UInt8], _ name: ObjectName,
                           fileKey: (Header) throws -> FileKey) throws -> (plaintext: [UInt8], header: Header) {
        let parsed = try CofferObject.parseHeader(bytes, object: name.description)
        let key: FileKey
        do { key = try fileKey(parsed.header) } catch let e as RepositoryError { throw e } catch let e as AccessError {
            if case .noMatchingKey = e { throw e }
            throw RepositoryError.damaged(object: name.description, reason: "\(e)")
        } catch let e as CofferError {
            throw RepositoryError.damaged(object: name.description, reason: "\(e)")
        }
        let opened = try CofferObject.open(parsed, fileKey: key, object: name.description)
        return (try CofferObject.decryptAll(bytes, opened), parsed.header)
    }

    func readIndexKeyed(_ name: ObjectName) async throws -> [UInt8] {
        try await Self.readObject(storage, name) { try indexKey.fileKey(for: $0, object: name.description) }.plaintext
    }

    // MARK: Creating and opening

    /// Options of a new repository.
    public struct CreateOptions: Sendable {
        public var chunker: ChunkerParameters = .default
        public var packSize: Int = RepositoryConfig.defaultPackSize
        /// Removing keys must leave one that the recovery key opens.
        public var requireRecovery = false
        /// Object lock: retention for every object written (an S3 bucket with object lock enabled).
        public var objectLock: ObjectLock?
        public var hostname = ProcessInfo.processInfo.hostName
        public var username = ProcessInfo.processInfo.environment["USER"] ?? ""
        public init() {}
    }

    /// Creates a repository on empty `storage`: writes the config, the first data-key object and the
    /// first key object (wrapped to `keys`), and returns it opened with full access.
    public static func create(storage: any Storage, keys: KeyObjectRecipients, options: CreateOptions = CreateOptions()) async throws -> Repository {
        try await create(storage: storage, keys: keys, options: options, secrets: .random(),
                         dataKey: Curve25519.KeyAgreement.PrivateKey(), created: Date())
    }

    /// Test vectors only: a repository whose secrets and data key derive from `seed` (32 bytes), so
    /// that a checked-in repository can be read with a known key. Never for real data.
    @_spi(Testing)
    public static func create(storage: any Storage, keys: KeyObjectRecipients, options: CreateOptions,
                              testSeed seed: [UInt8], created: Date) async throws -> Repository {
        func derive(_ label: String) -> [UInt8] {
            Array(HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: seed), info: Array(label.utf8), outputByteCount: 32)
                .withUnsafeBytes { Array($0) })
        }
        let secrets = RepositorySecrets(repositoryID: derive("id"), chunkerKey: derive("chunker"), chunkIDKey: derive("chunk-id"),
                                        indexKey: derive("index"), ringKey: derive("ring"))
        return try await create(storage: storage, keys: keys, options: options, secrets: secrets,
                                dataKey: try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: derive("data-1")), created: created)
    }

    static func create(storage: any Storage, keys: KeyObjectRecipients, options: CreateOptions, secrets: RepositorySecrets,
                       dataKey: Curve25519.KeyAgreement.PrivateKey, created: Date) async throws -> Repository {
        let configName = try ObjectName(.config, "config")
        if (try? await storage.stat(configName)) != nil {
            throw RepositoryError.refused("a repository already exists there (it has a config object)")
        }
        if let reason = options.objectLock?.invalidReason { throw RepositoryError.refused(reason) }
        if options.requireRecovery && keys.recoveryKeyID == nil {
            throw RepositoryError.refused("the recovery policy is on but no recovery key is given")
        }
        let config = RepositoryConfig(version: repositoryFormatVersion, id: Hex.encode(secrets.repositoryID), created: created,
                                      chunkerMin: options.chunker.minSize, chunkerAvg: options.chunker.averageSize,
                                      chunkerMax: options.chunker.maxSize, packSize: options.packSize,
                                      requireRecovery: options.requireRecovery, recoveryKeyId: keys.recoveryKeyID,
                                      objectLock: options.objectLock)
        try config.validate()
        if let lock = options.objectLock {
            guard storage.supportsObjectLock else { throw RepositoryError.refused("object lock needs a storage that can lock objects (an S3 bucket with object lock enabled)") }
            storage.useObjectLock(lock)
        }
        let indexKey = try SymmetricObjectKey(secrets.indexKey)
        let ringKey = try SymmetricObjectKey(secrets.ringKey)
        // Data key and key object first, config last: a repository is complete once its config exists.
        let pair = DataKeyPair(generation: 1, privateKey: dataKey)
        let dataPayload = DataKeyPayload(version: 1, repository: config.id, generation: 1, created: created,
                                         privateKey: Base64Bytes(Array(dataKey.rawRepresentation)))
        _ = try await writeStatic(storage, try ObjectName(.keys, "data-1"), try RepositoryJSON.encode(dataPayload), stanzas: ringKey.stanzas)
        let keyID = randomObjectName()
        let payload = KeyObjectPayload(secrets: secrets, created: created, hostname: options.hostname, username: options.username)
        let keyFileKey = FileKey.random()
        let keyStanzas = try await keys.stanzas(for: keyFileKey)
        _ = try await writeStatic(storage, try ObjectName(.keys, keyID), try RepositoryJSON.encode(payload), fileKey: keyFileKey) { _ in keyStanzas }
        let stored = try await writeStatic(storage, configName, try RepositoryJSON.encode(config), stanzas: indexKey.stanzas)
        return try Repository(storage: storage, config: config, configDigest: Array(SHA256.hash(data: stored)), access: .full,
                              keyID: keyID, secrets: secrets, chunkerKey: secrets.chunkerKey, chunkIDKey: secrets.chunkIDKey,
                              indexKey: secrets.indexKey, dataKeys: [pair], currentPublicKey: pair.publicKey)
    }

    static func writeStatic(_ storage: any Storage, _ name: ObjectName, _ plaintext: [UInt8], overwrite: Bool = false,
                            fileKey: FileKey = FileKey.random(), stanzas: (FileKey) throws -> [Stanza]) async throws -> [UInt8] {
        let sealed = try CofferObject.seal(plaintext, objectName: name.description, fileKey: fileKey, stanzas: try stanzas(fileKey))
        try await storage.save(name, contents: sealed, overwrite: overwrite)
        return sealed
    }

    /// Whether a `keys/` name is a key object (64 hex digits) rather than a data-key object.
    static func isKeyObjectName(_ name: String) -> Bool {
        name.utf8.count == 64 && name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Opens with the user's keys: the first key object one of them opens gives the repository's
    /// secrets; then the config, the data keys and the index are read and checked.
    /// With `tolerateDamage`, damaged index objects are set aside (``damagedIndexObjects``) instead
    /// of failing the open (for `check`).
    ///
    /// On remote storage every request is a round trip, so the requests that need no key start
    /// together (the key listing, the config, the index listing), and once a key object has given
    /// the secrets, the data keys and the index objects load side by side: three round trips one
    /// after the other instead of seven. Nothing is decrypted before the secrets are known, and
    /// the config is checked against them exactly as before.
    public static func open(storage: any Storage, identities: KeyObjectIdentities, tolerateDamage: Bool = false) async throws -> Repository {
        let configName = try ObjectName(.config, "config")
        async let configBytes = loadObjectBytes(storage, configName)
        async let indexListing = storage.listAll(.index)
        let keyListing = try await storage.listAll(.keys)
        let names = keyListing.map(\.name.name).filter(isKeyObjectName).sorted()
        guard !names.isEmpty else {
            if (try? await configBytes) == nil {
                throw RepositoryError.missing(object: "config/config", reason: "no repository there (no config and no key objects)")
            }
            throw RepositoryError.key("the repository has no key objects")
        }
        var found: (String, RepositorySecrets, KeyObjectPayload)?
        var lastKeyError: Error?
        for name in names {
            let object = try ObjectName(.keys, name)
            do {
                let plain = try await readKeyObject(storage, object, identities: identities)
                let payload = try RepositoryJSON.decode(KeyObjectPayload.self, plain, object: object.description)
                found = (name, try payload.secrets(object: object.description), payload)
                break
            } catch let e as AccessError {
                if case .noMatchingKey = e { lastKeyError = e; continue }
                throw e
            } catch RepositoryError.missing {
                continue  // removed meanwhile
            }
        }
        guard let found else {
            throw RepositoryError.key("no given key opens any of the repository's \(names.count) key objects\(lastKeyError.map { " (\($0))" } ?? "")")
        }
        let (keyID, secrets, keyPayload) = found
        let (config, digest) = try readConfig(try await configBytes, indexKey: secrets.indexKey)
        guard config.id == Hex.encode(secrets.repositoryID) else {
            throw RepositoryError.damaged(object: "keys/\(keyID)", reason: "it belongs to repository \(Hex.encode(secrets.repositoryID)), not \(config.id)")
        }
        // The index objects need only the index key: they load while the data keys do.
        async let dataKeys = readDataKeys(storage, secrets: secrets, listing: keyListing)
        let (index, damaged) = try await readIndex(storage, names: try await indexListing.map(\.name),
                                                   indexKey: try SymmetricObjectKey(secrets.indexKey), tolerateDamage: tolerateDamage)
        let pairs = try await dataKeys
        let repository = try Repository(storage: storage, config: config, configDigest: digest, access: .full, keyID: keyID,
                                        secrets: secrets, chunkerKey: secrets.chunkerKey, chunkIDKey: secrets.chunkIDKey,
                                        indexKey: secrets.indexKey, dataKeys: pairs, currentPublicKey: pairs.last!.publicKey)
        repository.currentKeyPayload = keyPayload
        repository.setIndex(index, damaged: damaged)
        return repository
    }

    /// Opens with a writer key: write-only access.
    public static func open(storage: any Storage, writerKey: WriterKeyFile) async throws -> Repository {
        async let indexListing = storage.listAll(.index)  // while the config loads
        let config: RepositoryConfig, digest: [UInt8]
        do { (config, digest) = try await readConfig(storage, indexKey: writerKey.indexKey.bytes) } catch RepositoryError.damaged {
            throw RepositoryError.key("the writer key does not open this repository's config (it belongs to another repository)")
        }
        guard config.id == writerKey.repository, Hex.encode(digest) == writerKey.configSha256 else {
            throw RepositoryError.key("the writer key belongs to another repository (or the repository's config was replaced)")
        }
        let publicKey = try DataPublicKey(generation: writerKey.dataKeyGeneration, raw: writerKey.dataPublicKey.bytes)
        let repository = try Repository(storage: storage, config: config, configDigest: digest, access: .writer, keyID: nil,
                                        secrets: nil, chunkerKey: writerKey.chunkerKey.bytes, chunkIDKey: writerKey.chunkIdKey.bytes,
                                        indexKey: writerKey.indexKey.bytes, dataKeys: [], currentPublicKey: publicKey)
        let (index, damaged) = try await readIndex(storage, names: try await indexListing.map(\.name),
                                                   indexKey: repository.indexKey, tolerateDamage: false)
        repository.setIndex(index, damaged: damaged)
        return repository
    }

    /// Loads a key object and decrypts it with the user's keys.
    static func readKeyObject(_ storage: any Storage, _ name: ObjectName, identities: KeyObjectIdentities) async throws -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try await storage.load(name) } catch StorageError.notFound {
            throw RepositoryError.missing(object: name.description, reason: "not in the storage")
        }
        let parsed = try CofferObject.parseHeader(bytes, object: name.description)
        let key: FileKey
        do { key = try await identities.fileKey(for: parsed.header) } catch let e as AccessError {
            if case .noMatchingKey = e { throw e }
            throw RepositoryError.damaged(object: name.description, reason: "\(e)")
        } catch let e as CofferError {
            throw RepositoryError.damaged(object: name.description, reason: "\(e)")
        }
        let opened = try CofferObject.open(parsed, fileKey: key, object: name.description)
        return try CofferObject.decryptAll(bytes, opened)
    }

    static func readConfig(_ storage: any Storage, indexKey: [UInt8]) async throws -> (RepositoryConfig, [UInt8]) {
        try readConfig(try await loadObjectBytes(storage, try ObjectName(.config, "config")), indexKey: indexKey)
    }

    /// The config from its stored bytes, and the SHA-256 of those bytes.
    static func readConfig(_ stored: [UInt8], indexKey: [UInt8]) throws -> (RepositoryConfig, [UInt8]) {
        let name = try ObjectName(.config, "config")
        let key = try SymmetricObjectKey(indexKey)
        let (plain, _) = try openObject(stored, name) { try key.fileKey(for: $0, object: name.description) }
        let config = try RepositoryJSON.decode(RepositoryConfig.self, plain, object: name.description)
        try config.validate()
        return (config, Array(SHA256.hash(data: stored)))
    }

    /// Every data-key object (`keys/data-N`), oldest generation first, loaded side by side;
    /// `listing` is the `keys/` listing when the caller has one.
    static func readDataKeys(_ storage: any Storage, secrets: RepositorySecrets, listing: [ObjectInfo]? = nil) async throws -> [DataKeyPair] {
        let ring = try SymmetricObjectKey(secrets.ringKey)
        let keys: [ObjectInfo]
        if let listing { keys = listing } else { keys = try await storage.listAll(.keys) }
        let objects = keys.filter { $0.name.name.hasPrefix("data-") }
        var pairs: [DataKeyPair] = []
        try await forEachConcurrently(objects, width: storage.properties.connections) { info in
            try await readObject(storage, info.name) { try ring.fileKey(for: $0, object: info.name.description) }.plaintext
        } consume: { info, result in
            let p = try RepositoryJSON.decode(DataKeyPayload.self, try result.get(), object: info.name.description)
            guard p.version == 1, p.repository == Hex.encode(secrets.repositoryID), "data-\(p.generation)" == info.name.name else {
                throw RepositoryError.damaged(object: info.name.description, reason: "it is not this repository's data key \(info.name.name)")
            }
            pairs.append(try DataKeyPair(generation: p.generation, rawPrivateKey: p.privateKey.bytes))
        }
        guard !pairs.isEmpty else { throw RepositoryError.missing(object: "keys/data-1", reason: "the repository has no data key") }
        return pairs.sorted { $0.generation < $1.generation }
    }

    /// Reads every index object into the in-memory index.
    func loadIndex(tolerateDamage: Bool) async throws {
        let (fresh, damaged) = try await Self.readIndex(storage, names: try await storage.listAll(.index).map(\.name),
                                                        indexKey: indexKey, tolerateDamage: tolerateDamage)
        setIndex(fresh, damaged: damaged)
    }

    func readIndexObject(_ name: ObjectName) async throws -> [IndexedPack] {
        let plain = try await readIndexKeyed(name)
        return try IndexFormat.decode(plain, object: name.description)
    }

    func setIndex(_ fresh: BlobIndex, damaged: [String: String]) {
        stateLock.withLock {
            index = fresh
            damagedIndexObjects = damaged
        }
    }

    /// The index objects `names`, read side by side and merged; with `tolerateDamage`, the ones
    /// that fail to read or decode are returned apart (object → reason) instead of failing.
    static func readIndex(_ storage: any Storage, names: [ObjectName], indexKey key: SymmetricObjectKey,
                          tolerateDamage: Bool) async throws -> (BlobIndex, [String: String]) {
        var fresh = BlobIndex()
        var damaged: [String: String] = [:]
        try await forEachConcurrently(names, width: storage.properties.connections) { name in
            let plain = try await readObject(storage, name) { try key.fileKey(for: $0, object: name.description) }.plaintext
            return try IndexFormat.decode(plain, object: name.description)
        } consume: { name, result in
            switch result {
            case .success(let packs):
                for p in packs { fresh.add(p) }
                fresh.indexObjects.insert(name.name)
            case .failure(let error):
                if tolerateDamage, error is RepositoryError { damaged[name.description] = "\(error)" } else { throw error }
            }
        }
        return (fresh, damaged)
    }

    /// Runs `work` on every item with up to `storage.properties.connections` (or `width`, if
    /// smaller) at once; `consume` sees results one at a time, on the calling task.
    func forEachConcurrently<T: Sendable, R: Sendable>(_ items: [T], width limit: Int? = nil,
                                                       _ work: @escaping @Sendable (T) async throws -> R,
                                                       consume: (T, Result<R, Error>) throws -> Void) async throws {
        try await Self.forEachConcurrently(items, width: min(storage.properties.connections, limit ?? .max), work, consume: consume)
    }

    /// ``forEachConcurrently(_:width:_:consume:)`` with `width` (at most 16) at once.
    static func forEachConcurrently<T: Sendable, R: Sendable>(_ items: [T], width limit: Int,
                                                              _ work: @escaping @Sendable (T) async throws -> R,
                                                              consume: (T, Result<R, Error>) throws -> Void) async throws {
        let width = max(1, min(16, limit))
        try await withThrowingTaskGroup(of: (T, Result<R, Error>).self) { group in
            var next = 0
            while next < items.count && next < width {
                let item = items[next]; next += 1
                group.addTask { do { return (item, .success(try await work(item))) } catch { return (item, .failure(error)) } }
            }
            while let pair = try await group.next() {
                let (item, result) = pair
                try consume(item, result)
                if next < items.count {
                    let item = items[next]; next += 1
                    group.addTask { do { return (item, .success(try await work(item))) } catch { return (item, .failure(error)) } }
                }
            }
        }
    }

    // MARK: BlobStore

    public func blobID(of plaintext: UnsafeRawBufferPointer) -> BlobID { chunkIDKey.id(of: plaintext) }

    public func makeChunker() -> FastCDC { FastCDC(parameters: chunkerParameters, gear: gear) }

    public func contains(_ kind: BlobKind, _ id: BlobID) -> Bool {
        let key = BlobKey(kind, id)
        return stateLock.withLock { index.contains(kind, id) || pending[key] != nil }
    }

    /// Every blob id in the loaded index (any kind).
    public func allIndexedBlobIDs() -> Set<BlobID> {
        stateLock.withLock { Set(index.entries.keys.map(\.id)) }
    }

    /// How many blobs the loaded index holds.
    public var indexedBlobCount: Int { stateLock.withLock { index.blobCount } }

    @discardableResult
    public func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8]) async throws -> Bool {
        try await save(kind, id: id, plaintext: plaintext, force: false)
    }

    /// `force`: store even when the index already has the blob (prune's repacking).
    /// The blob is compressed here (on the caller's task) and copied once, into the open pack.
    func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8], force: Bool) async throws -> Bool {
        guard plaintext.count < Int(UInt32.max) else { throw RepositoryError.refused("a blob of \(plaintext.count) bytes is too large") }
        let key = BlobKey(kind, id)
        let compressor: ChunkCompressor? = try stateLock.withLock {
            if pending[key] != nil || (!force && index.contains(kind, id)) { return nil }
            pending[key] = PendingBlob(pack: "", blob: nil)
            return try compressors.popLast() ?? ChunkCompressor(mode: _compression)
        }
        guard let compressor else { return false }
        let compressed: [UInt8]?
        do { compressed = try compressor.compressed(plaintext) } catch {
            _ = stateLock.withLock { pending.removeValue(forKey: key) }
            throw error
        }
        stateLock.withLock { compressors.append(compressor) }
        let length = compressed?.count ?? plaintext.count
        while true {
            // Back-pressure: a blob that must start a new pack while `maxPacksInFlight` full packs
            // are still being sealed and stored waits for one of them, so memory holds at most the
            // open pack and those; blobs that fit the open pack never wait.
            let appended: (done: Bool, full: FullPack?) = stateLock.withLock { append(kind, id: id, key: key, plaintext: plaintext,
                                                                                      compressed: compressed, length: length) }
            if let full = appended.full { try await submit(full) }
            if appended.done { return true }
            await packSlots.waitForRoom()
        }
    }

    /// Appends a blob to the open pack (called under `stateLock`). When the blob does not fit, the
    /// open pack is handed over as full first, unless `maxPacksInFlight` packs are in flight: then
    /// nothing is done (`done` false) and the caller waits for room.
    private func append(_ kind: BlobKind, id: BlobID, key: BlobKey, plaintext: [UInt8], compressed: [UInt8]?,
                        length: Int) -> (done: Bool, full: FullPack?) {
        // A pack never grows past the pack size (blobs, trailer included) unless one blob alone
        // does: a blob that does not fit any more seals the open pack and starts the next one,
        // so the buffer reserved for a pack is never outgrown (no reallocation, no doubling).
        var full: FullPack? = nil
        let mustSeal = openPacks[kind].map { !$0.blobs.isEmpty && $0.size(adding: length) > _packSize } ?? false
        if mustSeal, let done = openPacks[kind] {
            guard packSlots.tryStart() else { return (false, nil) }
            openPacks[kind] = nil  // first, so that the trailer is appended to a buffer held once (no copy)
            uploading.insert(done.name)
            full = done.full()
        }
        // Taken out of `openPacks` so that appending does not copy the buffer.
        var pack = openPacks[kind] ?? (kind == .data
            ? PackBuilder(name: randomObjectName(), buffer: packBuffers.take(
                capacity: Self.packBufferCapacity(plaintext: max(_packSize, length + PackedBlob.encodedSize + 8))))
            : PackBuilder(name: randomObjectName(), buffer: [], pooled: false))
        openPacks[kind] = nil
        let blob = PackedBlob(kind: kind, id: id, offset: UInt32(pack.buffer.count), length: UInt32(length),
                              rawLength: UInt32(plaintext.count), compressed: compressed != nil)
        pack.buffer += compressed ?? plaintext
        pack.blobs.append(blob)
        pending[key] = PendingBlob(pack: pack.name, blob: blob)
        openPacks[kind] = pack
        return (true, full)
    }

    /// Seals and uploads a full pack on a background task (at most one per core at a time). The pack
    /// is sealed in its own buffer, which goes back to ``packBuffers`` once stored (or failed).
    /// The pack already counts in ``packSlots`` (``PackSlots/tryStart()`` or ``PackSlots/start()``).
    private func submit(_ pack: FullPack) async throws {
        await limiter.acquire()
        let (name, blobs, box, pooled) = (pack.name, pack.blobs, pack.buffer, pack.pooled)
        let task = Task.detached { [self] in
            var bytes = box.take()  // the only reference: sealed in place
            defer {
                if pooled { packBuffers.give(&bytes) }
                _ = stateLock.withLock { uploading.remove(name) }
                packSlots.finish()
                Task { await self.limiter.release() }
            }
            let objectName = try ObjectName(.data, name)
            let fileKey = FileKey.random()
            let publicKey = stateLock.withLock { currentPublicKey }
            let plan = try CofferObject.SealPlan(plaintextCount: bytes.count, objectName: objectName.description, fileKey: fileKey,
                                                 stanzas: try publicKey.stanzas(for: fileKey), chunkSize: CofferObject.packChunkSize)
            try CofferObject.sealInPlace(&bytes, plan)
            try await storage.save(objectName, contents: bytes)
            let size = bytes.count
            stateLock.withLock {
                finishedPacks.append(IndexedPack(name: name, size: Int64(size), blobs: blobs))
            }
        }
        stateLock.withLock { tasks.append(task) }
    }

    public func flush() async throws {
        let open: [FullPack] = stateLock.withLock {
            defer { openPacks = [:] }
            return [BlobKind.tree, .data].compactMap { kind in
                guard let p = openPacks[kind], !p.blobs.isEmpty else { return nil }
                openPacks[kind] = nil
                packSlots.start()
                uploading.insert(p.name)
                return p.full()
            }
        }
        for pack in open { try await submit(pack) }
        let running = stateLock.withLock { defer { tasks = [] }; return tasks }
        var firstError: Error?
        for task in running {
            do { try await task.value } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
        let packs = stateLock.withLock { defer { finishedPacks = [] }; return finishedPacks }
        guard !packs.isEmpty else { return }
        do {
            try await writeIndex(packs)
        } catch {
            stateLock.withLock { finishedPacks = packs + finishedPacks }
            throw error
        }
        stateLock.withLock {
            for p in packs {
                index.add(p)
                for b in p.blobs { pending.removeValue(forKey: BlobKey(b.kind, b.id)) }
            }
        }
    }

    /// Writes one index object listing `packs` (which must already be stored).
    @discardableResult
    func writeIndex(_ packs: [IndexedPack]) async throws -> String {
        let name = randomObjectName()
        _ = try await writeObject(try ObjectName(.index, name), IndexFormat.encode(packs)) { try indexKey.stanzas(for: $0) }
        _ = stateLock.withLock { index.indexObjects.insert(name) }
        return name
    }

    public func load(_ kind: BlobKind, _ id: BlobID) async throws -> [UInt8] {
        try requireFullAccess("blobs")
        let key = BlobKey(kind, id)
        enum Source { case pack(String, Int64, BlobLocation), memory([UInt8], PackedBlob, String), uploading }
        while true {
            let source: Source? = stateLock.withLock {
                if let hit = index.lookup(kind, id) { return .pack(hit.pack, hit.size, hit.location) }
                if let p = pending[key], let blob = p.blob {
                    if let open = openPacks[kind], open.name == p.pack {
                        return .memory(Array(open.buffer[Int(blob.offset)..<Int(blob.offset + blob.length)]), blob, p.pack)
                    }
                    // Uploaded, not yet in an index object: read it from its pack.
                    if let done = finishedPacks.first(where: { $0.name == p.pack }) {
                        return .pack(done.name, done.size, BlobLocation(pack: 0, offset: blob.offset, length: blob.length,
                                                                        rawLength: blob.rawLength, compressed: blob.compressed))
                    }
                    if uploading.contains(p.pack) { return .uploading }
                }
                return nil
            }
            switch source {
            case nil:
                throw RepositoryError.notFound("\(kind) blob \(id.hex) is not in the repository's index")
            case .uploading:
                try await Task.sleep(nanoseconds: 1_000_000)  // rare: a blob of a pack being stored
            case .memory(let bytes, let blob, let pack):
                return try unpack(bytes, blob: blob, object: "data/\(pack)")
            case .pack(let pack, let size, let loc):
                let blob = PackedBlob(kind: kind, id: id, offset: loc.offset, length: loc.length, rawLength: loc.rawLength, compressed: loc.compressed)
                // A tree on remote storage comes from its whole pack, read once (``treePackPlaintext(_:size:)``);
                // when that read fails, the ranged read below reports why.
                if kind == .tree, storage.properties.remote, size <= Self.treePackCacheLimit,
                   let plain = try? await treePackPlaintext(pack, size: size) {
                    return try treeBlob(plain, pack: pack, blob: blob).get()
                }
                let bytes = try await readStored(pack: pack, size: size, offset: Int(loc.offset), length: Int(loc.length))
                return try unpack(bytes, blob: blob, object: "data/\(pack)")
            }
        }
    }

    /// Decompresses a stored blob and checks it against its id.
    func unpack(_ stored: [UInt8], blob: PackedBlob, object: String) throws -> [UInt8] {
        var plaintext = stored
        if blob.compressed {
            do {
                plaintext = try ZstdDecompressor().decompress(stored, maxOutputSize: Int(blob.rawLength))
            } catch {
                throw RepositoryError.damaged(object: object, reason: "\(blob.kind) blob \(blob.id.hex) does not decompress (\(error))")
            }
        }
        guard plaintext.count == Int(blob.rawLength), chunkIDKey.id(of: plaintext) == blob.id else {
            throw RepositoryError.damaged(object: object, reason: "\(blob.kind) blob \(blob.id.hex) does not match its id")
        }
        return plaintext
    }

    /// Reads and decrypts `length` stored bytes at `offset` of a pack's plaintext: the header (once
    /// per pack, cached) and the STREAM chunks holding them.
    func readStored(pack: String, size: Int64, offset: Int, length: Int) async throws -> [UInt8] {
        let name = try ObjectName(.data, pack)
        do {
            let opened = try await packHeader(name, size: size)
            let layout = try CofferObject.layout(opened, size: Int(size))
            if length == 0 { return [] }
            let (chunks, range) = try CofferObject.sealedRange(opened, layout: layout, offset: offset, length: length)
            let sealed = try await storage.load(name, range: range)
            return try CofferObject.decryptRange(sealed, chunks: chunks, layout: layout, opened, offset: offset, length: length)
        } catch StorageError.notFound {
            throw RepositoryError.missing(object: name.description, reason: "the index lists blobs in it")
        } catch StorageError.rangeOutOfBounds {
            throw RepositoryError.damaged(object: name.description, reason: "it is shorter than the index says")
        }
    }

    func packHeader(_ name: ObjectName, size: Int64) async throws -> CofferObject.Opened {
        if let cached = stateLock.withLock({ headerCache[name.name] }) { return cached }
        var prefix = try await storage.load(name, range: 0..<min(size, 16 << 10))
        guard let length = try CofferObject.headerLength(prefix: prefix, object: name.description) else {
            throw RepositoryError.damaged(object: name.description, reason: "not a Coffer version-2 object")
        }
        if length > prefix.count {
            guard Int64(length) <= size else { throw RepositoryError.damaged(object: name.description, reason: "cut short inside its header") }
            prefix = try await storage.load(name, range: 0..<Int64(length))
        }
        return try openPack(bytes: prefix, name: name)
    }
}

/// Counts full packs being sealed and stored. A save takes a place with ``tryStart()`` (under the
/// repository's lock) or, when there is none, waits with ``waitForRoom()`` and tries again.
final class PackSlots: @unchecked Sendable {
    private let lock = NSLock()
    private let limit: Int
    private var inFlight = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    init(limit: Int) { self.limit = max(1, limit) }

    /// Takes a place if one is free.
    func tryStart() -> Bool {
        lock.withLock {
            guard inFlight < limit else { return false }
            inFlight += 1
            return true
        }
    }

    /// Takes a place whether or not one is free (flush: the last pack needs no new buffer).
    func start() { lock.withLock { inFlight += 1 } }

    /// Returns once a place is free (it may be taken by another save before the caller tries again).
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if inFlight < limit { return true }
                waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func finish() {
        let woken: [CheckedContinuation<Void, Never>] = lock.withLock {
            inFlight -= 1
            defer { waiters = [] }
            return waiters
        }
        for w in woken { w.resume() }
    }

    /// Packs in flight (tests).
    var count: Int { lock.withLock { inFlight } }
}
