import Foundation

/// Objects still under object lock that a command wanted to remove, grouped by the UTC day their
/// retention ends (the latest of the group): what becomes removable when.
public struct LockedRemovals: Codable, Sendable, Equatable {
    /// `YYYY-MM-DD` (UTC).
    public var date: String
    /// The latest retention date of the group: removable after it.
    public var until: Date
    public var packs = 0
    public var bytes: Int64 = 0
    public var indexObjects = 0
    public var snapshots = 0

    public init(date: String, until: Date) {
        self.date = date
        self.until = until
    }

    /// Groups (name, until, size) by day, earliest first.
    static func grouped(_ items: [(ObjectName, Date, Int64)]) -> [LockedRemovals] {
        var byDay: [String: LockedRemovals] = [:]
        for (name, until, size) in items {
            let day = String(RepositoryJSON.formatDate(until).prefix(10))
            var group = byDay[day] ?? LockedRemovals(date: day, until: until)
            group.until = max(group.until, until)
            switch name.kind {
            case .data: group.packs += 1; group.bytes += size
            case .index: group.indexObjects += 1
            case .snapshots: group.snapshots += 1
            default: break
            }
            byDay[day] = group
        }
        return byDay.values.sorted { $0.date < $1.date }
    }
}

/// What `forget` did with the snapshots it was asked to remove.
public struct SnapshotRemoval: Sendable, Equatable {
    public var removed: [String] = []
    /// Snapshots under object lock, left in place, with the end of their retention.
    public var locked: [String: Date] = [:]
}

/// What `lock extend` did.
public struct LockExtendReport: Codable, Sendable, Equatable {
    /// The new retention date.
    public var until: Date
    public var days: Int
    /// Objects the kept snapshots need (config, keys, snapshots, index objects, packs).
    public var objects = 0
    public var extended = 0
    /// Already retained until then or later (nothing sent).
    public var alreadyRetained = 0
    public var snapshots = 0
    public var packs = 0
    public var indexObjects = 0
    /// Config, key objects, data keys and key-history events.
    public var keyObjects = 0
    public var bytes: Int64 = 0

    public init(until: Date, days: Int) {
        self.until = until
        self.days = days
    }
}

extension Repository {
    /// Whether forget, prune and `lock extend` must respect object lock: the config asks for it and
    /// the storage can hold it (a directory copy of a locked repository holds no lock).
    public var objectLockActive: Bool { config.objectLock != nil && storage.supportsObjectLock }

    /// Which of `objects` are still under retention at `now`, and until when. Without a request per
    /// object: an object the repository wrote at time M is retained at least until M + the lock's
    /// days (M from the listing); only an object whose lower bound has passed (it may have been
    /// extended by `lock extend`) or whose listing has no time is asked about (HEAD, in parallel).
    /// Objects that ``ObjectLock/applies(to:)`` excludes are never locked.
    func lockedObjects(_ objects: [ObjectInfo], now: Date = Date()) async throws -> [ObjectName: Date] {
        guard let lock = config.objectLock, storage.supportsObjectLock else { return [:] }
        var locked: [ObjectName: Date] = [:]
        var ask: [ObjectName] = []
        for object in objects where ObjectLock.applies(to: object.name) {
            if let modified = object.modified, lock.retainUntil(writtenAt: modified) > now {
                locked[object.name] = lock.retainUntil(writtenAt: modified)
            } else {
                ask.append(object.name)
            }
        }
        let storage = self.storage
        try await forEachConcurrently(ask) { name in try await storage.retainUntil(name) } consume: { name, result in
            do {
                if let until = try result.get(), until > now { locked[name] = until }
            } catch StorageError.notFound {
                // gone meanwhile: nothing to protect
            }
        }
        return locked
    }

    /// Removes snapshots (and their restore-test results) under an exclusive lock. With object
    /// lock, a snapshot whose object is still retained is not touched (a DELETE would only hide it
    /// behind a delete marker): with `skipLocked` it is left and returned in `locked`, without it
    /// nothing is removed and the refusal names the snapshot and the date.
    /// With `dryRun`, only says what would be removed and what is locked.
    public func removeSnapshots(_ ids: [String], skipLocked: Bool, dryRun: Bool = false) async throws -> SnapshotRemoval {
        try requireFullAccess("snapshots")
        return try await withLock(exclusive: !dryRun) {
            var outcome = SnapshotRemoval()
            if self.objectLockActive {
                let wanted = Set(ids)
                let infos = try await self.storage.listAll(.snapshots).filter { wanted.contains($0.name.name) }
                for (name, until) in try await self.lockedObjects(infos) { outcome.locked[name.name] = until }
            }
            if !skipLocked, let first = outcome.locked.min(by: { $0.key < $1.key }) {
                let (id, until) = (first.key, first.value)
                throw RepositoryError.refused("snapshot \(id.prefix(8)) is under object lock until \(RepositoryJSON.formatDate(until)): it cannot be removed before then\(outcome.locked.count > 1 ? " (nor \(outcome.locked.count - 1) more of the snapshots given)" : ""); nothing was removed")
            }
            for id in ids where outcome.locked[id] == nil {
                if !dryRun { try await self.removeSnapshot(id) }
                outcome.removed.append(id)
            }
            return outcome
        }
    }

