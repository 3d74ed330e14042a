import CofferFormat
import CofferKeys
import Crypto
@testable import CofferRepository
import Foundation
import Testing

/// Sealing a pack in its own buffer and the pool of pack buffers (docs/PERFORMANCE.md, "Memory").
@Suite struct PackMemory {
    static let name = "data/" + String(repeating: "ab", count: 32)

    /// The object sealed the plain way (a second buffer, chunk after chunk), from the same plan:
    /// the in-place sealer must produce these bytes exactly.
    static func referenceSeal(_ plaintext: [UInt8], _ plan: CofferObject.SealPlan) throws -> [UInt8] {
        var out = plan.prefix
        for k in 0..<plan.chunkCount {
            let start = k * plan.chunkSize, end = min(plaintext.count, start + plan.chunkSize)
            let box = try AES.GCM.seal(plaintext[start..<end], using: plan.payloadKey,
                                       nonce: AES.GCM.Nonce(data: PayloadCipher.chunkNonce(counter: UInt64(k), isFinal: k == plan.chunkCount - 1)))
            out += box.ciphertext
            out += box.tag
        }
        return out
    }

    static func open(_ sealed: [UInt8], fileKey: FileKey, object: String = name) throws -> [UInt8] {
        let parsed = try CofferObject.parseHeader(sealed, object: object)
        return try CofferObject.decryptAll(sealed, CofferObject.open(parsed, fileKey: fileKey, object: object))
    }

    static let sizes = [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 1_000_003, (4 << 20) - 100]

    @Test("sealing in place gives the bytes of a two-buffer sealer and decrypts back; a large enough buffer is not reallocated",
          arguments: sizes)
    func inPlaceMatchesReference(size: Int) throws {
        let plaintext = size % 2 == 0 ? deterministicBytes(size, seed: UInt64(size)) : sqlLikeText(size, seed: UInt64(size))
        let fileKey = FileKey.random()
        let stanzas = try SymmetricObjectKey(randomBytes()).stanzas(for: fileKey)
        for chunkSize in [CofferObject.packChunkSize, 4096] {
            let plan = try CofferObject.SealPlan(plaintextCount: size, objectName: Self.name, fileKey: fileKey, stanzas: stanzas,
                                                 chunkSize: chunkSize)
            var buffer: [UInt8] = []
            buffer.reserveCapacity(plan.sealedCount)
            buffer += plaintext
            let before = buffer.withUnsafeBytes { $0.baseAddress }
            try CofferObject.sealInPlace(&buffer, plan)
            #expect(buffer.withUnsafeBytes { $0.baseAddress } == before, "sealed in the buffer it was given")
            #expect(buffer.count == plan.sealedCount)
            #expect(buffer == (try Self.referenceSeal(plaintext, plan)), "size \(size), chunk \(chunkSize)")
            #expect(try Self.open(buffer, fileKey: fileKey) == plaintext)
        }
    }

    @Test("the pack buffer's room covers a data pack's header and tags: a full default pack seals without reallocating")
    func packRoomIsEnough() async throws {
        let repo = try await TestRepository().create(packSize: RepositoryConfig.defaultPackSize)
        let fileKey = FileKey.random()
        let size = RepositoryConfig.defaultPackSize
        let plan = try CofferObject.SealPlan(plaintextCount: size, objectName: Self.name, fileKey: fileKey,
                                             stanzas: try repo.currentDataPublicKey.stanzas(for: fileKey), chunkSize: CofferObject.packChunkSize)
        #expect(plan.sealedCount <= Repository.packBufferCapacity(plaintext: size))
        #expect(plan.prefix.count < 16 << 10)
    }

