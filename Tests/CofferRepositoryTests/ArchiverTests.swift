import CofferFormat
@testable import CofferRepository
import Foundation
import Testing

/// A directory with the cases a backup must carry: nested and empty directories, empty, tiny and
/// multi-chunk files, odd modes, a symbolic link, names with a newline, non-UTF-8 bytes and 255 bytes.
func makeSampleTree(_ root: String) {
    writeFile(Array("hello\n".utf8), "\(root)/a.txt", mode: 0o640)
    writeFile([], "\(root)/empty", mode: 0o600)
    writeFile([7], "\(root)/tiny", mode: 0o755)
    writeFile(deterministicBytes(100_000, seed: 3), "\(root)/sub/big.bin")
    writeFile(sqlLikeText(50_000), "\(root)/sub/deeper/dump.sql", mode: 0o400)
    writeFile(Array("newline".utf8), "\(root)/sub/line\nbreak")
    writeFile(Array("long".utf8), "\(root)/" + String(repeating: "L", count: 255))
    try? FileManager.default.createDirectory(atPath: "\(root)/emptydir", withIntermediateDirectories: true)
    chmod("\(root)/emptydir", 0o750)
    symlink("../a.txt", "\(root)/sub/link")
    let odd: [UInt8] = Array("\(root)/".utf8) + [0x6f, 0xff, 0xfe, 0x2e, 0x62]
    withBytePath(odd) { p in
        let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = write(fd, "odd", 3)
        close(fd)
    }
    // Fixed mtimes, to check they come back.
    var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_600_000_000, tv_nsec: 123_456_789)]
    utimensat(AT_FDCWD, "\(root)/a.txt", &times, 0)
}

func options(parent: SnapshotRecord? = nil, excludes: [String] = []) throws -> ArchiveOptions {
    var o = ArchiveOptions(hostname: "host1", username: "user")
    o.parent = parent
    o.excludes = try excludes.map(PathPattern.init)
    o.concurrency = 4
    return o
}

@Suite struct ArchiverTests {
    @Test func backupRecordsEveryEntryUnderItsAbsolutePath() async throws {
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let store = MemoryBlobStore()
        let result = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")])
        #expect(result.warnings.isEmpty)
        #expect(result.info.paths == [dir.p("src")])
        #expect(result.info.summary.filesNew == 8)
        #expect(result.info.summary.dirsNew == 4)
        let expectedBytes: Int64 = 150_021  // 6 + 1 + 100_000 + 50_000 + 7 + 4 + 3
        #expect(result.info.summary.totalBytesProcessed == expectedBytes)
        #expect(result.info.summary.dataBlobs > 5)
        var listed: [String: TreeNode] = [:]
        let prefix = Array(dir.p("src").utf8)
        try await TreeWalk.list(store: store, root: result.info.tree) { path, node in
            if path.starts(with: prefix) { listed[TreeNode.display(Array(path.dropFirst(prefix.count)))] = node }
        }
        #expect(listed["/a.txt"]?.mode == 0o640)
        #expect(listed["/a.txt"]?.mtimeNanos == 1_600_000_000_123_456_789)
        #expect(listed["/empty"]?.content == [])
        #expect(listed["/sub/big.bin"]?.size == 100_000)
        #expect((listed["/sub/big.bin"]?.content.count ?? 0) > 3)
        #expect(listed["/sub/link"]?.kind == .symlink)
        #expect(listed["/sub/link"]?.linkTarget == Array("../a.txt".utf8))
        #expect(listed["/sub/line\\x0abreak"] != nil)
        #expect(listed["/o\\xff\\xfe.b"]?.size == 3)
        #expect(listed["/emptydir"]?.kind == .directory)
        #expect(listed["/emptydir"]?.mode == 0o750)
        #expect(listed["/" + String(repeating: "L", count: 255)] != nil)
    }

