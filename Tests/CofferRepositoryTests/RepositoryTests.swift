import CofferFormat
import CofferKeys
@testable import CofferRepository
import Crypto
import Foundation
import Testing

/// A repository in a temporary directory, opened with a fresh key file.
struct TestRepository {
    let dir = TemporaryDirectory()
    let key = SymmetricKeyFile.generate()
    var path: String { dir.file("repo") }

    func create(packSize: Int = 1 << 20, options: Repository.CreateOptions = .init()) async throws -> Repository {
        var options = options
        options.packSize = packSize
        let storage = try LocalStorage.create(path: path)
        return try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [key]), options: options)
    }

    func open(_ key: SymmetricKeyFile? = nil, tolerateDamage: Bool = false) async throws -> Repository {
        try await Repository.open(storage: try LocalStorage(path: path), identities: KeyObjectIdentities(identities: [key ?? self.key]),
                                  tolerateDamage: tolerateDamage)
    }

    /// Paths of the stored objects of a kind.
    func files(_ kind: ObjectKind) -> [String] {
        let base = "\(path)/\(kind)"
        let items = (try? FileManager.default.subpathsOfDirectory(atPath: base)) ?? []
        return items.map { "\(base)/\($0)" }.filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &isDir) && !isDir.boolValue
                && !($0 as NSString).lastPathComponent.hasPrefix(".")
        }.sorted()
    }
}