    @Test("an object sealed in place is refused when a byte is flipped, when cut short, and under another key or name")
    func tamperedTruncatedWrongKey() throws {
        let plaintext = sqlLikeText(200_000, seed: 9)
        let fileKey = FileKey.random()
        let stanzas = try SymmetricObjectKey(randomBytes()).stanzas(for: fileKey)
        let plan = try CofferObject.SealPlan(plaintextCount: plaintext.count, objectName: Self.name, fileKey: fileKey, stanzas: stanzas,
                                             chunkSize: CofferObject.packChunkSize)
        var sealed = plaintext
        try CofferObject.sealInPlace(&sealed, plan)
        #expect(try Self.open(sealed, fileKey: fileKey) == plaintext)
        for offset in [plan.prefix.count, plan.prefix.count + 70_000, sealed.count - 1] {
            var flipped = sealed
            flipped[offset] ^= 0x01
            #expect(throws: RepositoryError.self) { _ = try Self.open(flipped, fileKey: fileKey) }
        }
        #expect(throws: RepositoryError.self) { _ = try Self.open(Array(sealed.dropLast(16)), fileKey: fileKey) }
        #expect(throws: RepositoryError.self) { _ = try Self.open(Array(sealed.prefix(plan.prefix.count + 65_552)), fileKey: fileKey) }
        #expect(throws: RepositoryError.self) { _ = try Self.open(sealed, fileKey: FileKey.random()) }
        #expect(throws: RepositoryError.self) {
            _ = try Self.open(sealed, fileKey: fileKey, object: "data/" + String(repeating: "cd", count: 32))
        }
    }

    @Test("a signed object sealed in place verifies with its signer; a flipped payload byte breaks the signature")
    func signedInPlace() throws {
        let plaintext = sqlLikeText(150_000, seed: 3)
        let signer = Ed25519Signer()
        let fileKey = FileKey.random()
        let sealed = try CofferObject.seal(plaintext, objectName: "snapshots/x", fileKey: fileKey,
                                           stanzas: try SymmetricObjectKey(randomBytes()).stanzas(for: fileKey), signer: signer)
        let parsed = try CofferObject.parseHeader(sealed, object: "snapshots/x")
        let (trailer, payload, parameters) = try #require(try CofferObject.signature(of: sealed, parsed, object: "snapshots/x"))
        _ = try trailer.verify(payload, parameters: parameters, verifiers: [signer.publicVerifier])
        #expect(try CofferObject.decryptAll(sealed, CofferObject.open(parsed, fileKey: fileKey, object: "snapshots/x")) == plaintext)
        var flipped = sealed
        flipped[parsed.payloadStart + 10] ^= 0x80
        let (t2, p2, pa2) = try #require(try CofferObject.signature(of: flipped, parsed, object: "snapshots/x"))
        #expect(throws: (any Error).self) { _ = try t2.verify(p2, parameters: pa2, verifiers: [signer.publicVerifier]) }
    }

    @Test("the buffer pool hands a buffer back out once it is given back, never while it is taken, and keeps at most `keep`")
    func poolReusesAndNeverShares() {
        let pool = BufferPool(keep: 2)
        var a = pool.take(capacity: 1 << 20)
        var b = pool.take(capacity: 1 << 20)
        #expect(a.capacity >= 1 << 20 && b.capacity >= 1 << 20)
        let addressA = a.withUnsafeBytes { $0.baseAddress }, addressB = b.withUnsafeBytes { $0.baseAddress }
        #expect(addressA != addressB, "two takes, two buffers")
        a += [1, 2, 3]
        pool.give(&a)
        #expect(a.isEmpty && a.capacity == 0, "the giver keeps nothing")
        var c = pool.take(capacity: 1 << 20)
        #expect(c.isEmpty, "a buffer comes back empty")
        #expect(c.withUnsafeBytes { $0.baseAddress } == addressA, "and is the one given back")
        #expect(pool.allocated == 2 && pool.reuses == 1)
        // A buffer whose bytes someone else still holds is not shared: the holder keeps its bytes.
        c += [9, 9, 9]
        let held = c
        pool.give(&c)
        var d = pool.take(capacity: 1 << 20)
        d += [7]
        #expect(held == [9, 9, 9])
        #expect(d == [7])
        // Too small for the request: not handed out.
        var small = pool.take(capacity: 10)
        small.reserveCapacity(10)
        pool.give(&small)
        let big = pool.take(capacity: 2 << 20)
        #expect(big.capacity >= 2 << 20)
        // Kept: at most 2.
        var e = pool.take(capacity: 1), f = pool.take(capacity: 1), g = pool.take(capacity: 1)
        e.reserveCapacity(1); f.reserveCapacity(1); g.reserveCapacity(1)
        pool.give(&b); pool.give(&d); pool.give(&e); pool.give(&f); pool.give(&g)
        #expect(pool.available == 2)
    }

    @Test("a backup's packs reuse the same few buffers: open pack plus packs in flight")
    func packsReuseBuffers() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        repo.packSize = 64 << 10
        var saved: [(BlobID, [UInt8])] = []
        for i in 0..<200 {
            let bytes = deterministicBytes(8_000 + i, seed: UInt64(500 + i))
            saved.append((try await saveBlob(repo, bytes), bytes))
        }
        try await repo.flush()
        #expect(t.files(.data).count >= 20)
        #expect(repo.packBuffers.allocated <= Repository.maxPacksInFlight + 2, "buffers allocated: \(repo.packBuffers.allocated)")
        #expect(repo.packBuffers.reuses >= 15)
        #expect(repo.packBuffers.available <= Repository.maxPacksInFlight + 1)
        #expect(repo.uploading.isEmpty)
        let reopened = try await t.open()
        for (id, bytes) in saved { #expect(try await reopened.load(.data, id) == bytes) }
        #expect(try await reopened.check(readData: .all).ok)
    }

    @Test("when storing packs fails, the backup fails, every pack buffer goes back to the pool and no pack is left half-open")
    func buffersReturnOnFailure() async throws {
        let t = TestRepository()
        _ = try await t.create()
        let failing = FailingDataStorage(try LocalStorage(path: t.path), failAfter: 3)
        let repo = try await Repository.open(storage: failing, identities: KeyObjectIdentities(identities: [t.key]))
        repo.packSize = 64 << 10
        await #expect(throws: (any Error).self) {
            for i in 0..<100 { _ = try await saveBlob(repo, deterministicBytes(9_000, seed: UInt64(900 + i))) }
            try await repo.flush()
        }
        // Packs still running when the first failure surfaced: wait for them through flush.
        try? await repo.flush()
        #expect(repo.uploading.isEmpty)
        #expect(repo.packBuffers.available == min(repo.packBuffers.allocated, Repository.maxPacksInFlight + 1),
                "allocated \(repo.packBuffers.allocated), back \(repo.packBuffers.available)")
        #expect(failing.failures > 0)
    }

    @Test("a backup cancelled while packs are stored returns their buffers")
    func buffersReturnOnCancel() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        repo.packSize = 64 << 10
        let task = Task {
            for i in 0..<10_000 {
                try Task.checkCancellation()
                _ = try await saveBlob(repo, deterministicBytes(9_000, seed: UInt64(i)))
            }
        }
        try await Task.sleep(nanoseconds: 50_000_000)
        task.cancel()
        _ = await task.result
        try? await repo.flush()
        #expect(repo.uploading.isEmpty)
        #expect(repo.packBuffers.available == min(repo.packBuffers.allocated, Repository.maxPacksInFlight + 1))
    }
}

