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
    /// Object lock: packs that would be removed or repacked but are still retained (theirs, or an
    /// index object's that lists them and is retained), kept whole until then.
    public var lockedPacks = 0
    public var lockedBytes: Int64 = 0
    /// Index objects that would be replaced but are still retained.
    public var lockedIndexObjects = 0
    /// What becomes removable when, by UTC day (empty without object lock).
    public var removableFrom: [LockedRemovals] = []
    /// Leftovers of killed writes (local temporary files, S3 incomplete multipart uploads) older
    /// than the safe age, removed (or, with `dryRun`, found).
    public var leftoversRemoved = 0
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
    ///
    /// With object lock (``objectLockActive``), nothing still retained is deleted (on a versioned
    /// bucket a DELETE would only hide it behind a delete marker): a pack that is retained, or that
    /// a retained index object lists, is kept whole and listed in the new index; a retained index
    /// object stays; ``PruneReport/removableFrom`` says when they become removable.
    ///
    /// Leftovers of killed writes older than `leftoverAge` (default 24 hours: a write in progress on
    /// another host, which holds no lock prune sees while it uploads, is never that old) are
    /// removed first.
    public func prune(dryRun: Bool = false, leftoverAge: TimeInterval = Repository.defaultLeftoverAge,
                      usedBlobs: @Sendable (Snapshot) async throws -> Set<BlobID>) async throws -> PruneReport {
        try requireFullAccess("the repository's data")
        return try await withLock(exclusive: true) {
            try await self.pruneLocked(dryRun: dryRun, leftoverAge: leftoverAge, usedBlobs: usedBlobs)
        }
    }

    /// How old a leftover of a killed write must be before prune removes it.
    public static let defaultLeftoverAge: TimeInterval = 24 * 3600

    private func pruneLocked(dryRun: Bool, leftoverAge: TimeInterval,
                             usedBlobs: @Sendable (Snapshot) async throws -> Set<BlobID>) async throws -> PruneReport {
        try await flush()
        var report = PruneReport()
        report.dryRun = dryRun
        let now = Date()
        // Leftovers of killed writes: temporary files, incomplete multipart uploads.
        let leftovers = try await storage.leftovers(olderThan: now.addingTimeInterval(-leftoverAge))
        if !dryRun { for leftover in leftovers { try await storage.removeLeftover(leftover) } }
        report.leftoversRemoved = leftovers.count
        // The whole index, strictly: a damaged index object could hide where needed blobs are.
        let indexInfos = try await storage.listAll(.index)
        let indexNames = indexInfos.map(\.name)
        var packs: [String: IndexedPack] = [:]
        var packsOf: [ObjectName: [String]] = [:]
        for name in indexNames {
            let listed = try await readIndexObject(name)
            packsOf[name] = listed.map(\.name)
            for p in listed { packs[p.name] = p }
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
        var dataInfos: [String: ObjectInfo] = [:]
        for item in try await storage.listAll(.data) {
            stored[item.name.name] = item.size
            dataInfos[item.name.name] = item
        }
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
        var unreferenced = stored.keys.filter { packs[$0] == nil }.sorted()
        // Object lock: what is still retained stays.
        var stayingIndexes = Set<ObjectName>()
        if objectLockActive {
            // Index objects are rewritten only when something changes; otherwise none is a candidate.
            let wouldRewrite = !remove.isEmpty || !repack.isEmpty || packs.count != keep.count || indexNames.count > 1
            let lockedIndexes = wouldRewrite ? try await lockedObjects(indexInfos, now: now) : [:]
            stayingIndexes = Set(lockedIndexes.keys)
            // A pack a retained index object lists stays until that index object can go.
            var heldBy: [String: Date] = [:]
            for (index, until) in lockedIndexes {
                for p in packsOf[index] ?? [] { heldBy[p] = max(heldBy[p] ?? .distantPast, until) }
            }
            let candidates = remove.map(\.name) + repack.map(\.0.name) + unreferenced
            // Only packs no retained index holds are asked about; the others keep their lower bound.
            let ownLocks = try await lockedObjects(candidates.filter { heldBy[$0] == nil }.compactMap { dataInfos[$0] }, now: now)
            let lockConfig = config.objectLock!
            var deferred: [String: Date] = [:]
            for name in candidates {
                let objectName = try ObjectName(.data, name)
                var until = ownLocks[objectName]
                if let held = heldBy[name] {
                    let own = dataInfos[name]?.modified.map { lockConfig.retainUntil(writtenAt: $0) } ?? held
                    until = max(held, own)
                }
                if let until { deferred[name] = until }
            }
            if !deferred.isEmpty {
                keep += remove.filter { deferred[$0.name] != nil } + repack.map(\.0).filter { deferred[$0.name] != nil }
                remove.removeAll { deferred[$0.name] != nil }
                repack.removeAll { deferred[$0.0.name] != nil }
                unreferenced.removeAll { deferred[$0] != nil }
            }
            report.lockedPacks = deferred.count
            report.lockedBytes = deferred.keys.reduce(0) { $0 + (stored[$1] ?? 0) }
            report.lockedIndexObjects = stayingIndexes.count
            var items: [(ObjectName, Date, Int64)] = try deferred.map { (try ObjectName(.data, $0.key), $0.value, stored[$0.key] ?? 0) }
            items += lockedIndexes.map { ($0.key, $0.value, Int64(0)) }
            report.removableFrom = LockedRemovals.grouped(items)
        }
        let removableIndexes = indexNames.filter { !stayingIndexes.contains($0) }
        report.packsKept = keep.count
        report.packsRemoved = remove.count
        report.packsRepacked = repack.count
        report.unreferencedPacksRemoved = unreferenced.count
        report.blobsRemoved = remove.reduce(0) { $0 + $1.blobs.count } + repack.reduce(0) { $0 + $1.0.blobs.count - $1.1.count }
        report.blobsRepacked = repack.reduce(0) { $0 + $1.1.count }
        report.bytesRemoved = (remove.map(\.name) + repack.map(\.0.name) + unreferenced).reduce(0) { $0 + (stored[$1] ?? 0) }
        let changes = !remove.isEmpty || !repack.isEmpty
            || (!removableIndexes.isEmpty && (packs.count != keep.count || removableIndexes.count > 1))
        if dryRun || (!changes && unreferenced.isEmpty) {
            report.indexObjectsRemoved = 0
            return report
        }
        if !changes {
            // Only packs no index lists: nothing to rewrite.
            try await removeAll(unreferenced.map { try ObjectName(.data, $0) })
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
        try await removeAll(removableIndexes)
        report.indexObjectsRemoved = removableIndexes.count
        try await removeAll((remove.map(\.name) + repack.map(\.0.name) + unreferenced).map { try ObjectName(.data, $0) })
        try await loadIndex(tolerateDamage: false)
        stateLock.withLock { headerCache.removeAll(); treePackCache.removeAll(); treePackCacheBytes = 0 }
        return report
    }

    /// Removes objects in batches (S3 DeleteObjects); fails naming the first that could not go.
    private func removeAll(_ names: [ObjectName]) async throws {
        guard !names.isEmpty else { return }
        let failed = try await storage.remove(names)
        if let first = failed.first {
            let (name, reason) = first
            throw StorageError.io(operation: "remove", target: name.description, errno: 0,
                                  reason: reason + (failed.count > 1 ? " (and \(failed.count - 1) more objects)" : ""))
        }
    }
}
