@testable import CofferRepository
import Foundation
import Testing

func name(_ kind: ObjectKind, _ n: String) -> ObjectName { try! ObjectName(kind, n) }

func hexName(_ i: Int) -> String {
    let s = String(i, radix: 16)
    return String(repeating: "0", count: 64 - s.count) + s
}

/// Every entry under `dir`, recursively (relative paths).
func entries(_ dir: String) -> [String] {
    (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).sorted()
}

/// What the beforePublish hook saw (written on the saving thread, read after the save).
final class ObservedAtPublish: @unchecked Sendable {
    private let lock = NSLock()
    private var _listed: [ObjectName]?, _loadError: StorageError?, _tempSize: Int?
    var listed: [ObjectName]? { lock.withLock { _listed } }
    var loadError: StorageError? { lock.withLock { _loadError } }
    var tempSize: Int? { lock.withLock { _tempSize } }
    func record(listed: [ObjectName], loadError: StorageError?, tempSize: Int?) {
        lock.withLock { _listed = listed; _loadError = loadError; _tempSize = tempSize }
    }
}

extension LocalStorage {
    /// The error loading `name` throws now (tests).
    func loadError(_ name: ObjectName) -> StorageError? {
        do { _ = try loadNow(name, range: nil); return nil } catch { return error as? StorageError }
    }
}

