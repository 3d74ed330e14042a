import CofferFormat
@testable import CofferRepository
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A store whose data saves take a random 0–2 ms, so concurrent saves overlap; counts how many ran
/// at once.
final class CountingSaveStore: BlobStore, @unchecked Sendable {
    let inner = MemoryBlobStore()
    private let lock = NSLock()
    private var running = 0
    private var peak = 0
    var maxConcurrent: Int { lock.withLock { peak } }
    func blobID(of plaintext: UnsafeRawBufferPointer) -> BlobID { inner.blobID(of: plaintext) }
    func makeChunker() -> FastCDC { inner.makeChunker() }
    func contains(_ kind: BlobKind, _ id: BlobID) -> Bool { inner.contains(kind, id) }
    func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8]) async throws -> Bool {
        guard kind == .data else { return try await inner.save(kind, id: id, plaintext: plaintext) }
        lock.withLock { running += 1; peak = max(peak, running) }
        defer { lock.withLock { running -= 1 } }
        try await Task.sleep(nanoseconds: UInt64.random(in: 0...2_000_000))
        return try await inner.save(kind, id: id, plaintext: plaintext)
    }
    func load(_ kind: BlobKind, _ id: BlobID) async throws -> [UInt8] { try await inner.load(kind, id) }
    func flush() async throws {}
}

/// Writes fixed bytes into the pipe from a thread, then exits with `status` (as a child would).
struct BytesProducer: StreamProducer {
    let bytes: [UInt8]
    var fails = false

    struct Running: RunningStream {
        let done: DispatchSemaphore
        let fails: Bool
        func finish() async throws {
            done.wait()
            if fails { throw TreeError.commandFailed("producer failed") }
        }
        func cancel() { done.wait() }
    }

    func start(writingTo fd: Int32) async throws -> any RunningStream {
        let copy = dup(fd)
        let done = DispatchSemaphore(value: 0)
        let bytes = self.bytes
        Thread {
            bytes.withUnsafeBytes { raw in
                var at = 0
                while at < raw.count {
                    let n = write(copy, raw.baseAddress! + at, raw.count - at)
                    if n <= 0 { break }
                    at += n
                }
            }
            close(copy)
            done.signal()
        }.start()
        return Running(done: done, fails: fails)
    }
}

@Suite struct ArchiverPipeline {
    static func chunkIDs(_ bytes: [UInt8], _ store: some BlobStore) throws -> [BlobID] {
        let chunker = StreamChunker(source: BytesSource(bytes), cdc: store.makeChunker())
        var ids: [BlobID] = []
        while let chunk = try chunker.nextChunk() { ids.append(chunk.withUnsafeBytes { store.blobID(of: $0) }) }
        return ids
    }

    @Test("database streams go through the parallel chunk pipeline: chunks saved concurrently, content in input order, summary counted")
    func streamsUseTheParallelPipeline() async throws {
        let store = CountingSaveStore()
        let first = sqlLikeText(600_000, seed: 31) + deterministicBytes(300_000, seed: 32)
        let second = deterministicBytes(400_000, seed: 33)
        var o = try options()
        o.concurrency = 2
        let result = try await Archiver(store: store, options: o).backup(streams: [
            StreamSpec(path: "/db/one.dump", producer: BytesProducer(bytes: first)),
            StreamSpec(path: "/db/two.dump", producer: BytesProducer(bytes: second)),
        ])
        #expect(store.maxConcurrent > 1, "chunks of a stream are saved by concurrent tasks")
        #expect(store.maxConcurrent <= 4, "at most 2 × concurrency chunks in flight")
        let one = try #require(try await store.lookup(path: [Array("db".utf8), Array("one.dump".utf8)], root: result.info.tree))
        let two = try #require(try await store.lookup(path: [Array("db".utf8), Array("two.dump".utf8)], root: result.info.tree))
        #expect(one.content == (try Self.chunkIDs(first, store)))
        #expect(two.content == (try Self.chunkIDs(second, store)))
        #expect(one.size == UInt64(first.count) && two.size == UInt64(second.count))
        let summary = result.info.summary
        #expect(summary.filesNew == 2 && summary.totalFilesProcessed == 2 && summary.dirsNew == 1)
        #expect(summary.totalBytesProcessed == Int64(first.count + second.count))
        #expect(summary.dataBlobs == Set(one.content + two.content).count)
        #expect(result.info.paths == ["/db"])
        var joined: [UInt8] = []
        for id in one.content { joined += try await store.inner.load(.data, id) }
        #expect(joined == first)
    }

