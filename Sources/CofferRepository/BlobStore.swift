import Foundation

/// The contract between the repository's storage format (packs, index: `Repository`) and what is
/// built on it (trees, the archiver that backs paths up, the restorer). The archiver and restorer
/// see only this protocol, so they work the same for a full-access repository and for a write-only
/// backup host (docs/REPOSITORY.md).

/// What a blob holds: file content (one chunk) or a tree (one directory's listing).
public enum BlobKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case data = 0
    case tree = 1

    public var description: String { self == .data ? "data" : "tree" }
}

/// A blob's id: the keyed hash (HMAC-SHA256 under the repository's chunk-id key, ``ChunkIDKey``) of
/// its plaintext, so equal content has equal ids within one repository and the storage learns
/// nothing from ids. Trees are identified the same way as data chunks.
public typealias BlobID = ChunkID

extension ChunkID: Comparable {
    public static func < (a: ChunkID, b: ChunkID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    /// Parses 64 lowercase hex digits; nil for anything else.
    public init?(hex: String) {
        guard hex.utf8.count == 64 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var high: UInt8? = nil
        for c in hex.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        self.init(bytes: out)
    }
}

/// Where blobs are written and read. `Repository` implements it; the archiver, the restorer and the
/// tree code use only this.
public protocol BlobStore: Sendable {
    /// The keyed id of `plaintext` (HMAC-SHA256 under the chunk-id key).
    func blobID(of plaintext: UnsafeRawBufferPointer) -> BlobID

    /// A chunker with this repository's parameters and keyed gear table.
    func makeChunker() -> FastCDC

    /// Whether a blob of this kind and id is already stored (in the loaded index or written in this
    /// session). A write-only host can answer this too.
    func contains(_ kind: BlobKind, _ id: BlobID) -> Bool

    /// Stores a blob unless one with this id is already stored; returns true when it was added.
    /// Compression, packing and encryption happen inside; the blob is durable only after `flush`.
    @discardableResult
    func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8]) async throws -> Bool

    /// A blob's plaintext, authenticated and checked against its id. Throws for a write-only host.
    func load(_ kind: BlobKind, _ id: BlobID) async throws -> [UInt8]

    /// Several blobs, each one's plaintext or the error `load` would have thrown for it alone.
    /// `Repository` reads neighbouring blobs of one pack with one ranged read (``RangeReads``);
    /// the default loads them one by one (BatchLoad.swift).
    func loadBatch(_ kind: BlobKind, _ ids: [BlobID], reads: RangeReads) async -> [BlobID: Result<[UInt8], Error>]

    /// A blob's plaintext length as the index records it, without reading it; nil when unknown.
    func indexedLength(_ kind: BlobKind, _ id: BlobID) -> Int?

    /// Finishes open packs and writes their index, so every blob saved so far is durable and found
    /// by later readers. A snapshot may be written only after this returns.
    func flush() async throws
}

/// A snapshot's content: what one backup saved (the commit point of a backup is writing it).
/// Field names follow restic's JSON where the meaning is the same. `Repository` stores it as a
/// snapshot object (docs/REPOSITORY.md); the archiver fills it in.
public struct SnapshotInfo: Codable, Sendable, Equatable {
    /// When the backup started (UTC).
    public var time: Date
    /// The root tree's blob id.
    public var tree: BlobID
    /// The paths given to `backup` (absolute), or the stdin name for a stream backup.
    public var paths: [String]
    public var hostname: String
    public var username: String
    public var tags: [String]
    /// The snapshot this backup compared file metadata with, when any (hex id of a snapshot object).
    public var parent: String?
    public var programVersion: String
    public var summary: Summary
    /// For a database backup: the engine, server version, databases, tables and row counts recorded
    /// at dump time (``DatabaseInfo``); nil (and absent from the JSON) for other backups.
    public var database: DatabaseInfo? = nil

    /// What the backup saw and added.
    public struct Summary: Codable, Sendable, Equatable {
        public var filesNew = 0
        public var filesChanged = 0
        public var filesUnmodified = 0
        public var dirsNew = 0
        public var dirsChanged = 0
        public var dirsUnmodified = 0
        /// Blobs written by this backup (not found already stored).
        public var dataBlobs = 0
        public var treeBlobs = 0
        /// Plaintext bytes of the blobs this backup added, and their stored size (compressed, encrypted).
        public var dataAdded: Int64 = 0
        public var dataAddedPacked: Int64 = 0
        public var totalFilesProcessed = 0
        public var totalBytesProcessed: Int64 = 0
        public init() {}
    }

    public init(time: Date, tree: BlobID, paths: [String], hostname: String, username: String,
                tags: [String], parent: String?, programVersion: String, summary: Summary) {
        self.time = time; self.tree = tree; self.paths = paths; self.hostname = hostname
        self.username = username; self.tags = tags; self.parent = parent
        self.programVersion = programVersion; self.summary = summary
    }
}

extension ChunkID: Codable {
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ChunkID(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a 64-digit hex blob id"))
        }
        self = id
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}
