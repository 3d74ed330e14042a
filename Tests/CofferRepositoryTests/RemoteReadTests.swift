import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// A storage that says it is remote (as S3 does) and records every request in the order it
/// started, with when it ended; `delay` holds back the loads of the objects it names.
final class RecordingStorage: Storage, @unchecked Sendable {
    struct Event: Sendable { let what: String; let range: Range<Int64>?; let started: Int; var ended: Int? }
    let inner: any Storage
    let delay: @Sendable (ObjectName) -> Duration?
    private let lock = NSLock()
    private var clock = 0
    private var recorded: [Event] = []
    init(_ inner: any Storage, delay: @escaping @Sendable (ObjectName) -> Duration? = { _ in nil }) {
        self.inner = inner
        self.delay = delay
    }

    var properties: StorageProperties {
        StorageProperties(connections: 8, hasAtomicReplace: inner.properties.hasAtomicReplace, remote: true)
    }
    var events: [Event] { lock.withLock { recorded } }
    func reset() { lock.withLock { recorded = [] } }

    private func begin(_ what: String, _ range: Range<Int64>? = nil) -> Int {
        lock.withLock {
            clock += 1
            recorded.append(Event(what: what, range: range, started: clock))
            return recorded.count - 1
        }
    }
    private func end(_ i: Int) { lock.withLock { clock += 1; recorded[i].ended = clock } }

    func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        try await inner.save(name, contents: contents, overwrite: overwrite)
    }
    func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] {
        let i = begin("load \(name)", range)
        defer { end(i) }
        if let pause = delay(name) { try await Task.sleep(for: pause) }
        return try await inner.load(name, range: range)
    }
    func stat(_ name: ObjectName) async throws -> ObjectInfo {
        let i = begin("stat \(name)")
        defer { end(i) }
        return try await inner.stat(name)
    }
    func remove(_ name: ObjectName) async throws { try await inner.remove(name) }
    func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> {
        let i = begin("list \(kind)")
        end(i)
        return inner.list(kind, batchSize: batchSize)
    }
}

/// Remote storage costs a round trip per request: opening a repository and walking its trees
/// there take as few requests, one after the other, as they can (docs/REPOSITORY.md, "Reading
/// from remote storage").
@Suite struct RemoteReadTests {
    /// A file at the bottom of `depth` nested directories d0/d1/…; returns the root tree and the content.
    func nested(_ repo: Repository, depth: Int) async throws -> (root: BlobID, content: [UInt8]) {
        let content = deterministicBytes(100_000, seed: 77)
        let blob = try await saveBlob(repo, content)
        var tree = try Tree(nodes: [TreeNode(name: Array("f".utf8), kind: .file, mode: 0o640, size: UInt64(content.count), content: [blob])])
        var id = try await repo.saveTree(tree).id
        for level in stride(from: depth - 1, through: 0, by: -1) {
            tree = try Tree(nodes: [TreeNode(name: Array("d\(level)".utf8), kind: .directory, mode: 0o750, subtree: id)])
            id = try await repo.saveTree(tree).id
        }
        try await repo.flush()
        return (id, content)
    }

    func path(depth: Int) -> String { (0..<depth).map { "d\($0)" }.joined(separator: "/") + "/f" }