    @Test func secondBackupReadsOnlyChangedFiles() async throws {
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let store = MemoryBlobStore()
        let first = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")])
        let parent = SnapshotRecord(id: String(repeating: "a", count: 64), info: first.info)

        let archiver = Archiver(store: store, options: try options(parent: parent))
        let unchanged = try await archiver.backup(paths: [dir.p("src")])
        #expect(archiver.filesRead == 0)
        // The backed-up directory's tree is the same blob (its ancestors, /tmp and up, may change).
        let src = pathComponents(dir.p("src"))
        let before = try await store.lookup(path: src, root: first.info.tree)?.subtree
        #expect(before != nil)
        #expect(try await store.lookup(path: src, root: unchanged.info.tree)?.subtree == before)
        #expect(unchanged.info.summary.filesUnmodified == 8)
        #expect(unchanged.info.summary.filesNew == 0)
        #expect(unchanged.info.summary.dataBlobs == 0)
        #expect(unchanged.info.summary.dirsUnmodified == 4)
        #expect(unchanged.info.summary.treeBlobs <= src.count)
        #expect(unchanged.info.parent == parent.id)

        writeFile(Array("changed\n".utf8), dir.p("src/sub/deeper/new.txt"))
        let blobsBefore = store.count
        let again = Archiver(store: store, options: try options(parent: parent))
        let second = try await again.backup(paths: [dir.p("src")])
        #expect(again.filesRead == 1)
        #expect(second.info.summary.filesNew == 1)
        #expect(second.info.summary.filesUnmodified == 8)
        #expect(second.info.summary.dataBlobs == 1)
        // The new file's blob and the trees from its directory up to the root.
        #expect(store.count - blobsBefore == 1 + second.info.summary.treeBlobs)
        #expect(second.info.summary.dirsChanged >= 3)
        #expect(second.info.summary.dirsUnmodified == 1)
    }

    @Test func excludesDropEntriesAndSubtrees() async throws {
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let store = MemoryBlobStore()
        let result = try await Archiver(store: store, options: try options(excludes: ["*.bin", dir.p("src/sub/deeper")]))
            .backup(paths: [dir.p("src")])
        var names: [String] = []
        try await TreeWalk.list(store: store, root: result.info.tree) { path, _ in names.append(TreeNode.display(path)) }
        #expect(!names.contains { $0.hasSuffix("big.bin") })
        #expect(!names.contains { $0.contains("deeper") })
        #expect(names.contains { $0.hasSuffix("/sub/link") })
    }