/// Flips one bit of a file at `offset` (negative: from the end).
func flipByte(_ path: String, at offset: Int) throws {
    var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    let i = offset >= 0 ? offset : bytes.count + offset
    bytes[i] ^= 0x01
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func saveBlob(_ repo: Repository, _ plaintext: [UInt8], kind: BlobKind = .data) async throws -> BlobID {
    let id = plaintext.withUnsafeBytes { repo.blobID(of: $0) }
    try await repo.save(kind, id: id, plaintext: plaintext)
    return id
}

func snapshotInfo(tree: BlobID, time: Date = Date(), host: String = "host") -> SnapshotInfo {
    SnapshotInfo(time: time, tree: tree, paths: ["/data"], hostname: host, username: "u", tags: [], parent: nil,
                 programVersion: "test", summary: .init())
}

func expectCategory(_ category: ErrorCategory, naming object: String? = nil, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected a \(category) error")
    } catch let e as any CategorizedError {
        #expect(e.category == category, "\(e)")
        if let object { #expect("\(e)".contains(object), "\(e)") }
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

@Suite struct RepositoryTests {
    @Test("blobs round-trip through packs and the index, before and after reopening; compressible blobs are stored smaller")
    func roundTrip() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        repo.packSize = 256 << 10
        let blobs: [[UInt8]] = [sqlLikeText(300_000), deterministicBytes(200_000, seed: 2), [1, 2, 3], sqlLikeText(700_000, seed: 3),
                                deterministicBytes(900_000, seed: 4)]
        var ids: [BlobID] = []
        for b in blobs { ids.append(try await saveBlob(repo, b)) }
        #expect(try await repo.save(.data, id: ids[0], plaintext: blobs[0]) == false, "a stored blob is not stored twice")
        #expect(repo.contains(.data, ids[1]))
        #expect(!repo.contains(.tree, ids[1]))
        // Loadable before flush (from the open pack) and after.
        #expect(try await repo.load(.data, ids[2]) == blobs[2])
        try await repo.flush()
        #expect(t.files(.data).count >= 2, "256 KiB packs: the blobs fill more than one")
        #expect(t.files(.index).count == 1)
        for (b, id) in zip(blobs, ids) { #expect(try await repo.load(.data, id) == b) }
        let reopened = try await t.open()
        for (b, id) in zip(blobs, ids) { #expect(try await reopened.load(.data, id) == b) }
        #expect(reopened.contains(.data, ids[4]))
        await expectCategory(.usage) { _ = try await reopened.load(.tree, ids[0]) }
        let stored = t.files(.data).reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        #expect(stored < blobs.reduce(0) { $0 + $1.count }, "SQL-like text compresses")
        let report = try await reopened.check(readData: .all)
        #expect(report.ok, "\(report.errors)")
        #expect(report.blobsRead == blobs.count)
    }

    @Test("the wrong key opens nothing (key error); the repository id and config are checked")
    func wrongKey() async throws {
        let t = TestRepository()
        _ = try await t.create()
        await expectCategory(.key) { _ = try await t.open(SymmetricKeyFile.generate()) }
        // A second repository's key object copied in does not open this repository.
        let other = TestRepository()
        let o = try await other.create()
        _ = o
        let keyFile = other.files(.keys).first { !$0.contains("data-") }!
        try FileManager.default.copyItem(atPath: keyFile, toPath: "\(t.path)/keys/\((keyFile as NSString).lastPathComponent)")
        await expectCategory(.integrity) { _ = try await t.open(other.key) }
    }

    @Test("a flipped byte in a pack: load refuses it and check --read-data names the pack")
    func tamperedPack() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let id = try await saveBlob(repo, deterministicBytes(100_000))
        try await repo.flush()
        let pack = t.files(.data)[0]
        let packName = (pack as NSString).lastPathComponent
        try flipByte(pack, at: -200)  // inside the payload, near the end
        let reopened = try await t.open()
        let structural = try await reopened.check()
        #expect(structural.ok, "structure alone does not read packs")
        let report = try await reopened.check(readData: .all)
        #expect(report.errors.contains { $0.object == "data/\(packName)" }, "\(report.errors)")
        try flipByte(pack, at: -200)
        try flipByte(pack, at: 6000)  // in the blob's first chunk
        await expectCategory(.integrity, naming: "data/\(packName)") { _ = try await reopened.load(.data, id) }
    }

    @Test("a flipped byte in an index object: open refuses it, check names it")
    func tamperedIndex() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        _ = try await saveBlob(repo, deterministicBytes(1000))
        try await repo.flush()
        let index = t.files(.index)[0]
        let name = "index/\((index as NSString).lastPathComponent)"
        try flipByte(index, at: -5)
        await expectCategory(.integrity, naming: name) { _ = try await t.open() }
        let tolerant = try await t.open(tolerateDamage: true)
        #expect(tolerant.damagedIndexObjects[name] != nil)
        let report = try await tolerant.check()
        #expect(report.errors.contains { $0.object == name }, "\(report.errors)")
    }

    @Test("a flipped byte in a snapshot: load refuses it, check names it; a snapshot renamed is refused too")
    func tamperedSnapshot() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await saveBlob(repo, Array("{}".utf8), kind: .tree)
        try await repo.flush()
        let a = try await repo.saveSnapshot(snapshotInfo(tree: tree))
        let b = try await repo.saveSnapshot(snapshotInfo(tree: tree))
        #expect(try await repo.loadSnapshot(a).tree == tree)
        try flipByte("\(t.path)/snapshots/\(a)", at: -3)
        await expectCategory(.integrity, naming: "snapshots/\(a)") { _ = try await repo.loadSnapshot(a) }
        let report = try await repo.check()
        #expect(report.errors.map(\.object) == ["snapshots/\(a)"], "\(report.errors)")
        // Swapping names: b's content under a's name does not authenticate as a.
        try FileManager.default.removeItem(atPath: "\(t.path)/snapshots/\(a)")
        try FileManager.default.copyItem(atPath: "\(t.path)/snapshots/\(b)", toPath: "\(t.path)/snapshots/\(a)")
        await expectCategory(.integrity, naming: "snapshots/\(a)") { _ = try await repo.loadSnapshot(a) }
    }

    @Test("a flipped byte in a key object: opening with it names the key object")
    func tamperedKeyObject() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let keyObject = t.files(.keys).first { !$0.contains("data-") }!
        #expect((keyObject as NSString).lastPathComponent == repo.keyID)
        try flipByte(keyObject, at: -3)
        await expectCategory(.integrity, naming: "keys/\(repo.keyID!)") { _ = try await t.open() }
    }

    @Test("a writer key saves blobs and snapshots but cannot load blobs or read snapshots")
    func writerKey() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let old = try await saveBlob(repo, deterministicBytes(5000, seed: 9))
        try await repo.flush()
        let file = try repo.makeWriterKey().encoded()
        let writerKey = try WriterKeyFile.parse(file)
        let writer = try await Repository.open(storage: try LocalStorage(path: t.path), writerKey: writerKey)
        #expect(writer.access == .writer)
        #expect(writer.contains(.data, old), "a writer deduplicates against the index")
        let content = sqlLikeText(50_000)
        let id = try await saveBlob(writer, content)
        #expect(id == content.withUnsafeBytes { repo.blobID(of: $0) }, "same chunk ids as full access")
        let tree = try await saveBlob(writer, Array("{\"nodes\":[]}".utf8), kind: .tree)
        try await writer.flush()
        let snap = try await writer.saveSnapshot(snapshotInfo(tree: tree))
        #expect(try await writer.snapshotIDs() == [snap])
        await expectCategory(.key) { _ = try await writer.load(.data, id) }
        await expectCategory(.key) { _ = try await writer.load(.data, old) }
        await expectCategory(.key) { _ = try await writer.loadSnapshot(snap) }
        await expectCategory(.key) { _ = try await writer.listSnapshots() }
        await expectCategory(.key) { _ = try await writer.check() }
        await expectCategory(.key) { _ = try await writer.prune { _ in [] } }
        let full = try await t.open()
        #expect(try await full.load(.data, id) == content)
        #expect(try await full.loadSnapshot(snap).tree == tree)
        // Not a writer key; a writer key of another repository.
        await expectCategory(.key) { _ = try WriterKeyFile.parse(Array("{\"type\":\"x\"}".utf8)) }
        let other = TestRepository()
        let otherKey = try await other.create().makeWriterKey()
        await expectCategory(.key) { _ = try await Repository.open(storage: try LocalStorage(path: t.path), writerKey: otherKey) }
    }

    @Test("key add/remove/rotate: a new key opens the repository; the last and the current key cannot be removed; old data stays readable after rotate")
    func keyManagement() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let first = try await saveBlob(repo, deterministicBytes(3000, seed: 1))
        try await repo.flush()
        let second = SymmetricKeyFile.generate()
        let added = try await repo.addKey(KeyObjectRecipients(recipients: [second]))
        let viaSecond = try await t.open(second)
        #expect(viaSecond.keyID == added)
        #expect(try await viaSecond.load(.data, first).count == 3000)
        let keys = try await viaSecond.listKeys()
        #expect(keys.count == 2)
        #expect(keys.first { $0.current }?.id == added)
        #expect(keys.allSatisfy { $0.keys.count == 1 && $0.damaged == nil }, "\(keys)")
        await expectCategory(.usage) { try await viaSecond.removeKey(added) }
        try await viaSecond.removeKey(repo.keyID!)
        await expectCategory(.key) { _ = try await t.open() }
        await expectCategory(.usage) { try await viaSecond.removeKey(added) }
        // Rotate: new data goes to generation 2; old data still loads.
        #expect(viaSecond.dataKeyGeneration == 1)
        #expect(try await viaSecond.rotateDataKey() == 2)
        let after = try await saveBlob(viaSecond, deterministicBytes(4000, seed: 2))
        try await viaSecond.flush()
        let reopened = try await t.open(second)
        #expect(reopened.dataKeyGeneration == 2)
        #expect(try await reopened.load(.data, first).count == 3000)
        #expect(try await reopened.load(.data, after).count == 4000)
        #expect(try await reopened.check(readData: .all).ok)
    }

    @Test("recovery policy: a repository that requires recovery keeps a key object the recovery key opens")
    func recoveryPolicy() async throws {
        let t = TestRepository()
        let recovery = X25519Identity(privateKey: Curve25519.KeyAgreement.PrivateKey())
        var options = Repository.CreateOptions()
        options.requireRecovery = true
        let storage = try LocalStorage.create(path: t.path)
        await expectCategory(.usage) {
            _ = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [t.key]), options: options)
        }
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [t.key], recovery: recovery.recipient),
                                               options: options)
        await expectCategory(.usage) { try await repo.addKey(KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()])) }
        let other = try await repo.addKey(KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()], recovery: recovery.recipient))
        #expect(try await repo.listKeys().allSatisfy(\.recovery))
        try await repo.removeKey(other)
        let viaRecovery = try await Repository.open(storage: storage, identities: KeyObjectIdentities(identities: [recovery]))
        #expect(viaRecovery.keyID == repo.keyID)
    }

    @Test("prune keeps every blob a kept snapshot needs, removes the rest, and repacks partly used packs")
    func prune() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        repo.packSize = 64 << 10
        let a = try await saveBlob(repo, deterministicBytes(30_000, seed: 1))
        let b = try await saveBlob(repo, deterministicBytes(30_000, seed: 2))
        let c = try await saveBlob(repo, deterministicBytes(30_000, seed: 3))
        let d = try await saveBlob(repo, deterministicBytes(70_000, seed: 4))
        let tree1 = try await saveBlob(repo, Array("tree1".utf8), kind: .tree)
        let tree2 = try await saveBlob(repo, Array("tree2".utf8), kind: .tree)
        try await repo.flush()
        let s1 = try await repo.saveSnapshot(snapshotInfo(tree: tree1, time: Date(timeIntervalSince1970: 1000)))
        _ = try await repo.saveSnapshot(snapshotInfo(tree: tree2, time: Date(timeIntervalSince1970: 2000)))
        let uses: [BlobID: Set<BlobID>] = [tree1: [tree1, a, b, d], tree2: [tree2, b, c]]
        let walk: @Sendable (Snapshot) async throws -> Set<BlobID> = { uses[$0.info.tree]! }
        let dry = try await repo.prune(dryRun: true, usedBlobs: walk)
        #expect(dry.packsRemoved == 0 && dry.packsRepacked == 0 && dry.blobsRemoved == 0, "\(dry)")
        try await repo.removeSnapshot(s1)
        let packsBefore = t.files(.data)
        let report = try await repo.prune(usedBlobs: walk)
        #expect(report.blobsRemoved == 3, "a, d and tree1: \(report)")
        #expect(report.packsRemoved + report.packsRepacked >= 1)
        #expect(t.files(.data) != packsBefore)
        let reopened = try await t.open()
        #expect(try await reopened.load(.data, b).count == 30_000)
        #expect(try await reopened.load(.data, c).count == 30_000)
        #expect(try await reopened.load(.tree, tree2) == Array("tree2".utf8))
        #expect(!reopened.contains(.data, a))
        #expect(!reopened.contains(.data, d))
        await expectCategory(.usage) { _ = try await reopened.load(.data, a) }
        let check = try await reopened.check(readData: .all)
        #expect(check.ok && check.warnings.isEmpty, "\(check)")
        // Nothing left to remove: a second prune removes nothing.
        let again = try await reopened.prune(usedBlobs: walk)
        #expect(again.blobsRemoved == 0 && again.packsRemoved == 0, "\(again)")
    }

    @Test("prune refuses when a snapshot needs a blob that is in no pack")
    func pruneRefusesMissing() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await saveBlob(repo, Array("tree".utf8), kind: .tree)
        try await repo.flush()
        _ = try await repo.saveSnapshot(snapshotInfo(tree: tree))
        let ghost = BlobID(bytes: [UInt8](repeating: 7, count: 32))
        let before = t.files(.data) + t.files(.index)
        await expectCategory(.usage) { _ = try await repo.prune { _ in [tree, ghost] } }
        #expect(t.files(.data) + t.files(.index) == before)
    }

    @Test("a crash before the snapshot (packs written, index or not, no snapshot): check passes, prune removes the leftovers")
    func crashBeforeSnapshot() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await saveBlob(repo, Array("kept tree".utf8), kind: .tree)
        let kept = try await saveBlob(repo, deterministicBytes(20_000, seed: 5))
        try await repo.flush()
        _ = try await repo.saveSnapshot(snapshotInfo(tree: tree))
        // The interrupted backup: one pack with its index, one pack whose index was never written.
        _ = try await saveBlob(repo, deterministicBytes(20_000, seed: 6))
        try await repo.flush()
        let indexes = Set(t.files(.index))
        _ = try await saveBlob(repo, deterministicBytes(20_000, seed: 7))
        try await repo.flush()
        for path in Set(t.files(.index)).subtracting(indexes) { try FileManager.default.removeItem(atPath: path) }
        #expect(t.files(.data).count == 4, "the tree's pack and three data packs")
        let reopened = try await t.open()
        let check = try await reopened.check(readData: .all)
        #expect(check.ok, "\(check.errors)")
        #expect(check.warnings.count == 1, "the unindexed pack")
        let report = try await reopened.prune { _ in [tree, kept] }
        #expect(report.unreferencedPacksRemoved == 1)
        #expect(report.packsRemoved == 1)
        #expect(t.files(.data).count == 2, "the tree's pack and the kept data pack")
        let after = try await t.open()
        #expect(try await after.load(.data, kept).count == 20_000)
        #expect(try await after.check(readData: .all).warnings.isEmpty)
    }

    @Test("two writers at once: both sets of blobs and snapshots are stored and readable")
    func concurrentWriters() async throws {
        let t = TestRepository()
        let first = try await t.create()
        first.packSize = 64 << 10
        let second = try await t.open()
        second.packSize = 64 << 10
        let writerKey = try first.makeWriterKey()
        let third = try await Repository.open(storage: try LocalStorage(path: t.path), writerKey: writerKey)
        third.packSize = 64 << 10
        let results = try await withThrowingTaskGroup(of: [BlobID].self) { group in
            for (n, repo) in [first, second, third].enumerated() {
                group.addTask {
                    let held = try await repo.lock(exclusive: false)
                    var ids: [BlobID] = []
                    for i in 0..<12 { ids.append(try await saveBlob(repo, deterministicBytes(20_000, seed: UInt64(n * 100 + i)))) }
                    // A blob both writers store: stored twice at most, found either way.
                    ids.append(try await saveBlob(repo, deterministicBytes(20_000, seed: 999)))
                    let tree = try await saveBlob(repo, Array("tree \(n)".utf8), kind: .tree)
                    try await repo.flush()
                    try await repo.saveSnapshot(snapshotInfo(tree: tree))
                    await held.release()
                    return ids + [tree]
                }
            }
            var all: [BlobID] = []
            for try await ids in group { all += ids }
            return all
        }
        let reopened = try await t.open()
        for id in results {
            #expect(reopened.contains(.data, id) || reopened.contains(.tree, id))
        }
        #expect(try await reopened.listSnapshots().count == 3)
        #expect(try await reopened.check(readData: .all).ok)
        #expect(try await reopened.listLocks().isEmpty, "locks released")
    }

    @Test("locks: an exclusive lock excludes others; shared locks coexist; stale locks do not count")
    func locks() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let shared1 = try await repo.lock(exclusive: false)
        let shared2 = try await repo.lock(exclusive: false)
        await expectCategory(.io) { _ = try await repo.lock(exclusive: true) }
        await shared1.release()
        await shared2.release()
        let exclusive = try await repo.lock(exclusive: true)
        await expectCategory(.io) { _ = try await repo.lock(exclusive: false) }
        await exclusive.release()
        // A lock from a process that no longer exists on this host is stale.
        let dead = LockInfo(time: Date(), exclusive: true, hostname: Repository.hostname, username: "u", pid: 999_999_999)
        #expect(Repository.isStale(dead))
        let old = LockInfo(time: Date(timeIntervalSinceNow: -3600), exclusive: true, hostname: "elsewhere", username: "u", pid: 1)
        #expect(Repository.isStale(old))
        let live = LockInfo(time: Date(), exclusive: true, hostname: "elsewhere", username: "u", pid: 1)
        #expect(!Repository.isStale(live))
    }

    @Test("snapshots are found by unique id prefix or 'latest'; ambiguous and unknown prefixes are refused")
    func findSnapshots() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await saveBlob(repo, Array("t".utf8), kind: .tree)
        try await repo.flush()
        var ids: [String] = []
        for i in 0..<3 { ids.append(try await repo.saveSnapshot(snapshotInfo(tree: tree, time: Date(timeIntervalSince1970: Double(1000 + i))))) }
        #expect(try await repo.findSnapshot("latest").id == ids[2])
        #expect(try await repo.findSnapshot(String(ids[0].prefix(12))).id == ids[0])
        await expectCategory(.usage) { _ = try await repo.findSnapshot("zz") }
        await expectCategory(.usage) { _ = try await repo.findSnapshot("0000000000000000") }
        #expect(try await repo.listSnapshots().map(\.id) == ids)
        let info = try await repo.loadSnapshot(ids[1])
        #expect(info.time == Date(timeIntervalSince1970: 1001))
    }

    @Test("the pack trailer and index decoders refuse malformed input")
    func decoders() throws {
        let blob = PackedBlob(kind: .data, id: BlobID(bytes: [UInt8](repeating: 1, count: 32)), offset: 0, length: 3, rawLength: 3, compressed: false)
        let pack = [1, 2, 3] + PackTrailer.encode([blob])
        #expect(try PackTrailer.decode(pack, object: "p") == [blob])
        #expect(throws: RepositoryError.self) { try PackTrailer.decode(Array(pack.dropFirst()), object: "p") }
        #expect(throws: RepositoryError.self) { try PackTrailer.decode(Array(pack.dropLast()), object: "p") }
        var wrongCount = pack
        wrongCount[wrongCount.count - 8] = 200
        #expect(throws: RepositoryError.self) { try PackTrailer.decode(wrongCount, object: "p") }
        let index = IndexFormat.encode([IndexedPack(name: String(repeating: "ab", count: 32), size: 100, blobs: [blob])])
        #expect(try IndexFormat.decode(index, object: "i").first?.blobs == [blob])
        #expect(throws: RepositoryError.self) { try IndexFormat.decode(Array(index.dropLast()), object: "i") }
        #expect(throws: RepositoryError.self) { try IndexFormat.decode(index + [0], object: "i") }
        var huge = index
        huge[4] = 0xff; huge[5] = 0xff
        #expect(throws: RepositoryError.self) { try IndexFormat.decode(huge, object: "i") }
    }
}