/// A storage whose saves of data packs fail after the first `failAfter`.
final class FailingDataStorage: Storage, @unchecked Sendable {
    let inner: any Storage
    private let lock = NSLock()
    private var saves = 0
    private var failed = 0
    let failAfter: Int
    init(_ inner: any Storage, failAfter: Int) { self.inner = inner; self.failAfter = failAfter }
    var failures: Int { lock.withLock { failed } }

    var properties: StorageProperties { inner.properties }
    func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        if name.kind == .data {
            let fail = lock.withLock { saves += 1; if saves > failAfter { failed += 1; return true }; return false }
            if fail { throw StorageError.io(operation: "write", target: name.description, errno: 5, reason: "injected failure") }
        }
        try await inner.save(name, contents: contents, overwrite: overwrite)
    }
    func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] { try await inner.load(name, range: range) }
    func stat(_ name: ObjectName) async throws -> ObjectInfo { try await inner.stat(name) }
    func remove(_ name: ObjectName) async throws { try await inner.remove(name) }
    func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> { inner.list(kind, batchSize: batchSize) }
}

@Suite("Tree packs") struct TreePackTests {
    @Test("tree blobs and data blobs never share a pack: a restore's plan reads only tree packs, its content pass only data packs")
    func treesHavePacksOfTheirOwn() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        repo.packSize = 64 << 10
        func data(_ i: Int) -> [UInt8] { deterministicBytes(9_000, seed: UInt64(i)) }
        func tree(_ i: Int) -> [UInt8] { deterministicBytes(700, seed: UInt64(100 + i)) }
        func id(_ bytes: [UInt8]) -> BlobID { bytes.withUnsafeBytes { repo.blobID(of: $0) } }
        for i in 0..<40 {
            _ = try await repo.save(.data, id: id(data(i)), plaintext: data(i))
            _ = try await repo.save(.tree, id: id(tree(i)), plaintext: tree(i))
        }
        try await repo.flush()
        let reopened = try await t.open()
        var kinds: [String: Set<BlobKind>] = [:]
        for i in 0..<40 {
            for (kind, bytes) in [(BlobKind.data, data(i)), (.tree, tree(i))] {
                let hit = try #require(reopened.index.lookup(kind, id(bytes)))
                kinds[hit.pack, default: []].insert(kind)
            }
        }
        #expect(kinds.count >= 5, "several data packs and a tree pack: \(kinds.count)")
        #expect(kinds.values.allSatisfy { $0.count == 1 }, "a pack holds one kind of blob")
        #expect(kinds.values.filter { $0 == [.tree] }.count == 1, "the 28 KB of trees fit one pack")
        // Every blob reads back through its own pack.
        for i in 0..<40 {
            #expect(try await reopened.load(.tree, id(tree(i))) == tree(i))
            #expect(try await reopened.load(.data, id(data(i))) == data(i))
        }
    }
}