    @Test func treePacksAreReadWholeOnceOnRemoteStorage() async throws {
        let t = TestRepository()
        let (root, content) = try await nested(try await t.create(), depth: 6)
        let remote = RecordingStorage(try LocalStorage(path: t.path))
        let repo = try await Repository.open(storage: remote, identities: KeyObjectIdentities(identities: [t.key]))
        let treePack = try #require(repo.placement(.tree, root)?.pack)
        remote.reset()
        let dir = TemporaryDirectory()
        _ = try await Restorer(store: repo).restore(root: root, target: dir.p("out"))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: dir.p("out/" + path(depth: 6))))) == content)
        let treeLoads = remote.events.filter { $0.what == "load data/\(treePack)" }
        // Seven trees in six levels: one read of the whole pack (it was 7, one per level, before).
        #expect(treeLoads.count == 1)
        #expect(treeLoads.first?.range == nil)

        // A second walk of the same trees reads nothing more.
        remote.reset()
        _ = try await Restorer(store: repo).restore(root: root, target: dir.p("again"))
        #expect(remote.events.filter { $0.what == "load data/\(treePack)" }.isEmpty)
    }

    @Test func localStorageKeepsRangedTreeReads() async throws {
        let t = TestRepository()
        let (root, _) = try await nested(try await t.create(), depth: 3)
        let counting = CountingStorage(try LocalStorage(path: t.path))
        let repo = try await Repository.open(storage: counting, identities: KeyObjectIdentities(identities: [t.key]))
        let treePack = try #require(repo.placement(.tree, root)?.pack)
        counting.reset()
        let loaded = await repo.loadBatch(.tree, [root], reads: RangeReads())
        #expect(try loaded[root]?.get() != nil)
        // Not remote: no cache, the tree is read with a ranged read (header and range together).
        #expect(counting.dataLoads.filter { $0.name == treePack }.allSatisfy { $0.range != nil })
        #expect(repo.treePackCache.isEmpty)
    }

    @Test func damagedTreePackIsNamedOnRemoteStorage() async throws {
        let t = TestRepository()
        let (root, _) = try await nested(try await t.create(), depth: 2)
        let treePack = try #require(try await t.open().placement(.tree, root)?.pack)
        let file = try #require(t.files(.data).first { $0.hasSuffix(treePack) })
        try flipByte(file, at: -40)
        let repo = try await Repository.open(storage: RecordingStorage(try LocalStorage(path: t.path)),
                                             identities: KeyObjectIdentities(identities: [t.key]))
        let loaded = await repo.loadBatch(.tree, [root], reads: RangeReads())
        let result = try #require(loaded[root])
        #expect(throws: RepositoryError.self) { try result.get() }
        if case .failure(let error) = result { #expect("\(error)".contains(String(treePack.prefix(8)))) }
        #expect(repo.treePackCache.isEmpty)
    }

    @Test func openStartsKeylessRequestsBeforeTheKeyObjectIsRead() async throws {
        let t = TestRepository()
        _ = try await nested(try await t.create(), depth: 1)
        // The key object answers late: the config and the index listing must not wait for it.
        let remote = RecordingStorage(try LocalStorage(path: t.path)) { name in
            name.kind == .keys && Repository.isKeyObjectName(name.name) ? .milliseconds(300) : nil
        }
        let repo = try await Repository.open(storage: remote, identities: KeyObjectIdentities(identities: [t.key]))
        #expect(repo.indexedBlobCount == 3)
        let events = remote.events
        #expect(events.filter { $0.what == "list keys" }.count == 1)
        let keyLoad = try #require(events.first { $0.what.hasPrefix("load keys/") && !$0.what.contains("data-") })
        let keyLoadEnd = try #require(keyLoad.ended)
        for what in ["load config/config", "list index"] {
            let event = try #require(events.first { $0.what == what }, "\(what) was not requested")
            #expect(event.started < keyLoadEnd, "\(what) waited for the key object")
        }
        // The data keys and the index objects load after the key object (they need its secrets).
        for event in events where event.what.hasPrefix("load keys/data-") || event.what.hasPrefix("load index/") {
            #expect(event.started > keyLoadEnd)
        }
    }

    @Test func openWithoutKeyObjectsStillSaysWhatIsMissing() async throws {
        let dir = TemporaryDirectory()
        let storage = RecordingStorage(try LocalStorage.create(path: dir.file("empty")))
        await #expect(throws: RepositoryError.self) {
            _ = try await Repository.open(storage: storage, identities: KeyObjectIdentities(identities: [SymmetricKeyFile.generate()]))
        }
        do {
            _ = try await Repository.open(storage: storage, identities: KeyObjectIdentities(identities: [SymmetricKeyFile.generate()]))
        } catch {
            #expect("\(error)".contains("no repository there"))
        }
    }
}