@Suite struct StorageTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }

    @Test("save, load, stat, list, remove; data objects sharded by the first two characters")
    func basicLifecycle() async throws {
        let s = try LocalStorage.create(path: repo)
        let data = name(.data, "ab" + hexName(1).dropFirst(2))
        let snap = name(.snapshots, "s1")
        try await s.save(data, contents: Array("pack".utf8))
        try await s.save(snap, contents: [])
        #expect(FileManager.default.fileExists(atPath: "\(repo)/data/ab/\(data.name)"))
        #expect(FileManager.default.fileExists(atPath: "\(repo)/snapshots/s1"))
        #expect(try await s.load(data) == Array("pack".utf8))
        #expect(try await s.load(snap) == [])
        #expect(try await s.stat(data) == ObjectInfo(name: data, size: 4))
        #expect(try await s.listAll(.data) == [ObjectInfo(name: data, size: 4)])
        #expect(try await s.listAll(.snapshots) == [ObjectInfo(name: snap, size: 0)])
        #expect(try await s.listAll(.index) == [])
        try await s.remove(data)
        await #expect(throws: StorageError.notFound(data)) { try await s.load(data) }
        await #expect(throws: StorageError.notFound(data)) { try await s.stat(data) }
        await #expect(throws: StorageError.notFound(data)) { try await s.remove(data) }
        #expect(try await s.listAll(.data) == [])
    }

    @Test("no overwrite unless asked: the first object stays; overwrite replaces it")
    func refusesOverwrite() async throws {
        let s = try LocalStorage.create(path: repo)
        let n = name(.keys, "k1")
        try await s.save(n, contents: [1, 2, 3])
        await #expect(throws: StorageError.alreadyExists(n)) { try await s.save(n, contents: [9]) }
        #expect(try await s.load(n) == [1, 2, 3])
        try await s.save(n, contents: [4, 5], overwrite: true)
        #expect(try await s.load(n) == [4, 5])
        // Neither the refused nor the replacing save left a temporary file behind.
        #expect(entries("\(repo)/keys") == ["k1"])
    }

    @Test("range reads: any range within the object; outside it is an error, never a short read")
    func rangeReads() async throws {
        let s = try LocalStorage.create(path: repo)
        let n = name(.data, hexName(7))
        let bytes = deterministicBytes(100_000, seed: 3)
        try await s.save(n, contents: bytes)
        for r: Range<Int64> in [0..<0, 0..<1, 5..<10, 99_999..<100_000, 4096..<70_000, 0..<100_000, 100_000..<100_000] {
            #expect(try await s.load(n, range: r) == Array(bytes[Int(r.lowerBound)..<Int(r.upperBound)]))
        }
        for r: Range<Int64> in [0..<100_001, 99_999..<100_001, 100_001..<100_002, -1..<3] {
            await #expect(throws: StorageError.rangeOutOfBounds(n, range: r, size: 100_000)) {
                try await s.load(n, range: r)
            }
        }
    }

    @Test("hostile names are refused", arguments: [
        "", ".", "..", "../config", "a/b", "/etc", "ab\n", "a\u{0}b", "a\u{7f}", "AB", "a b", "a.b", ".tmp-ab",
        "é", "a\\b", String(repeating: "a", count: 129),
    ])
    func hostileNamesRefused(bad: String) throws {
        for kind in ObjectKind.allCases {
            #expect(throws: StorageError.self, "\(kind) '\(bad)'") { try ObjectName(kind, bad) }
        }
    }

    @Test("valid names: a-z 0-9 - _, up to 128; sharded kinds need two characters")
    func validNames() throws {
        #expect(try ObjectName(.snapshots, "a").name == "a")
        #expect(try ObjectName(.locks, "host-1_pid-2").name == "host-1_pid-2")
        #expect(try ObjectName(.data, String(repeating: "f", count: 128)).name.count == 128)
        #expect(throws: StorageError.self) { try ObjectName(.data, "a") }
        // The message shows a hostile name escaped.
        do { _ = try ObjectName(.data, "x\n\u{1b}[2J") } catch {
            #expect("\(error)".contains("x\\x0a\\x1b[2J"))
        }
    }

    @Test("listing skips leftovers and hostile entries: temp files, bad names, wrong shard, symlinks, dirs")
    func listingSkipsUntrustedEntries() async throws {
        let s = try LocalStorage.create(path: repo)
        let good = name(.data, "ab12")
        try await s.save(good, contents: [1])
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(repo)/data/ab", withIntermediateDirectories: true)
        for junk in [".tmp-ab13-1234", "AB14", "ab 15", "ab\n16", "ab..", "cd17"] {  // cd17: wrong shard
            #expect(fm.createFile(atPath: "\(repo)/data/ab/\(junk)", contents: Data([0])))
        }
        try fm.createDirectory(atPath: "\(repo)/data/..x", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: "\(repo)/data/..x/..xy", contents: Data([0])))
        try fm.createDirectory(atPath: "\(repo)/data/ab/ab18", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: dir.file("secret"), contents: Data("outside".utf8)))
        try fm.createSymbolicLink(atPath: "\(repo)/data/ab/ab19", withDestinationPath: dir.file("secret"))
        try fm.createSymbolicLink(atPath: "\(repo)/snapshots/s2", withDestinationPath: dir.file("secret"))

        #expect(try await s.listAll(.data) == [ObjectInfo(name: good, size: 1)])
        #expect(try await s.listAll(.snapshots) == [])
        // Objects behind symlinks or directories are not read.
        await #expect(throws: StorageError.unexpectedEntry(name(.data, "ab19"), "a symbolic link")) {
            try await s.load(name(.data, "ab19"))
        }
        await #expect(throws: StorageError.self) { try await s.load(name(.snapshots, "s2")) }
        await #expect(throws: StorageError.self) { try await s.stat(name(.data, "ab18")) }
        await #expect(throws: StorageError.self) { try await s.remove(name(.data, "ab19")) }
        #expect(fm.fileExists(atPath: dir.file("secret")))
    }

    @Test("saves racing a reader: it sees whole objects or none, and no temp file is listed")
    func noPartialObjectVisible() async throws {
        let s = try LocalStorage.create(path: repo)
        let size = 1 << 20
        let count = 16
        func contents(_ i: Int) -> [UInt8] { [UInt8](repeating: UInt8(i), count: size) }
        let shard = "\(repo)/data/aa"
        let seen = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for i in 0..<count { try await s.save(name(.data, "aa" + hexName(i).dropFirst(2)), contents: contents(i)) }
                return 0
            }
            group.addTask {
                var checked = 0
                var done = false
                var loaded = Set<ObjectName>()
                while !done {
                    let listed = try await s.listAll(.data)
                    done = listed.count == count
                    for info in listed {
                        #expect(info.size == Int64(size), "listed with partial size")
                        guard loaded.insert(info.name).inserted else { continue }
                        let bytes = try await s.load(info.name)
                        #expect(bytes.count == size && bytes.allSatisfy { $0 == bytes[0] })
                        checked += 1
                    }
                    // Directly on disk: whatever is under a final name is whole.
                    for entry in entries(shard) where !entry.hasPrefix(".") {
                        let attributes = try? FileManager.default.attributesOfItem(atPath: "\(shard)/\(entry)")
                        if let n = attributes?[.size] as? Int { #expect(n == size) }
                    }
                }
                return checked
            }
            var total = 0
            for try await n in group { total += n }
            return total
        }
        #expect(seen >= count)
        #expect(entries("\(repo)/data/aa").count == count)
        #expect(entries("\(repo)/data/aa").allSatisfy { !$0.hasPrefix(".") })
    }

    @Test("atomic save: just before publishing, the whole object is written under a temporary name and the object is not visible")
    func invisibleUntilPublished() async throws {
        _ = try LocalStorage.create(path: repo)
        let n = name(.data, "cd" + hexName(5).dropFirst(2))
        let contents = deterministicBytes(300_000, seed: 5)
        let observed = ObservedAtPublish()
        let repoPath = repo
        let s = try LocalStorage(path: repo, beforePublish: { temp in
            let probe = try LocalStorage(path: repoPath)
            var listed: [ObjectName] = []
            try probe.listNow(.data, cancelled: CancelFlag()) { listed.append($0.name) }
            let size = (try? FileManager.default.attributesOfItem(atPath: temp))?[.size] as? Int
            observed.record(listed: listed, loadError: probe.loadError(n), tempSize: size)
        })
        try await s.save(n, contents: contents)
        #expect(observed.listed == [], "the object was listed before it was complete")
        #expect(observed.loadError == .notFound(n), "the object was loadable before it was complete")
        #expect(observed.tempSize == contents.count, "the data was not all written before publishing")
        #expect(try await s.load(n) == contents)
        #expect(entries("\(repo)/data/cd") == [n.name])
    }

    @Test("a save that fails before publishing leaves neither the object nor its temporary file")
    func failedSaveLeavesNothing() async throws {
        _ = try LocalStorage.create(path: repo)
        struct Crash: Error {}
        let s = try LocalStorage(path: repo, beforePublish: { _ in throw Crash() })
        let n = name(.snapshots, "s1")
        await #expect(throws: Crash.self) { try await s.save(n, contents: [1, 2, 3]) }
        #expect(entries("\(repo)/snapshots") == [])
        await #expect(throws: StorageError.notFound(n)) { try await s.load(n) }
    }

    @Test("a leftover temporary file (crash during save) is neither listed nor in the way")
    func leftoverTempFile() async throws {
        let s = try LocalStorage.create(path: repo)
        let n = name(.index, "i1")
        #expect(FileManager.default.createFile(atPath: "\(repo)/index/.tmp-i1-deadbeef", contents: Data([1, 2])))
        #expect(try await s.listAll(.index) == [])
        try await s.save(n, contents: [7])
        #expect(try await s.listAll(.index) == [ObjectInfo(name: n, size: 1)])
        #expect(try await s.load(n) == [7])
    }

    @Test("concurrent saves: distinct names all land; one name raced by 16 saves is won by exactly one")
    func concurrentSaves() async throws {
        let s = try LocalStorage.create(path: repo)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<64 {
                group.addTask { try await s.save(name(.data, hexName(i * 4099)), contents: deterministicBytes(10_000, seed: UInt64(i))) }
            }
            try await group.waitForAll()
        }
        let listed = try await s.listAll(.data)
        #expect(listed.count == 64)
        for i in 0..<64 {
            #expect(try await s.load(name(.data, hexName(i * 4099))) == deterministicBytes(10_000, seed: UInt64(i)))
        }

        let contested = name(.locks, "contested")
        let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
            for i in 0..<16 {
                group.addTask {
                    do { try await s.save(contested, contents: deterministicBytes(100_000, seed: UInt64(1000 + i))); return (i, true) }
                    catch StorageError.alreadyExists { return (i, false) }
                    catch { Issue.record("\(error)"); return (i, false) }
                }
            }
            var all: [(Int, Bool)] = []
            for await o in group { all.append(o) }
            return all
        }
        let winners = outcomes.filter(\.1).map(\.0)
        #expect(winners.count == 1)
        if let w = winners.first {
            #expect(try await s.load(contested) == deterministicBytes(100_000, seed: UInt64(1000 + w)))
        }
        #expect(entries("\(repo)/locks") == ["contested"])
    }

    @Test("listing comes in batches of at most batchSize")
    func batchedListing() async throws {
        let s = try LocalStorage.create(path: repo)
        for i in 0..<25 { try await s.save(name(.snapshots, "s\(i)"), contents: [UInt8(i)]) }
        var sizes: [Int] = [], names = Set<String>()
        for try await batch in s.list(.snapshots, batchSize: 10) {
            sizes.append(batch.count)
            names.formUnion(batch.map(\.name.name))
        }
        #expect(sizes == [10, 10, 5])
        #expect(names == Set((0..<25).map { "s\($0)" }))
    }

    @Test("opening: a missing path or a file is refused; create refuses an existing directory")
    func opening() throws {
        #expect(throws: StorageError.self) { try LocalStorage(path: dir.file("missing")) }
        #expect(FileManager.default.createFile(atPath: dir.file("file"), contents: Data()))
        #expect(throws: StorageError.self) { try LocalStorage(path: dir.file("file")) }
        _ = try LocalStorage.create(path: repo)
        #expect(throws: StorageError.self) { try LocalStorage.create(path: repo) }
        #expect(entries(repo) == ObjectKind.allCases.map(\.rawValue).sorted())
    }
}