@Suite struct RepositoryIndexMemory {
    @Test("the in-memory index stays compact: 500,000 blobs (a 2 GB repository of 4 KiB files) in well under 64 MiB")
    func compactIndex() throws {
        var index = BlobIndex()
        var blobs: [PackedBlob] = []
        blobs.reserveCapacity(500)
        var packs = 0
        for p in 0..<1000 {
            blobs.removeAll(keepingCapacity: true)
            for i in 0..<500 {
                var bytes = [UInt8](repeating: 0, count: 32)
                withUnsafeBytes(of: UInt64(p * 500 + i).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
                bytes[31] = 0xAA
                blobs.append(PackedBlob(kind: .data, id: BlobID(bytes: bytes), offset: UInt32(i * 4096), length: 4096,
                                        rawLength: 4096, compressed: false))
            }
            index.add(IndexedPack(name: Hex.encode(Array(SHA256.hash(data: [UInt8(p & 0xff), UInt8(p >> 8)]))), size: 2 << 20, blobs: blobs))
            packs += 1
        }
        #expect(index.blobCount == 500_000)
        let bytes = index.entries.capacity * (MemoryLayout<BlobKey>.stride + MemoryLayout<BlobLocation>.stride + 1)
        #expect(bytes < 48 << 20, "\(bytes) bytes for 500,000 entries")
        let id = blobs[17].id
        #expect(index.lookup(.data, id).map { Int($0.location.offset) } == 17 * 4096)
        print("index of 500,000 blobs: \(bytes / 1024 / 1024) MiB of hash table (\(bytes / 500_000) bytes per blob), \(packs) packs")
    }
}
