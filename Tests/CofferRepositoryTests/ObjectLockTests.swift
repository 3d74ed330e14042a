import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A directory storage that behaves like an S3 bucket with object lock, for the repository's own
/// decisions (the S3 requests themselves are tested against moto in CofferS3Tests): every object
/// written while a lock is set is retained until now + days, `remove` of a retained object fails
/// (and is recorded: prune and forget must never try), `retainUntil` answers what a HEAD would, and
/// `extendRetention` only ever lengthens. `age(by:)` moves every object's write time and retention
/// into the past (mtime too, which is what listings report), as if time had passed.
final class LockingStorage: Storage {
    let inner: LocalStorage
    private let state = Mutex<(lock: ObjectLock?, retained: [ObjectName: Date], refused: [ObjectName], heads: Int)>((nil, [:], [], 0))

    init(_ inner: LocalStorage) { self.inner = inner }

    var properties: StorageProperties { inner.properties }
    var supportsObjectLock: Bool { true }
    func useObjectLock(_ lock: ObjectLock?) { state.withLock { $0.lock = lock } }

    var refusedRemovals: [ObjectName] { state.withLock { $0.refused } }
    var retentionQueries: Int { state.withLock { $0.heads } }
    func retained(_ name: ObjectName) -> Date? { state.withLock { $0.retained[name] } }
    func forceRetention(_ name: ObjectName, until: Date) { state.withLock { $0.retained[name] = until } }

    func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        if let until = state.withLock({ $0.retained[name] }), until > Date() {
            throw StorageError.io(operation: "overwrite", target: name.description, errno: EPERM, reason: "retained")
        }
        try await inner.save(name, contents: contents, overwrite: overwrite)
        state.withLock { s in
            if let lock = s.lock, ObjectLock.applies(to: name) { s.retained[name] = lock.retainUntil(writtenAt: Date()) }
        }
    }
    func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] { try await inner.load(name, range: range) }
    func stat(_ name: ObjectName) async throws -> ObjectInfo { try await inner.stat(name) }
    func remove(_ name: ObjectName) async throws {
        let locked = state.withLock { s -> Bool in
            guard let until = s.retained[name], until > Date() else { return false }
            s.refused.append(name)
            return true
        }
        if locked { throw StorageError.io(operation: "remove", target: name.description, errno: EPERM, reason: "object is retained") }
        try await inner.remove(name)
        state.withLock { _ = $0.retained.removeValue(forKey: name) }
    }
    func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> { inner.list(kind, batchSize: batchSize) }
    func leftovers(olderThan date: Date) async throws -> [Leftover] { try await inner.leftovers(olderThan: date) }
    func removeLeftover(_ leftover: Leftover) async throws { try await inner.removeLeftover(leftover) }
    func retainUntil(_ name: ObjectName) async throws -> Date? {
        _ = try await inner.stat(name)
        return state.withLock { $0.heads += 1; return $0.retained[name] }
    }
    func extendRetention(_ name: ObjectName, until date: Date) async throws -> Bool {
        _ = try await inner.stat(name)
        return state.withLock { s in
            if let current = s.retained[name], current >= date { return false }
            s.retained[name] = date
            return true
        }
    }

    /// Moves every object's write time and retention `seconds` into the past.
    func age(by seconds: TimeInterval) throws {
        let names = state.withLock { s -> [ObjectName] in
            for (name, until) in s.retained { s.retained[name] = until.addingTimeInterval(-seconds) }
            return Array(s.retained.keys)
        }
        for name in names {
            let path = inner.path(for: name)
            var st = Glibc.stat()
            guard lstat(path, &st) == 0 else { continue }
            let mtime = Double(st.st_mtim.tv_sec) - seconds
            var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        }
    }
}

@Suite("Object lock: what forget, prune and lock extend do with retained objects", .serialized)
struct ObjectLockTests {
    let t = TestRepository()

