import CofferFormat
import Foundation

/// What `prune` removed (or would remove, with `dryRun`).
public struct PruneReport: Codable, Sendable, Equatable {
    public var dryRun = false
    public var snapshots = 0
    public var usedBlobs = 0
    public var packsKept = 0
    /// Packs holding only blobs no snapshot needs.
    public var packsRemoved = 0
    /// Packs holding some needed blobs: those are copied to new packs, then the old pack is removed.
    public var packsRepacked = 0
    /// Packs no index lists (left by interrupted backups).
    public var unreferencedPacksRemoved = 0
    public var blobsRemoved = 0
    public var blobsRepacked = 0
    public var bytesRemoved: Int64 = 0
    public var indexObjectsRemoved = 0
    public var indexObjectsWritten = 0
}

extension Repository {
    /// Removes data no snapshot needs, under an exclusive lock. `usedBlobs` (the tree layer's walk
    /// from a snapshot's root) gives the blob ids one snapshot needs, its root tree included.
    ///
    /// Order, so that a crash at any point loses nothing a kept snapshot needs: needed blobs of
    /// partly used packs are copied into new packs; the new packs and an index object for them are
    /// written; a new index object listing every kept pack is written; only then are the old index
    /// objects removed, and last the packs no longer listed. Refuses (removes nothing) when a
    /// snapshot needs a blob the index does not have, or when an index object or snapshot is damaged.
    public func prune(dryRun: Bool = false,
                      usedBlobs: @Sendable (Snapshot) async throws -> Set<BlobID>) async throws -> PruneReport {
        try requireFullAccess("the repository's data")
        return try await withLock(exclusive: true) {
            try await self.pruneLocked(dryRun: dryRun, usedBlobs: usedBlobs)
        }
    }

    private func pruneLocked(dryRun: Bool, usedBlobs: @Sendable (Snapshot) async throws -> Set<BlobID>) async throws -> PruneReport {
        try await flush()
        var report = PruneReport()
        report.dryRun = dryRun
        // The whole index, strictly: a damaged index object could hide where needed blobs are.
        let indexNames = try await storage.listAll(.index).map(\.name)
        var packs: [String: IndexedPack] = [:]
        for name in indexNames {
            for p in try await readIndexObject(name) { packs[p.name] = p }
        }
        let snapshots = try await listSnapshots()
        report.snapshots = snapshots.count
        // Restore-test results of snapshots removed by an interrupted forget (RestoreTestResults.swift).
        if !dryRun { try await removeOrphanedRestoreTests() }
        var used = Set<BlobID>()
        for s in snapshots {
            used.formUnion(try await usedBlobs(s))
            used.insert(s.info.tree)
        }
        report.usedBlobs = used.count
        var stored: [String: Int64] = [:]
        for item in try await storage.listAll(.data) { stored[item.name.name] = item.size }
        // Every needed blob must be somewhere we keep.
        var available = Set<BlobID>()
        for p in packs.values where stored[p.name] != nil { for b in p.blobs { available.insert(b.id) } }
        if let missing = used.first(where: { !available.contains($0) }) {
            throw RepositoryError.refused("refusing to prune: a snapshot needs blob \(missing.hex), which is in no stored pack (run check)")
        }
        // Classify packs; a blob stored twice is kept once (first pack in name order).
        var claimed = Set<BlobID>()
        var keep: [IndexedPack] = [], repack: [(IndexedPack, [PackedBlob])] = [], remove: [IndexedPack] = []
        for p in packs.values.sorted(by: { $0.name < $1.name }) {
            guard stored[p.name] != nil else { continue }  // indexed but gone: dropped from the new index
            var needed: [PackedBlob] = []
            for b in p.blobs where used.contains(b.id) && !claimed.contains(b.id) {
                needed.append(b)
                claimed.insert(b.id)
            }
            if needed.count == p.blobs.count { keep.append(p) }
            else if needed.isEmpty { remove.append(p) }
            else { repack.append((p, needed)) }
        }
        let unreferenced = stored.keys.filter { packs[$0] == nil }.sorted()
        report.packsKept = keep.count
        report.packsRemoved = remove.count
        report.packsRepacked = repack.count
        report.unreferencedPacksRemoved = unreferenced.count
        report.blobsRemoved = remove.reduce(0) { $0 + $1.blobs.count } + repack.reduce(0) { $0 + $1.0.blobs.count - $1.1.count }
        report.blobsRepacked = repack.reduce(0) { $0 + $1.1.count }
        report.bytesRemoved = (remove.map(\.name) + repack.map(\.0.name) + unreferenced).reduce(0) { $0 + (stored[$1] ?? 0) }
        let changes = !remove.isEmpty || !repack.isEmpty || packs.count != keep.count || indexNames.count > 1
        if dryRun || (!changes && unreferenced.isEmpty) {
            report.indexObjectsRemoved = 0
            return report
        }
        // 1. Copy needed blobs out of partly used packs (checked against their ids on the way).
        let beforeRepack = stateLock.withLock { index.indexObjects }.union(indexNames.map(\.name))
        for (p, needed) in repack {
            for b in needed {
                let bytes = try await readStored(pack: p.name, size: p.size, offset: Int(b.offset), length: Int(b.length))
                let plaintext = try unpack(bytes, blob: b, object: "data/\(p.name)")
                _ = try await save(b.kind, id: b.id, plaintext: plaintext, force: true)
            }
        }
        // 2. New packs and their index object durable.
        try await flush()
        let repackIndexes = stateLock.withLock { index.indexObjects }.subtracting(beforeRepack)
        // 3. One index object listing every kept pack.
        var written = repackIndexes.count
        if !keep.isEmpty {
            try await writeIndex(keep)
            written += 1
        }
        report.indexObjectsWritten = written
        // 4. The old index objects (everything they list that is kept is in the new ones), then
        // 5. the packs no index lists any more.
        for name in indexNames {
            do { try await storage.remove(name) } catch StorageError.notFound {}
            report.indexObjectsRemoved += 1
        }
        for name in remove.map(\.name) + repack.map(\.0.name) + unreferenced {
            do { try await storage.remove(try ObjectName(.data, name)) } catch StorageError.notFound {}
        }
        try await loadIndex(tolerateDamage: false)
        stateLock.withLock { headerCache.removeAll() }
        return report
    }
}
