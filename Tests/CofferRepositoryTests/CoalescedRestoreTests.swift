import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// A storage that counts (and records) the loads of data packs made through it.
final class CountingStorage: Storage, @unchecked Sendable {
    let inner: any Storage
    private let lock = NSLock()
    private var recorded: [(name: String, range: Range<Int64>?)] = []
    init(_ inner: any Storage) { self.inner = inner }

    var properties: StorageProperties { inner.properties }
    /// The data-pack loads since the last reset: (pack name, byte range).
    var dataLoads: [(name: String, range: Range<Int64>?)] { lock.withLock { recorded } }
    func reset() { lock.withLock { recorded = [] } }

    func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        try await inner.save(name, contents: contents, overwrite: overwrite)
    }
    func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] {
        if name.kind == .data { lock.withLock { recorded.append((name.name, range)) } }
        return try await inner.load(name, range: range)
    }
    func stat(_ name: ObjectName) async throws -> ObjectInfo { try await inner.stat(name) }
    func remove(_ name: ObjectName) async throws { try await inner.remove(name) }
    func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> { inner.list(kind, batchSize: batchSize) }
}

/// Restore reads each pack it needs with one read; dump and `loadBatch` read neighbouring blobs of a
/// pack with one ranged read (docs/REPOSITORY.md, "Restore").
@Suite struct CoalescedRestoreTests {
    /// `count` files of `size` random (incompressible, so stored as they are) bytes each, one blob
    /// per file, saved in order into one pack; the root tree lists them as f00, f01, ….
    func repository(_ t: TestRepository, count: Int, size: Int, packSize: Int = 4 << 20) async throws -> (root: BlobID, contents: [[UInt8]]) {
        let repo = try await t.create(packSize: packSize)
        var nodes: [TreeNode] = []
        var contents: [[UInt8]] = []
        for i in 0..<count {
            let bytes = deterministicBytes(size, seed: UInt64(100 + i))
            let id = try await saveBlob(repo, bytes)
            contents.append(bytes)
            nodes.append(TreeNode(name: Array(String(format: "f%02d", i).utf8), kind: .file, mode: 0o640, size: UInt64(size), content: [id]))
        }
        let root = try await repo.saveTree(try Tree(nodes: nodes))
        try await repo.flush()
        return (root.id, contents)
    }

    /// The pack of the data blobs (the largest: the tree has a small pack of its own).
    static func dataPack(_ t: TestRepository) -> String? {
        t.files(.data).max { a, b in
            ((try? FileManager.default.attributesOfItem(atPath: a)[.size] as? Int) ?? 0) ?? 0
                < ((try? FileManager.default.attributesOfItem(atPath: b)[.size] as? Int) ?? 0) ?? 0
        }
    }

    func reopen(_ t: TestRepository) async throws -> (Repository, CountingStorage) {
        let counting = CountingStorage(try LocalStorage(path: t.path))
        let repo = try await Repository.open(storage: counting, identities: KeyObjectIdentities(identities: [t.key]))
        return (repo, counting)
    }