    func create(days: Int = 10) async throws -> (Repository, LockingStorage) {
        let storage = LockingStorage(try LocalStorage.create(path: t.path))
        var options = Repository.CreateOptions()
        options.packSize = 1 << 20
        options.objectLock = ObjectLock(mode: .compliance, days: days)
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [t.key]), options: options)
        repo.packSize = 64 << 10
        return (repo, storage)
    }

    /// Two snapshots: the first alone uses blobs a (in its own packs), the second uses b.
    func twoSnapshots(_ repo: Repository) async throws -> (old: String, new: String, walk: @Sendable (Snapshot) async throws -> Set<BlobID>) {
        let a = try await saveBlob(repo, deterministicBytes(70_000, seed: 11))
        let tree1 = try await saveBlob(repo, Array("tree-old".utf8), kind: .tree)
        try await repo.flush()
        let s1 = try await repo.saveSnapshot(snapshotInfo(tree: tree1, time: Date(timeIntervalSince1970: 1000)))
        let b = try await saveBlob(repo, deterministicBytes(70_000, seed: 12))
        let tree2 = try await saveBlob(repo, Array("tree-new".utf8), kind: .tree)
        try await repo.flush()
        let s2 = try await repo.saveSnapshot(snapshotInfo(tree: tree2, time: Date(timeIntervalSince1970: 2000)))
        let uses: [BlobID: Set<BlobID>] = [tree1: [tree1, a], tree2: [tree2, b]]
        return (s1, s2, { uses[$0.info.tree] ?? [] })
    }

    @Test("the lock is recorded in the config (an optional field) and every object but locks is written under retention")
    func configAndRetention() async throws {
        let (repo, storage) = try await create(days: 7)
        #expect(repo.config.objectLock == ObjectLock(mode: .compliance, days: 7))
        #expect(repo.objectLockActive)
        let config = try ObjectName(.config, "config")
        let until = try #require(storage.retained(config))
        #expect(abs(until.timeIntervalSinceNow - 7 * 86_400) < 60)
        _ = try await twoSnapshots(repo)
        for kind in [ObjectKind.keys, .data, .index, .snapshots] {
            for info in try await storage.listAll(kind) { #expect(storage.retained(info.name) != nil, "\(info.name)") }
        }
        // Reopened: the config's lock applies again (the storage is told before anything is written).
        let reopenedStorage = LockingStorage(try LocalStorage(path: t.path))
        let reopened = try await Repository.open(storage: reopenedStorage, identities: KeyObjectIdentities(identities: [t.key]))
        #expect(reopened.config.objectLock?.days == 7)
        try await reopened.withLock(exclusive: false) {}
        #expect(reopenedStorage.retained(try ObjectName(.keys, "data-1")) == nil, "written before this storage existed")
        #expect(try await reopenedStorage.listAll(.locks).isEmpty)
        // A config without the field reads as no lock; a stored config with bad days is damage.
        var bad = repo.config
        bad.objectLock = ObjectLock(mode: .governance, days: 0)
        #expect(throws: RepositoryError.self) { try bad.validate() }
        bad.objectLock = ObjectLock(mode: .governance, days: ObjectLock.maxDays + 1)
        #expect(throws: RepositoryError.self) { try bad.validate() }
        var plain = repo.config
        plain.objectLock = nil
        #expect(!String(decoding: try RepositoryJSON.encode(plain), as: UTF8.self).contains("object_lock"))
        #expect(String(decoding: try RepositoryJSON.encode(repo.config), as: UTF8.self).contains("\"object_lock\":{\"days\":7,\"mode\":\"compliance\"}"))
    }

    @Test("a repository with object lock cannot be made on a storage that cannot lock objects")
    func refusedOnLocalStorage() async throws {
        let storage = try LocalStorage.create(path: t.path)
        var options = Repository.CreateOptions()
        options.objectLock = ObjectLock(mode: .compliance, days: 3)
        await expectCategory(.usage) {
            _ = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [t.key]), options: options)
        }
        #expect(try await storage.listAll(.config).isEmpty)
        #expect(try await storage.listAll(.keys).isEmpty)
        options.objectLock = ObjectLock(mode: .compliance, days: -1)
        let locking = LockingStorage(storage)
        await expectCategory(.usage) {
            _ = try await Repository.create(storage: locking, keys: KeyObjectRecipients(recipients: [t.key]), options: options)
        }
    }

    @Test("forget leaves a retained snapshot in place (policy) or refuses (explicit), and removes it once its retention ended")
    func forgetLockedSnapshot() async throws {
        let (repo, storage) = try await create(days: 10)
        let (old, new, _) = try await twoSnapshots(repo)
        await expectCategory(.usage) { _ = try await repo.removeSnapshots([old, new], skipLocked: false) }
        #expect(try await repo.listSnapshots().count == 2, "nothing removed")
        let deferred = try await repo.removeSnapshots([old], skipLocked: true)
        #expect(deferred.removed.isEmpty)
        let until = try #require(deferred.locked[old])
        #expect(abs(until.timeIntervalSinceNow - 10 * 86_400) < 120)
        #expect(try await repo.listSnapshots().map(\.id).contains(old))
        #expect(storage.refusedRemovals.isEmpty)
        try storage.age(by: 11 * 86_400)
        let done = try await repo.removeSnapshots([old], skipLocked: false)
        #expect(done.removed == [old] && done.locked.isEmpty)
        #expect(try await repo.listSnapshots().map(\.id) == [new])
        #expect(storage.refusedRemovals.isEmpty)
    }

    @Test("prune keeps retained packs and index objects whole, says when they become removable, removes them after; it never tries to delete a retained object")
    func pruneDefersLocked() async throws {
        let (repo, storage) = try await create(days: 10)
        let (old, _, walk) = try await twoSnapshots(repo)
        try storage.age(by: 11 * 86_400)  // the snapshot's retention is over, not its packs' (below)
        _ = try await repo.removeSnapshots([old], skipLocked: false)
        // Retention of everything written so far is over: nothing is held back.
        let report0 = try await repo.prune(dryRun: true, usedBlobs: walk)
        #expect(report0.lockedPacks == 0 && report0.packsRemoved + report0.packsRepacked >= 1, "\(report0)")

        // Now the case with retention still running: a fresh repository, forget right away.
        let t2 = TestRepository()
        let storage2 = LockingStorage(try LocalStorage.create(path: t2.path))
        var options = Repository.CreateOptions()
        options.objectLock = ObjectLock(mode: .governance, days: 30)
        let repo2 = try await Repository.create(storage: storage2, keys: KeyObjectRecipients(recipients: [t2.key]), options: options)
        repo2.packSize = 64 << 10
        let (old2, new2, walk2) = try await twoSnapshots(repo2)
        let snapshotName = try ObjectName(.snapshots, old2)
        // Only the snapshot object's retention is over (as if written long ago and never extended).
        storage2.forceRetention(snapshotName, until: Date().addingTimeInterval(-1))
        try setMTime(storage2.inner.path(for: snapshotName), secondsAgo: 31 * 86_400)
        _ = try await repo2.removeSnapshots([old2], skipLocked: false)
        let data2 = try await storage2.listAll(.data).count
        let index2 = try await storage2.listAll(.index).count
        let report = try await repo2.prune(usedBlobs: walk2)
        #expect(storage2.refusedRemovals.isEmpty, "\(storage2.refusedRemovals)")
        #expect(report.lockedPacks >= 1 && report.lockedBytes > 0, "\(report)")
        #expect(report.packsRemoved == 0 && report.packsRepacked == 0 && report.bytesRemoved == 0, "\(report)")
        #expect(report.lockedIndexObjects == index2)
        let group = try #require(report.removableFrom.first)
        #expect(group.packs == report.lockedPacks && group.bytes == report.lockedBytes)
        #expect(abs(group.until.timeIntervalSinceNow - 30 * 86_400) < 120, "\(group)")
        #expect(group.date == String(RepositoryJSON.formatDate(group.until).prefix(10)))
        #expect(try await storage2.listAll(.data).count == data2, "no pack removed")
        #expect(try await storage2.listAll(.index).count == index2, "no index rewritten while every index object is retained")
        var check = try await repo2.check(readData: .all)
        #expect(check.ok, "\(check)")
        // A second prune changes nothing either.
        let again = try await repo2.prune(usedBlobs: walk2)
        #expect(again.lockedPacks == report.lockedPacks)
        #expect(try await storage2.listAll(.index).count == index2)
        // 31 days later: everything old is removable, and removed.
        try storage2.age(by: 31 * 86_400)
        let later = try await repo2.prune(usedBlobs: walk2)
        #expect(storage2.refusedRemovals.isEmpty, "\(storage2.refusedRemovals)")
        #expect(later.lockedPacks == 0 && later.removableFrom.isEmpty, "\(later)")
        #expect(later.packsRemoved + later.packsRepacked >= 1 && later.bytesRemoved > 0, "\(later)")
        check = try await repo2.check(readData: .all)
        #expect(check.ok && check.warnings.isEmpty, "\(check)")
        #expect(try await repo2.listSnapshots().map(\.id) == [new2])
        _ = storage
    }

    @Test("lock extend moves the retention of what kept snapshots need, not of what only forgotten ones need; twice is harmless")
    func extend() async throws {
        let (repo, storage) = try await create(days: 5)
        let (old, new, walk) = try await twoSnapshots(repo)
        let newName = try ObjectName(.snapshots, new)
        let before = try #require(storage.retained(newName))
        try storage.age(by: 4 * 86_400)
        _ = try await repo.removeSnapshots([old], skipLocked: true)  // locked: stays, and is still needed
        let first = try await repo.extendLocks(days: 20, usedBlobs: walk)
        #expect(first.days == 20 && abs(first.until.timeIntervalSinceNow - 20 * 86_400) < 60)
        #expect(first.snapshots == 2 && first.packs >= 2 && first.indexObjects >= 1 && first.keyObjects >= 3, "\(first)")
        #expect(first.extended == first.objects && first.alreadyRetained == 0, "\(first)")
        let after = try #require(storage.retained(newName))
        #expect(after > before.addingTimeInterval(14 * 86_400), "\(before) → \(after)")
        let second = try await repo.extendLocks(days: 20, usedBlobs: walk)
        #expect(second.extended == 0 && second.alreadyRetained == second.objects, "\(second)")
        // The default is the repository's days; a shorter retention is never sent.
        let third = try await repo.extendLocks(usedBlobs: walk)
        #expect(third.days == 5 && third.extended == 0, "\(third)")
        #expect(try #require(storage.retained(newName)) == after)
        // Objects only a forgotten snapshot needs are not extended.
        try storage.age(by: 25 * 86_400)  // everything expired
        _ = try await repo.removeSnapshots([old], skipLocked: false)
        let fourth = try await repo.extendLocks(days: 3, usedBlobs: walk)
        #expect(fourth.snapshots == 1 && fourth.extended == fourth.objects, "\(fourth)")
        // The old snapshot's packs and the index object only they are in were not extended.
        let pruned = try await repo.prune(usedBlobs: walk)
        #expect(storage.refusedRemovals.isEmpty && pruned.lockedPacks == 0 && pruned.bytesRemoved > 0, "\(pruned)")
        #expect(try await repo.check(readData: .all).ok)
        await expectCategory(.usage) { _ = try await repo.extendLocks(days: 0, usedBlobs: walk) }
    }

    @Test("lock extend on a repository without object lock is refused")
    func extendWithoutLock() async throws {
        let repo = try await t.create()
        await expectCategory(.usage) { _ = try await repo.extendLocks(usedBlobs: { _ in [] }) }
    }
}

