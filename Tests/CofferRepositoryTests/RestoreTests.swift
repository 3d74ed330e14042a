import CofferFormat
@testable import CofferRepository
import Foundation
import Testing

/// Every path below `root` (relative, bytes), listed with readdir so non-UTF-8 names survive.
func byteSubpaths(_ root: [UInt8]) -> [[UInt8]] {
    var out: [[UInt8]] = []
    func walk(_ relative: [UInt8]) {
        let full = relative.isEmpty ? root : root + [0x2f] + relative
        guard let dir = withBytePath(full, { opendir($0) }) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.prefix(strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)))
            }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            let child = relative.isEmpty ? name : relative + [0x2f] + name
            out.append(child)
            if entry.pointee.d_type == UInt8(DT_DIR) { walk(child) }
        }
    }
    walk([])
    return out.sorted { $0.lexicographicallyPrecedes($1) }
}

func readBytePath(_ path: [UInt8]) -> [UInt8]? {
    let fd = withBytePath(path) { open($0, O_RDONLY) }
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        out += buffer[..<n]
    }
    return out
}

/// Compares two directory trees: names, kinds, content, permission bits, mtimes, link targets.
func compareTrees(_ a: String, _ b: String) -> [String] {
    var problems: [String] = []
    let left = byteSubpaths(Array(a.utf8)), right = byteSubpaths(Array(b.utf8))
    if left != right { problems.append("entries differ: \(left.map { TreeNode.display($0) }) vs \(right.map { TreeNode.display($0) })") }
    for p in Set(left).intersection(right) {
        let pa = Array(a.utf8) + [0x2f] + p, pb = Array(b.utf8) + [0x2f] + p
        var x = stat(), y = stat()
        guard withBytePath(pa, { lstat($0, &x) }) == 0, withBytePath(pb, { lstat($0, &y) }) == 0 else {
            problems.append("stat \(TreeNode.display(p))"); continue
        }
        let shown = TreeNode.display(p)
        if x.st_mode != y.st_mode { problems.append("mode \(shown): \(String(x.st_mode, radix: 8)) vs \(String(y.st_mode, radix: 8))") }
        switch x.st_mode & S_IFMT {
        case S_IFREG:
            if readBytePath(pa) != readBytePath(pb) { problems.append("content \(shown)") }
            if x.st_mtim.tv_sec != y.st_mtim.tv_sec || x.st_mtim.tv_nsec != y.st_mtim.tv_nsec { problems.append("mtime \(shown)") }
        case S_IFLNK:
            var ta = [CChar](repeating: 0, count: 4097), tb = [CChar](repeating: 0, count: 4097)
            let na = withBytePath(pa) { readlink($0, &ta, 4096) }, nb = withBytePath(pb) { readlink($0, &tb, 4096) }
            if na != nb || ta != tb { problems.append("link \(shown)") }
        default:
            if x.st_mtim.tv_sec != y.st_mtim.tv_sec { problems.append("dir mtime \(shown)") }
        }
    }
    return problems
}

@Suite struct RestoreTests {
    func backup(_ dir: TemporaryDirectory, _ store: MemoryBlobStore) async throws -> (SnapshotInfo, [[UInt8]]) {
        makeSampleTree(dir.p("src"))
        let result = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")])
        return (result.info, pathComponents(dir.p("src")))
    }