    @Test("restore reads the blobs of one pack with one ranged read; loadBatch's cap splits ranges")
    func neighboursShareOneRead() async throws {
        let t = TestRepository()
        let (root, contents) = try await repository(t, count: 20, size: 20_000)
        #expect(t.files(.data).count == 2, "one pack of data blobs, one of the tree (trees have packs of their own)")

        // Default reads: the pack's header, the tree, then all 20 blobs in one range.
        let (repo, counting) = try await reopen(t)
        let dir = TemporaryDirectory()
        let result = try await Restorer(store: repo).restore(root: root, target: dir.p("out"))
        #expect(result.files == 20)
        for (i, bytes) in contents.enumerated() { #expect(readBytes(dir.p("out") + String(format: "/f%02d", i)) == bytes) }
        #expect(counting.dataLoads.count == 3, "\(counting.dataLoads)")
        let widest = counting.dataLoads.compactMap(\.range).map(\.count).max() ?? 0
        #expect(widest >= 20 * 20_000)

        // Restore reads by pack: the range caps and segments (dump's) do not split its read.
        let (capped, cappedCounting) = try await reopen(t)
        var options = RestoreOptions()
        options.reads.maxRange = 100_000
        options.segmentBytes = 1
        _ = try await Restorer(store: capped, options: options).restore(root: root, target: dir.p("capped"))
        #expect(cappedCounting.dataLoads.count == 3, "\(cappedCounting.dataLoads)")
        for (i, bytes) in contents.enumerated() { #expect(readBytes(dir.p("capped") + String(format: "/f%02d", i)) == bytes) }

        // loadBatch with a 100,000-byte cap: five blobs per range, four ranges (header cached).
        let ids = try await capped.loadTree(root).nodes.flatMap(\.content)
        cappedCounting.reset()
        let loaded = await capped.loadBatch(.data, ids, reads: options.reads)
        #expect(cappedCounting.dataLoads.count == 4, "\(cappedCounting.dataLoads)")
        for (i, id) in ids.enumerated() { #expect((try? loaded[id]?.get()) == contents[i]) }
    }

    @Test("a partial restore reads only the span of the pack its files need; for loadBatch, gaps above the limit split ranges")
    func partialRestoreReadsOnlyNeededRanges() async throws {
        let t = TestRepository()
        let (root, contents) = try await repository(t, count: 20, size: 100_000)
        let (repo, counting) = try await reopen(t)
        var options = RestoreOptions()
        options.reads.maxGap = 10_000
        options.includes = [try PathPattern("f0[2-4]"), try PathPattern("f1[5-6]")]
        let dir = TemporaryDirectory()
        let result = try await Restorer(store: repo, options: options).restore(root: root, target: dir.p("out"))
        #expect(result.files == 5)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("out")).sorted() == ["f02", "f03", "f04", "f15", "f16"])
        #expect(readBytes(dir.p("out/f03")) == contents[3])
        #expect(readBytes(dir.p("out/f16")) == contents[16])
        // The tree's own pack, then the data pack once: the span f02…f16 wastes less than half of
        // it, so the whole object (header included) in one read.
        let dataPack = (try #require(Self.dataPack(t)) as NSString).lastPathComponent
        let packReads = counting.dataLoads.filter { $0.name.hasSuffix(dataPack) }
        #expect(packReads.count == 1, "\(counting.dataLoads)")

        // Files only at the pack's end (f17–f19): its header, then a ranged read of their span only.
        let (tail, tailCounting) = try await reopen(t)
        var tailOptions = RestoreOptions()
        tailOptions.includes = [try PathPattern("f1[7-9]")]
        let tailResult = try await Restorer(store: tail, options: tailOptions).restore(root: root, target: dir.p("tail"))
        #expect(tailResult.files == 3)
        #expect(readBytes(dir.p("tail/f18")) == contents[18])
        let tailReads = tailCounting.dataLoads.filter { $0.name.hasSuffix(dataPack) }
        #expect(tailReads.count == 2, "header, then the span: \(tailCounting.dataLoads)")
        let span = try #require(tailReads.last?.range)
        #expect(span.lowerBound > 17 * 100_000 - 65_552 && span.count < 3 * 100_000 + 2 * 65_552 + 4096, "\(span) of a 2 MB pack")

        // loadBatch (dump's reads): f02–f04 in one range and f15–f16 in another: the 10 blobs
        // between them (1,000,000 bytes) are more than the gap allowed; a larger allowance, one range.
        let ids = try await repo.loadTree(root).nodes.flatMap(\.content)
        let wanted = [2, 3, 4, 15, 16].map { ids[$0] }
        counting.reset()
        _ = await repo.loadBatch(.data, wanted, reads: options.reads)
        #expect(counting.dataLoads.count == 2, "\(counting.dataLoads)")
        let read = counting.dataLoads.compactMap(\.range).map(\.count).reduce(0, +)
        #expect(read < 5 * 100_000 + 4 * 65_552, "read \(read) bytes of a 2 MB pack for 5 blobs of 100,000")
        counting.reset()
        options.reads.maxGap = 1_100_000
        _ = await repo.loadBatch(.data, wanted, reads: options.reads)
        #expect(counting.dataLoads.count == 1, "\(counting.dataLoads)")
    }

    @Test("a damaged blob inside a coalesced range fails exactly its file, named, with nothing under its name")
    func damagedBlobInsideARange() async throws {
        let t = TestRepository()
        // Blobs of 128 KiB: each fills two whole STREAM chunks of 64 KiB of the pack.
        let (root, contents) = try await repository(t, count: 6, size: 128 << 10)
        let pack = try #require(Self.dataPack(t))
        let packName = (pack as NSString).lastPathComponent
        let stored = Array(try Data(contentsOf: URL(fileURLWithPath: pack)))
        let header = try #require(try CofferObject.headerLength(prefix: stored, object: "pack"))
        // Plaintext offset inside blob 3 (STREAM chunk 7) → sealed offset.
        let plainOffset = 3 * (128 << 10) + 65536 + 1000
        try flipByte(pack, at: header + (plainOffset / 65536) * (65536 + 16) + plainOffset % 65536)

        let (repo, counting) = try await reopen(t)
        let dir = TemporaryDirectory()
        var failures: [RestoreFailure] = []
        do {
            _ = try await Restorer(store: repo).restore(root: root, target: dir.p("out"))
            Issue.record("the restore of a damaged blob succeeded")
        } catch TreeError.restoreIncomplete(let result) {
            failures = result.failures
            #expect(result.files == 5)
        }
        #expect(failures.map(\.path) == ["/f03"])
        #expect(failures.first?.category == .integrity)
        #expect(failures.first?.reason.contains("data/\(packName)") == true, "\(failures)")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.p("out")).sorted()
        #expect(names == ["f00", "f01", "f02", "f04", "f05"], "nothing else, no temporary file: \(names)")
        for i in [0, 1, 2, 4, 5] { #expect(readBytes(dir.p("out") + String(format: "/f%02d", i)) == contents[i]) }
        // Header and tree, then one read of the blobs' span: the damaged chunk fails its blob only,
        // nothing is read again.
        #expect(counting.dataLoads.count == 2 + 1, "\(counting.dataLoads)")

        // dump of the damaged file fails as an integrity error; of a neighbour, succeeds.
        let fd = open(dir.p("dumped"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        await expectCategory(.integrity) { _ = try await Restorer(store: repo).dump(root: root, path: [Array("f03".utf8)], to: fd) }
        let n = try await Restorer(store: repo).dump(root: root, path: [Array("f04".utf8)], to: fd)
        #expect(n == UInt64(128 << 10))
    }

    @Test("a blob shared by several files is read once; a large file is read in a few ranges, in order")
    func sharedBlobsAndLargeFiles() async throws {
        let t = TestRepository()
        let repo = try await t.create(packSize: 4 << 20)
        let shared = deterministicBytes(50_000, seed: 7)
        let sharedID = try await saveBlob(repo, shared)
        var bigIDs: [BlobID] = []
        var big: [UInt8] = []
        for i in 0..<24 {
            let piece = deterministicBytes(100_000, seed: UInt64(200 + i))
            bigIDs.append(try await saveBlob(repo, piece))
            big += piece
        }
        let nodes = (0..<5).map { TreeNode(name: Array("copy\($0)".utf8), kind: .file, size: 50_000, content: [sharedID]) }
            + [TreeNode(name: Array("big".utf8), kind: .file, size: UInt64(big.count), content: bigIDs)]
        let root = try await repo.saveTree(try Tree(nodes: nodes))
        try await repo.flush()

        let counting = CountingStorage(try LocalStorage(path: t.path))
        let reopened = try await Repository.open(storage: counting, identities: KeyObjectIdentities(identities: [t.key]))
        var options = RestoreOptions()
        options.segmentBytes = 1 << 20
        options.reads.maxRange = 2 << 20
        let dir = TemporaryDirectory()
        _ = try await Restorer(store: reopened, options: options).restore(root: root.id, target: dir.p("out"))
        #expect(readBytes(dir.p("out/big")) == big)
        for i in 0..<5 { #expect(readBytes(dir.p("out/copy\(i)")) == shared) }
        // Header and tree, then the pack's span in one read: the shared blob read once.
        #expect(counting.dataLoads.count == 2 + 1, "\(counting.dataLoads)")

        counting.reset()
        let fd = open(dir.p("dumped"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let n = try await Restorer(store: reopened, options: options).dump(root: root.id, path: [Array("big".utf8)], to: fd)
        close(fd)
        #expect(n == UInt64(big.count))
        #expect(readBytes(dir.p("dumped")) == big)
        // The tree (looked up again), then the big file in 3 reads.
        #expect(counting.dataLoads.count == 1 + 3, "\(counting.dataLoads)")
    }

    @Test("loadBatch reads an uncached header with the pack's first range (one read from the start); damage still fails only its blobs")
    func headerWithFirstRange() async throws {
        let t = TestRepository()
        let (_, contents) = try await repository(t, count: 20, size: 20_000)
        let (repo, counting) = try await reopen(t)
        let ids = contents.map { bytes in bytes.withUnsafeBytes { repo.blobID(of: $0) } }
        let loaded = await repo.loadBatch(.data, Array(ids[5..<10]), reads: RangeReads())
        #expect(counting.dataLoads.count == 1, "\(counting.dataLoads)")
        #expect(counting.dataLoads.first?.range?.lowerBound == 0)
        for i in 5..<10 { #expect((try? loaded[ids[i]]?.get()) == contents[i]) }

        // A flipped byte in STREAM chunk 2 (plaintext 131,072…196,607: blobs 6 to 9 lie in it).
        let pack = try #require(Self.dataPack(t))
        let stored = Array(try Data(contentsOf: URL(fileURLWithPath: pack)))
        let header = try #require(try CofferObject.headerLength(prefix: stored, object: "pack"))
        try flipByte(pack, at: header + 2 * (65536 + 16) + 5000)
        let (damaged, _) = try await reopen(t)
        let results = await damaged.loadBatch(.data, Array(ids[4..<11]), reads: RangeReads())
        for i in [4, 5, 10] { #expect((try? results[ids[i]]?.get()) == contents[i], "blob \(i)") }
        for i in 6...9 {
            guard case .failure(let error)? = results[ids[i]] else { Issue.record("blob \(i) loaded"); continue }
            #expect((error as? any CategorizedError)?.category == .integrity, "\(error)")
        }
    }

    @Test("range planning: sorted by offset, merged across small gaps, capped")
    func rangePlanning() {
        func blob(_ offset: UInt32, _ length: UInt32) -> PackedBlob {
            PackedBlob(kind: .data, id: BlobID(bytes: [UInt8](repeating: UInt8(offset % 251), count: 32)), offset: offset,
                       length: length, rawLength: length, compressed: false)
        }
        var reads = RangeReads()
        reads.maxGap = 100
        reads.maxRange = 1000
        let ranges = PackRange.plan([("p", 10_000, [blob(500, 100), blob(0, 100), blob(150, 100), blob(1300, 100), blob(700, 400)])], reads)
        #expect(ranges.map { [$0.start, $0.end] } == [[0, 250], [500, 1100], [1300, 1400]])
        reads.maxRange = 500
        #expect(PackRange.plan([("p", 10_000, [blob(500, 100), blob(700, 400)])], reads).count == 2)
        #expect(ranges.flatMap(\.blobs).count == 5)
        #expect(ranges.allSatisfy { $0.end - $0.start <= 1000 })
    }
}