    @Test func overlappingPathsAreRefused() async throws {
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        await #expect(throws: TreeError.self) {
            try await Archiver(store: MemoryBlobStore(), options: try options()).backup(paths: [dir.p("src"), dir.p("src/sub")])
        }
    }

    @Test func severalPathsAndASingleFile() async throws {
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let store = MemoryBlobStore()
        let result = try await Archiver(store: store, options: try options())
            .backup(paths: [dir.p("src/a.txt"), dir.p("src/sub/deeper")])
        #expect(result.info.paths.count == 2)
        let a = try await store.lookup(path: pathComponents(dir.p("src/a.txt")), root: result.info.tree)
        #expect(a?.kind == .file && a?.size == 6)
        let d = try await store.lookup(path: pathComponents(dir.p("src/sub/deeper/dump.sql")), root: result.info.tree)
        #expect(d?.size == 50_000)
        #expect(try await store.lookup(path: pathComponents(dir.p("src/tiny")), root: result.info.tree) == nil)
    }

    @Test func stdinBackupStoresOneFile() async throws {
        let store = MemoryBlobStore()
        let dir = TemporaryDirectory()
        let input = deterministicBytes(30_000, seed: 9)
        writeFile(input, dir.p("in"))
        let fd = open(dir.p("in"), O_RDONLY)
        defer { close(fd) }
        let result = try await Archiver(store: store, options: try options()).backup(stream: fd, name: "db.sql")
        #expect(result.info.paths == ["/db.sql"])
        let node = try #require(try await store.lookup(path: [Array("db.sql".utf8)], root: result.info.tree))
        #expect(node.size == 30_000)
        var joined: [UInt8] = []
        for id in node.content { joined += try await store.load(.data, id) }
        #expect(joined == input)
        await #expect(throws: TreeError.self) {
            try await Archiver(store: store, options: try options()).backup(stream: fd, name: "a/b")
        }
    }

    /// The chunks of one large input are saved by concurrent tasks: the file's content must still
    /// list them in input order, each saved once, and the store must hold exactly the distinct ones.
    @Test func largeFileChunksSavedConcurrentlyKeepTheirOrder() async throws {
        let dir = TemporaryDirectory()
        let part = sqlLikeText(300_000, seed: 21)
        let input = part + deterministicBytes(200_000, seed: 22) + part + sqlLikeText(123_457, seed: 23)
        writeFile(input, dir.p("src/big.sql"))
        let store = MemoryBlobStore()
        let chunker = StreamChunker(source: BytesSource(input), cdc: store.makeChunker())
        var expected: [BlobID] = []
        while let chunk = try chunker.nextChunk() { expected.append(store.idKey.id(of: chunk)) }
        #expect(expected.count > 100)
        var o = try options()
        o.concurrency = 3
        let result = try await Archiver(store: store, options: o).backup(paths: [dir.p("src")])
        let node = try #require(try await store.lookup(path: pathComponents(dir.p("src/big.sql")), root: result.info.tree))
        #expect(node.content == expected)
        #expect(node.size == UInt64(input.count))
        #expect(result.info.summary.dataBlobs == Set(expected).count)
        #expect(result.info.summary.dataBlobs < expected.count)  // the repeated part deduplicates
        var joined: [UInt8] = []
        for id in node.content { joined += try await store.load(.data, id) }
        #expect(joined == input)
        // The same bytes as a stream give the same content.
        let fd = open(dir.p("src/big.sql"), O_RDONLY)
        defer { close(fd) }
        let streamed = try await Archiver(store: store, options: o).backup(stream: fd, name: "big.sql")
        let streamNode = try #require(try await store.lookup(path: [Array("big.sql".utf8)], root: streamed.info.tree))
        #expect(streamNode.content == expected)
        #expect(streamed.info.summary.dataBlobs == 0)
    }

    @Test func commandOutputIsBackedUpWithACleanEnvironment() async throws {
        let store = MemoryBlobStore()
        setenv("COFFER_TEST_SECRET_VALUE", "hunter2", 1)
        defer { unsetenv("COFFER_TEST_SECRET_VALUE") }
        let result = try await Archiver(store: store, options: try options())
            .backup(command: ["/bin/sh", "-c", "echo start; env; echo end"], name: "out")
        let node = try #require(try await store.lookup(path: [Array("out".utf8)], root: result.info.tree))
        var joined: [UInt8] = []
        for id in node.content { joined += try await store.load(.data, id) }
        let text = String(decoding: joined, as: UTF8.self)
        #expect(text.hasPrefix("start\n") && text.hasSuffix("end\n"))
        #expect(!text.contains("hunter2"))
        #expect(text.contains("PATH="))
    }

    @Test func failingCommandFailsTheBackup() async throws {
        let store = MemoryBlobStore()
        let catalog = MemorySnapshotCatalog()
        await #expect(throws: TreeError.self) {
            let result = try await Archiver(store: store, options: try options())
                .backup(command: ["/bin/sh", "-c", "echo partial; exit 3"], name: "out")
            _ = try await catalog.saveSnapshot(result.info)
        }
        #expect(catalog.count == 0)
        await #expect(throws: TreeError.self) {
            _ = try await Archiver(store: store, options: try options()).backup(command: ["/nonexistent/tool"], name: "out")
        }
    }

    @Test func parentSelectionAndReferences() throws {
        func record(_ id: String, _ host: String, _ paths: [String], _ t: TimeInterval) -> SnapshotRecord {
            SnapshotRecord(id: id, info: SnapshotInfo(time: Date(timeIntervalSince1970: t), tree: TreeTests.id1, paths: paths,
                                                      hostname: host, username: "u", tags: [], parent: nil,
                                                      programVersion: "t", summary: .init()))
        }
        let records = [record("aaaa1111", "h", ["/x"], 10), record("aaaa2222", "h", ["/x"], 20),
                       record("bbbb3333", "h", ["/y"], 30), record("cccc4444", "other", ["/x"], 40)]
        #expect(SnapshotSelection.parent(for: ["/x"], host: "h", in: records)?.id == "aaaa2222")
        #expect(SnapshotSelection.parent(for: ["/z"], host: "h", in: records) == nil)
        #expect(try SnapshotSelection.resolve("latest", in: records).id == "cccc4444")
        #expect(try SnapshotSelection.resolve("latest", in: records, host: "h").id == "bbbb3333")
        #expect(try SnapshotSelection.resolve("bbbb", in: records).id == "bbbb3333")
        #expect(throws: TreeError.self) { try SnapshotSelection.resolve("aaaa", in: records) }
        #expect(throws: TreeError.self) { try SnapshotSelection.resolve("dddd", in: records) }
        #expect(throws: TreeError.self) { try SnapshotSelection.resolve("zz", in: records) }
    }
}