    /// Extends the retention of every object the repository's snapshots need to now + `days`
    /// (default: the config's): the config, every key object, data key and key-history event, every
    /// snapshot, every pack holding a blob a snapshot needs, and, newest first, enough index objects
    /// to list all those packs (older index objects that only repeat them are left to expire, so
    /// that prune can remove them and the packs only they list). Objects already retained that long
    /// (by their listing time, or by asking: HEAD) are skipped; the rest get PutObjectRetention in
    /// parallel. Idempotent;
    /// under a shared lock (backups may run meanwhile; their new objects are locked as written).
    public func extendLocks(days: Int? = nil, usedBlobs: @Sendable (Snapshot) async throws -> Set<BlobID>,
                            progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil) async throws -> LockExtendReport {
        try requireFullAccess("the repository's data")
        guard let lock = config.objectLock else {
            throw RepositoryError.refused("the repository was created without object lock: there is no retention to extend")
        }
        guard storage.supportsObjectLock else {
            throw RepositoryError.refused("this repository's storage cannot lock objects (object lock needs an S3 bucket with object lock enabled)")
        }
        let days = days ?? lock.days
        if let reason = ObjectLock(mode: lock.mode, days: days).invalidReason { throw RepositoryError.refused(reason) }
        return try await withLock(exclusive: false) {
            let now = Date()
            var report = LockExtendReport(until: now.addingTimeInterval(Double(days) * 86_400), days: days)
            let until = report.until
            var targets: [ObjectInfo] = []
            // Config and keys: without them nothing opens.
            let statics = try await self.storage.listAll(.config) + self.storage.listAll(.keys)
            targets += statics
            report.keyObjects = statics.count
            // Snapshots (not their restore-test results) and what they need.
            let snapshotInfos = try await self.storage.listAll(.snapshots).filter { ObjectLock.applies(to: $0.name) }
            let snapshots = try await self.listSnapshots()
            let listed = Set(snapshots.map(\.id))
            targets += snapshotInfos.filter { listed.contains($0.name.name) }
            report.snapshots = listed.count
            var used = Set<BlobID>()
            for s in snapshots {
                used.formUnion(try await usedBlobs(s))
                used.insert(s.info.tree)
            }
            let dataInfos = Dictionary(try await self.storage.listAll(.data).map { ($0.name.name, $0) }, uniquingKeysWith: { a, _ in a })
            let indexInfos = try await self.storage.listAll(.index)
            var packsOf: [ObjectName: Set<String>] = [:]
            var neededPacks = Set<String>()
            for info in indexInfos {
                let packs = try await self.readIndexObject(info.name)
                packsOf[info.name] = Set(packs.map(\.name))
                for p in packs where dataInfos[p.name] != nil && p.blobs.contains(where: { used.contains($0.id) }) {
                    neededPacks.insert(p.name)
                }
            }
            // Index objects, newest first, while one lists a needed pack no chosen one lists yet.
            var uncovered = neededPacks
            for info in indexInfos.sorted(by: { ($0.modified ?? .distantPast, $0.name.name) > ($1.modified ?? .distantPast, $1.name.name) }) {
                guard !uncovered.isEmpty else { break }
                let listedHere = packsOf[info.name] ?? []
                if !uncovered.isDisjoint(with: listedHere) {
                    targets.append(info)
                    report.indexObjects += 1
                    uncovered.subtract(listedHere)
                }
            }
            for name in neededPacks.sorted() { targets.append(dataInfos[name]!) }
            report.packs = neededPacks.count
            report.objects = targets.count
            report.bytes = targets.reduce(0) { $0 + $1.size }
            // Already retained long enough by their listing time: nothing to send.
            var send: [ObjectName] = []
            for t in targets {
                if let m = t.modified, lock.retainUntil(writtenAt: m) >= until { report.alreadyRetained += 1 } else { send.append(t.name) }
            }
            var done = report.alreadyRetained
            progress?(done, targets.count)
            let storage = self.storage
            // Asked first (HEAD): what is retained until then (within the hour) is left alone, so a
            // second run sends nothing; S3 would refuse to shorten a retention anyway.
            try await self.forEachConcurrently(send) { name -> Bool in
                if let current = try await storage.retainUntil(name), current >= until.addingTimeInterval(-3600) { return false }
                return try await storage.extendRetention(name, until: until)
            } consume: { _, result in
                do {
                    if try result.get() { report.extended += 1 } else { report.alreadyRetained += 1 }
                } catch StorageError.notFound {
                    report.objects -= 1  // removed meanwhile (a key removed, a lock refreshed)
                }
                done += 1
                progress?(done, targets.count)
            }
            return report
        }
    }
}