    @Test func fullRestoreReproducesTheTree() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (info, src) = try await backup(dir, store)
        let result = try await Restorer(store: store).restore(root: info.tree, target: dir.p("out"))
        #expect(result.files == 8)
        #expect(result.symlinks == 1)
        let restored = dir.p("out") + "/" + src.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
        #expect(compareTrees(dir.p("src"), restored) == [])
        // Non-UTF-8 name restored byte for byte.
        let odd: [UInt8] = Array("\(restored)/".utf8) + [0x6f, 0xff, 0xfe, 0x2e, 0x62]
        #expect(withBytePath(odd) { p in access(p, F_OK) } == 0)
        // No temporary names left behind.
        let leftovers = byteSubpaths(Array(dir.p("out").utf8)).filter { TreeNode.display($0).contains(".coffer-restore-") }
        #expect(leftovers.isEmpty)
    }

    @Test func setuidBitsAreNotRestored() async throws {
        let dir = TemporaryDirectory()
        writeFile([1, 2, 3], dir.p("src/s"), mode: 0o4755)
        let store = MemoryBlobStore()
        let info = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")]).info
        var o = RestoreOptions(); o.restoreOwnership = false
        let result = try await Restorer(store: store, options: o).restore(root: info.tree, target: dir.p("out"))
        #expect(result.droppedSpecialBits == 1)
        #expect(lstatOf(dir.p("out") + dir.p("src/s"))!.st_mode & 0o7777 == 0o755)
    }

    @Test func includeRestoresOneFileAndReadsOnlyItsBlobs() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (info, _) = try await backup(dir, store)
        store.resetLoads()
        var o = RestoreOptions()
        o.includes = [try PathPattern(dir.p("src/sub/deeper/dump.sql"))]
        let result = try await Restorer(store: store, options: o).restore(root: info.tree, target: dir.p("one"))
        #expect(result.files == 1)
        #expect(readBytes(dir.p("one") + dir.p("src/sub/deeper/dump.sql")) == sqlLikeText(50_000))
        #expect(lstatOf(dir.p("one") + dir.p("src/a.txt")) == nil)
        let dump = try #require(try await store.lookup(path: pathComponents(dir.p("src/sub/deeper/dump.sql")), root: info.tree))
        let bigNode = try #require(try await store.lookup(path: pathComponents(dir.p("src/sub/big.bin")), root: info.tree))
        store.resetLoads()
        _ = try await Restorer(store: store, options: o).restore(root: info.tree, target: dir.p("two"))
        let loaded = Set(store.loads)
        #expect(Set(dump.content).isSubset(of: loaded))
        #expect(Set(bigNode.content).isDisjoint(with: loaded))
    }

    @Test func includeOfASubtree() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (info, _) = try await backup(dir, store)
        var o = RestoreOptions()
        o.includes = [try PathPattern(dir.p("src/sub"))]
        let result = try await Restorer(store: store, options: o).restore(root: info.tree, target: dir.p("out"))
        #expect(result.files == 3)
        #expect(compareTrees(dir.p("src/sub"), dir.p("out") + dir.p("src/sub")) == [])
        #expect(lstatOf(dir.p("out") + dir.p("src/tiny")) == nil)
        // A name pattern.
        o.includes = [try PathPattern("*.sql")]
        let named = try await Restorer(store: store, options: o).restore(root: info.tree, target: dir.p("named"))
        #expect(named.files == 1)
    }

    @Test func dumpWritesOneFile() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (info, _) = try await backup(dir, store)
        let fd = open(dir.p("dumped"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let n = try await Restorer(store: store).dump(root: info.tree, path: pathComponents(dir.p("src/sub/big.bin")), to: fd)
        close(fd)
        #expect(n == 100_000)
        #expect(readBytes(dir.p("dumped")) == deterministicBytes(100_000, seed: 3))
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).dump(root: info.tree, path: pathComponents(dir.p("src/sub")), to: 1)
        }
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).dump(root: info.tree, path: pathComponents(dir.p("src/nope")), to: 1)
        }
    }

    /// Chunks are loaded concurrently and finish out of order (random delays): the file must
    /// still be written in order, by restore and by dump.
    @Test func chunksLoadedOutOfOrderAreWrittenInOrder() async throws {
        let dir = TemporaryDirectory()
        let input = sqlLikeText(200_000, seed: 31) + deterministicBytes(150_000, seed: 32)
        writeFile(input, dir.p("src/f.bin"))
        let inner = MemoryBlobStore()
        let info = try await Archiver(store: inner, options: try options()).backup(paths: [dir.p("src")]).info
        let store = ShufflingStore(inner)
        var restoreOptions = RestoreOptions()
        restoreOptions.concurrency = 4
        _ = try await Restorer(store: store, options: restoreOptions).restore(root: info.tree, target: dir.p("out"))
        #expect(readBytes(dir.p("out") + dir.p("src/f.bin")) == input)
        let fd = open(dir.p("dumped"), O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let n = try await Restorer(store: store, options: restoreOptions).dump(root: info.tree, path: pathComponents(dir.p("src/f.bin")), to: fd)
        close(fd)
        #expect(n == UInt64(input.count))
        #expect(readBytes(dir.p("dumped")) == input)
        #expect(store.maxConcurrent > 1)
    }

    // MARK: Malicious trees

    func forge(_ store: MemoryBlobStore, _ entries: [([UInt8], UInt8)]) -> BlobID {
        store.putRaw(.tree, TreeTests.encodeRaw(entries))
    }

    @Test func dotDotAndSlashNamesAreRefused() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        for name in ["..", "a/../../x", "/etc", "."] {
            let root = forge(store, [(Array(name.utf8), 1)])
            await #expect(throws: TreeError.self) {
                _ = try await Restorer(store: store).restore(root: root, target: dir.p("out"))
            }
        }
        // Refused while reading the tree, before anything is written.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("")).isEmpty)
    }

    @Test func symlinkThenDirectoryOfTheSameNameIsRefused() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let root = forge(store, [(Array("x".utf8), 3), (Array("x".utf8), 2)])
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).restore(root: root, target: dir.p("out"))
        }
    }

    @Test func symlinkInTheTargetIsNotFollowed() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        // The snapshot: directory "x" holding file "f".
        let data = Array("payload".utf8)
        let dataID = store.idKey.id(of: data)
        _ = try await store.save(.data, id: dataID, plaintext: data)
        let inner = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("f".utf8), kind: .file, size: 7, content: [dataID])]))
        let root = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("x".utf8), kind: .directory, subtree: inner.id)]))
        // The target already holds "x" -> a directory outside it.
        try FileManager.default.createDirectory(atPath: dir.p("outside"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir.p("out"), withIntermediateDirectories: true)
        symlink(dir.p("outside"), dir.p("out/x"))
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).restore(root: root.id, target: dir.p("out"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("outside")).isEmpty)
        // A symbolic link in place of a file is replaced, never written through.
        let fileRoot = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("f".utf8), kind: .file, size: 7, content: [dataID])]))
        writeFile(Array("keep".utf8), dir.p("outside/victim"))
        try FileManager.default.createDirectory(atPath: dir.p("out2"), withIntermediateDirectories: true)
        symlink(dir.p("outside/victim"), dir.p("out2/f"))
        _ = try await Restorer(store: store).restore(root: fileRoot.id, target: dir.p("out2"))
        #expect(readBytes(dir.p("outside/victim")) == Array("keep".utf8))
        #expect(readBytes(dir.p("out2/f")) == data)
        #expect(lstatOf(dir.p("out2/f"))!.st_mode & S_IFMT == S_IFREG)
    }

    @Test func sizeMismatchLeavesNoFile() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let data = Array("payload".utf8)
        let dataID = store.idKey.id(of: data)
        _ = try await store.save(.data, id: dataID, plaintext: data)
        let root = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("f".utf8), kind: .file, size: 70, content: [dataID])]))
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).restore(root: root.id, target: dir.p("out"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("out")).isEmpty)
    }

    @Test func diffReportsChanges() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (first, _) = try await backup(dir, store)
        writeFile(Array("changed!".utf8), dir.p("src/a.txt"))
        unlink(dir.p("src/tiny"))
        writeFile([1], dir.p("src/sub/added"))
        let second = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")]).info
        let changes = try await TreeWalk.diff(store: store, from: first.tree, to: second.tree)
        let shown = Dictionary(changes.map { (TreeNode.display($0.path), $0.change) }, uniquingKeysWith: { a, _ in a })
        #expect(shown[dir.p("src/a.txt")] == .modified)
        #expect(shown[dir.p("src/tiny")] == .removed)
        #expect(shown[dir.p("src/sub/added")] == .added)
        #expect(shown[dir.p("src/sub/big.bin")] == nil)
    }
}

/// A store whose data loads take a random 0–3 ms, so concurrent loads complete out of order; counts
/// how many ran at once.
final class ShufflingStore: BlobStore, @unchecked Sendable {
    let inner: MemoryBlobStore
    private let lock = NSLock()
    private var running = 0
    private var peak = 0
    init(_ inner: MemoryBlobStore) { self.inner = inner }
    var maxConcurrent: Int { lock.withLock { peak } }
    func blobID(of plaintext: UnsafeRawBufferPointer) -> BlobID { inner.blobID(of: plaintext) }
    func makeChunker() -> FastCDC { inner.makeChunker() }
    func contains(_ kind: BlobKind, _ id: BlobID) -> Bool { inner.contains(kind, id) }
    func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8]) async throws -> Bool {
        try await inner.save(kind, id: id, plaintext: plaintext)
    }
    func load(_ kind: BlobKind, _ id: BlobID) async throws -> [UInt8] {
        guard kind == .data else { return try await inner.load(kind, id) }
        lock.withLock { running += 1; peak = max(peak, running) }
        defer { lock.withLock { running -= 1 } }
        try await Task.sleep(nanoseconds: UInt64.random(in: 0...3_000_000))
        return try await inner.load(kind, id)
    }
    func flush() async throws {}
}