    @Test("a failing stream fails the multi-stream backup after the pipeline drained; no snapshot info comes back")
    func failingStreamFailsTheBackup() async throws {
        let store = CountingSaveStore()
        await #expect(throws: TreeError.self) {
            _ = try await Archiver(store: store, options: try options()).backup(streams: [
                StreamSpec(path: "/a", producer: BytesProducer(bytes: sqlLikeText(200_000, seed: 4))),
                StreamSpec(path: "/b", producer: BytesProducer(bytes: sqlLikeText(200_000, seed: 5), fails: true)),
            ])
        }
    }

    @Test("the chunk slots bound the chunks in flight over all files read at once, not per file")
    func chunkSlotsAreSharedByFiles() async throws {
        let dir = TemporaryDirectory()
        for i in 0..<4 { writeFile(deterministicBytes(300_000, seed: 40 + UInt64(i)), dir.p("src/f\(i).bin")) }
        let store = CountingSaveStore()
        var o = try options()
        o.concurrency = 2  // two files at once, each could otherwise have 4 chunks in flight
        let result = try await Archiver(store: store, options: o).backup(paths: [dir.p("src")])
        #expect(store.maxConcurrent > 1)
        #expect(store.maxConcurrent <= 4, "2 × concurrency chunk slots in all: \(store.maxConcurrent)")
        for i in 0..<4 {
            let node = try #require(try await store.lookup(path: pathComponents(dir.p("src/f\(i).bin")), root: result.info.tree))
            #expect(node.content == (try Self.chunkIDs(deterministicBytes(300_000, seed: 40 + UInt64(i)), store)))
        }
    }

    @Test("--stdin-from-command: the command gets descriptors 0-2 only, none of this process's")
    func commandGetsOnlyStandardDescriptors() async throws {
        let fd = open("/dev/null", O_RDONLY)  // inheritable (no O_CLOEXEC)
        #expect(fd > 2)
        defer { close(fd) }
        let store = MemoryBlobStore()
        let script = "if [ -e /proc/self/fd/\(fd) ]; then echo leaked; else echo closed; fi"
        let result = try await Archiver(store: store, options: try options()).backup(command: ["/bin/sh", "-c", script], name: "out")
        let node = try #require(try await store.lookup(path: [Array("out".utf8)], root: result.info.tree))
        var joined: [UInt8] = []
        for id in node.content { joined += try await store.load(.data, id) }
        #expect(String(decoding: joined, as: UTF8.self) == "closed\n")
        #expect(result.info.paths == ["/out"])
        #expect(node.mode == 0o600 && node.kind == .file)
    }
}

@Suite struct PackSizing {
    @Test("a pack's plaintext (blobs and trailer) never exceeds the pack size, except a pack of one larger blob")
    func packsStayWithinThePackSize() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let packSize = 64 << 10
        repo.packSize = packSize
        var rng = SystemRandomNumberGenerator()
        var blobs: [(BlobID, [UInt8])] = []
        for i in 0..<120 {
            let size = i == 61 ? 100_000 : Int.random(in: 1...9_000, using: &rng)
            let bytes = i % 3 == 0 ? sqlLikeText(size, seed: UInt64(i)) : deterministicBytes(size, seed: UInt64(1000 + i))
            blobs.append((try await saveBlob(repo, bytes), bytes))
            // Blobs load back whatever their pack is doing (open, sealing, being stored, stored).
            if i >= 3 {
                let (id, expected) = blobs[i - 3]
                #expect(try await repo.load(.data, id) == expected)
            }
        }
        try await repo.flush()
        let reopened = try await t.open()
        var byPack: [UInt32: [BlobLocation]] = [:]
        for (_, location) in reopened.index.entries { byPack[location.pack, default: []].append(location) }
        #expect(byPack.count >= 5, "~540 KB of blobs in 64 KiB packs")
        var oversized = 0
        for (_, blobs) in byPack {
            let end = blobs.map { Int($0.offset + $0.length) }.max()!
            let plaintext = end + blobs.count * PackedBlob.encodedSize + 8
            if blobs.count == 1 && plaintext > packSize { oversized += 1; continue }
            #expect(plaintext <= packSize, "a pack of \(blobs.count) blobs holds \(plaintext) bytes")
        }
        #expect(oversized == 1, "the 100,000-byte random blob has a pack of its own")
        for (id, bytes) in blobs { #expect(try await reopened.load(.data, id) == bytes) }
        #expect(try await reopened.check(readData: .all).ok)
    }

    @Test("the default pack size is 4 MiB and a new repository records it")
    func defaultPackSize() async throws {
        #expect(RepositoryConfig.defaultPackSize == 4 << 20)
        let repo = try await TestRepository().create(packSize: RepositoryConfig.defaultPackSize)
        #expect(repo.config.packSize == 4 << 20 && repo.packSize == 4 << 20)
        #expect(Repository.CreateOptions().packSize == 4 << 20)
    }
}