func setMTime(_ path: String, secondsAgo: TimeInterval) throws {
    let when = Int(Date().timeIntervalSince1970 - secondsAgo)
    var times = [timespec(tv_sec: when, tv_nsec: 0), timespec(tv_sec: when, tv_nsec: 0)]
    #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
}

@Suite("LocalStorage leftovers: temporary files of killed saves")
struct LocalLeftoverTests {
    let dir = TemporaryDirectory()

    @Test("only .tmp- regular files older than the cut-off are leftovers; hidden files, directories, symlinks and fresh ones are not; removal refuses other locations")
    func findsAndRemoves() async throws {
        let root = dir.file("repo")
        let storage = try LocalStorage.create(path: root)
        try await storage.save(try ObjectName(.data, "ab" + String(repeating: "0", count: 62)), contents: [1])
        let old = Date().addingTimeInterval(-2 * 86_400)
        func make(_ relative: String, aged: Bool = true) throws {
            #expect(FileManager.default.createFile(atPath: root + "/" + relative, contents: Data([9])))
            if aged { try setMTime(root + "/" + relative, secondsAgo: 2 * 86_400) }
        }
        try make("index/.tmp-" + String(repeating: "e", count: 64) + "-1f2e3d")
        try make("data/ab/.tmp-ab00-77")
        try make("snapshots/.tmp-fresh-1", aged: false)
        try make("keys/.hidden")
        try make("locks/.tmp-bad.name")
        #expect(mkdir(root + "/config/.tmp-dir", 0o700) == 0)
        #expect(symlink("/etc/passwd", root + "/config/.tmp-link") == 0)
        let found = try await storage.leftovers(olderThan: Date().addingTimeInterval(-86_400))
        #expect(found.map(\.location) == ["data/ab/.tmp-ab00-77", "index/.tmp-" + String(repeating: "e", count: 64) + "-1f2e3d"])
        #expect(found.allSatisfy { abs($0.since.timeIntervalSince(old)) < 120 })
        // Never listed as objects.
        #expect(try await storage.listAll(.index).isEmpty)
        for location in ["../repo2/.tmp-x", "index/notatmp", "data/ab/cd/.tmp-x", "other/.tmp-x", "index/.tmp-x/../../y"] {
            await #expect(throws: StorageError.self, "\(location)") {
                try await storage.removeLeftover(Leftover(location: location, since: old))
            }
        }
        for leftover in found { try await storage.removeLeftover(leftover) }
        #expect(try await storage.leftovers(olderThan: Date().addingTimeInterval(-86_400)).isEmpty)
        #expect(try await storage.leftovers(olderThan: Date().addingTimeInterval(60)).map(\.location) == ["snapshots/.tmp-fresh-1"])
        #expect(FileManager.default.fileExists(atPath: root + "/keys/.hidden"))
        #expect(FileManager.default.fileExists(atPath: "/etc/passwd"))
        try await storage.removeLeftover(found[0])  // already gone: fine
    }

    @Test("prune removes leftovers older than its age (default 24 h), counts them in a dry run, and keeps fresh ones")
    func pruneRemovesOld() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await saveBlob(repo, Array("t".utf8), kind: .tree)
        try await repo.flush()
        _ = try await repo.saveSnapshot(snapshotInfo(tree: tree))
        let oldPath = t.path + "/index/.tmp-" + String(repeating: "a", count: 64) + "-99"
        let freshPath = t.path + "/snapshots/.tmp-" + String(repeating: "b", count: 64) + "-98"
        #expect(FileManager.default.createFile(atPath: oldPath, contents: Data([1])))
        #expect(FileManager.default.createFile(atPath: freshPath, contents: Data([2])))
        try setMTime(oldPath, secondsAgo: 25 * 3600)
        let dry = try await repo.prune(dryRun: true) { _ in [tree] }
        #expect(dry.leftoversRemoved == 1 && FileManager.default.fileExists(atPath: oldPath))
        let report = try await repo.prune { _ in [tree] }
        #expect(report.leftoversRemoved == 1)
        #expect(!FileManager.default.fileExists(atPath: oldPath) && FileManager.default.fileExists(atPath: freshPath))
        let short = try await repo.prune(leftoverAge: 0) { _ in [tree] }
        #expect(short.leftoversRemoved == 1 && !FileManager.default.fileExists(atPath: freshPath))
        #expect(try await repo.check(readData: .all).ok)
    }
}
