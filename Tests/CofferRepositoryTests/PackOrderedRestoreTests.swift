import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// A restore reads the packs its files need, each once, and writes blobs where they belong
/// (docs/REPOSITORY.md, "Restore").
@Suite struct PackOrderedRestoreTests {
    func reopen(_ t: TestRepository) async throws -> (Repository, CountingStorage) {
        let counting = CountingStorage(try LocalStorage(path: t.path))
        let repo = try await Repository.open(storage: counting, identities: KeyObjectIdentities(identities: [t.key]))
        return (repo, counting)
    }

    /// Saves the trees in packs of their own (after the data is flushed), so that data packs are
    /// read by the content pass only.
    func saveRoot(_ repo: Repository, _ nodes: [TreeNode]) async throws -> BlobID {
        try await repo.flush()
        let root = try await repo.saveTree(try Tree(nodes: nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }))
        try await repo.flush()
        return root.id
    }

    /// The data packs (names) holding these blobs, from the index.
    func packs(_ repo: Repository, _ ids: [BlobID]) -> Set<String> {
        Set(ids.compactMap { repo.placement(.data, $0)?.pack })
    }

    /// Temporary files left anywhere below `path`.
    func leftovers(_ path: String) -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).filter {
            ($0 as NSString).lastPathComponent.hasPrefix(".coffer-restore-")
        }
    }

    @Test("files whose blobs interleave across packs restore byte-identical; each needed pack is read once, whole; a shared blob too")
    func interleavedFilesEachPackOnce() async throws {
        let t = TestRepository()
        let repo = try await t.create(packSize: 1 << 20)
        // Two large files "backed up in parallel": their chunks alternate in the packs. A blob
        // shared by both, and used twice in `a`.
        let shared = deterministicBytes(70_000, seed: 9)
        let sharedID = try await saveBlob(repo, shared)
        var a: [UInt8] = [], b: [UInt8] = []
        var aIDs: [BlobID] = [], bIDs: [BlobID] = []
        for i in 0..<24 {
            let pa = deterministicBytes(90_000 + 1_000 * i, seed: UInt64(300 + i))
            let pb = deterministicBytes(110_000 - 1_000 * i, seed: UInt64(400 + i))
            aIDs.append(try await saveBlob(repo, pa)); a += pa
            bIDs.append(try await saveBlob(repo, pb)); b += pb
            if i == 5 || i == 17 { aIDs.append(sharedID); a += shared }
            if i == 11 { bIDs.append(sharedID); b += shared }
        }
        // A third file in packs of its own (saved after the others were flushed).
        try await repo.flush()
        var c: [UInt8] = []
        var cIDs: [BlobID] = []
        for i in 0..<12 {
            let pc = deterministicBytes(100_000, seed: UInt64(500 + i))
            cIDs.append(try await saveBlob(repo, pc)); c += pc
        }
        let root = try await saveRoot(repo, [
            TreeNode(name: Array("a".utf8), kind: .file, mode: 0o600, size: UInt64(a.count), content: aIDs),
            TreeNode(name: Array("b".utf8), kind: .file, mode: 0o644, size: UInt64(b.count), content: bIDs),
            TreeNode(name: Array("c".utf8), kind: .file, mode: 0o644, size: UInt64(c.count), content: cIDs),
        ])

        let (reopened, counting) = try await reopen(t)
        let abPacks = packs(reopened, aIDs + bIDs), cPacks = packs(reopened, cIDs)
        #expect(abPacks.count >= 4 && cPacks.count >= 1 && abPacks.isDisjoint(with: cPacks))
        let dir = TemporaryDirectory()
        let result = try await Restorer(store: reopened).restore(root: root, target: dir.p("out"))
        #expect(result.files == 3)
        #expect(result.bytes == Int64(a.count + b.count + c.count))
        #expect(readBytes(dir.p("out/a")) == a)
        #expect(readBytes(dir.p("out/b")) == b)
        #expect(readBytes(dir.p("out/c")) == c)
        #expect(lstatOf(dir.p("out/a"))!.st_mode & 0o777 == 0o600)
        #expect(leftovers(dir.p("out")).isEmpty)
        // Every data pack exactly once, as one read of the whole object.
        let loads = counting.dataLoads
        for pack in abPacks.union(cPacks) {
            let mine = loads.filter { $0.name == pack }
            #expect(mine.count == 1, "\(pack): \(mine)")
            let size = Int64(try FileManager.default.attributesOfItem(atPath: t.path + "/data/" + pack.prefix(2) + "/" + pack)[.size] as! Int)
            #expect(mine.first?.range == 0..<size)
        }
        let treeLoads = loads.filter { !abPacks.union(cPacks).contains($0.name) }
        #expect(treeLoads.count <= 2, "the tree's pack: header and range \(treeLoads)")

        // --include of one file reads only its packs.
        let (partial, partialCounting) = try await reopen(t)
        var options = RestoreOptions()
        options.includes = [try PathPattern("c")]
        let one = try await Restorer(store: partial, options: options).restore(root: root, target: dir.p("one"))
        #expect(one.files == 1)
        #expect(readBytes(dir.p("one/c")) == c)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("one")) == ["c"])
        let partialLoads = partialCounting.dataLoads.filter { !Set(treeLoads.map(\.name)).contains($0.name) }
        #expect(Set(partialLoads.map(\.name)) == cPacks, "\(partialLoads)")
        #expect(partialLoads.count == cPacks.count)
    }

    @Test("a damaged blob fails exactly the files that use it; the others are restored; no final name, no temporaries")
    func damagedBlobFailsItsFilesOnly() async throws {
        let t = TestRepository()
        let repo = try await t.create(packSize: 1 << 20)
        // Blobs of 128 KiB (random: stored raw) fill whole 64 KiB STREAM chunks from the pack's start.
        var contents: [[UInt8]] = []
        var ids: [BlobID] = []
        for i in 0..<6 {
            let bytes = deterministicBytes(128 << 10, seed: UInt64(700 + i))
            contents.append(bytes)
            ids.append(try await saveBlob(repo, bytes))
        }
        // f0…f5 one blob each; s1 and s2 share blob 3; m uses blobs 1 and 4.
        var nodes = (0..<6).filter { $0 != 3 }.map {
            TreeNode(name: Array("f\($0)".utf8), kind: .file, mode: 0o644, size: UInt64(128 << 10), content: [ids[$0]])
        }
        nodes += ["s1", "s2"].map { TreeNode(name: Array($0.utf8), kind: .file, mode: 0o644, size: UInt64(128 << 10), content: [ids[3]]) }
        nodes.append(TreeNode(name: Array("m".utf8), kind: .file, mode: 0o644, size: UInt64(256 << 10), content: [ids[1], ids[4]]))
        let root = try await saveRoot(repo, nodes)
        let pack = try #require(repo.placement(.data, ids[3])?.pack)
        let path = t.path + "/data/" + pack.prefix(2) + "/" + pack
        let stored = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let header = try #require(try CofferObject.headerLength(prefix: stored, object: "pack"))
        let plainOffset = 3 * (128 << 10) + 1000  // inside blob 3 (STREAM chunk 6)
        try flipByte(path, at: header + (plainOffset / 65536) * (65536 + 16) + plainOffset % 65536)

        let (reopened, counting) = try await reopen(t)
        let dir = TemporaryDirectory()
        var failures: [RestoreFailure] = []
        do {
            _ = try await Restorer(store: reopened).restore(root: root, target: dir.p("out"))
            Issue.record("the restore of a damaged blob succeeded")
        } catch TreeError.restoreIncomplete(let result) {
            failures = result.failures
            #expect(result.files == 6)
        }
        #expect(failures.map(\.path) == ["/s1", "/s2"])
        #expect(failures.allSatisfy { $0.category == .integrity && $0.reason.contains("data/\(pack)") }, "\(failures)")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.p("out")).sorted()
        #expect(names == ["f0", "f1", "f2", "f4", "f5", "m"], "nothing else, no temporary file: \(names)")
        for i in [0, 1, 2, 4, 5] { #expect(readBytes(dir.p("out/f\(i)")) == contents[i]) }
        #expect(readBytes(dir.p("out/m")) == contents[1] + contents[4])
        // The damaged pack was read once: the damaged chunks fail their blobs, nothing is read again.
        #expect(counting.dataLoads.filter { $0.name == pack }.count == 1, "\(counting.dataLoads)")
    }

    @Test("more files than open descriptors: 300 files of 3 blobs each across packs, 16 descriptors")
    func moreFilesThanDescriptors() async throws {
        let t = TestRepository()
        let repo = try await t.create(packSize: 1 << 20)
        let count = 300
        var contents = [[UInt8]](repeating: [], count: count)
        var ids = [[BlobID]](repeating: [], count: count)
        // Blob k of every file, then blob k+1 of every file: each file's blobs lie in different packs.
        for k in 0..<3 {
            for f in 0..<count {
                let bytes = deterministicBytes(2_000 + 7 * f + 1_000 * k, seed: UInt64(10_000 + 10 * f + k))
                ids[f].append(try await saveBlob(repo, bytes))
                contents[f] += bytes
            }
        }
        let root = try await saveRoot(repo, (0..<count).map {
            TreeNode(name: Array(String(format: "f%03d", $0).utf8), kind: .file, mode: 0o640, size: UInt64(contents[$0].count), content: ids[$0])
        })
        let reopened = try await t.open()
        #expect(packs(reopened, ids.flatMap { $0 }).count >= 3)
        var options = RestoreOptions()
        options.openFiles = 16
        options.packsAtOnce = 2
        let dir = TemporaryDirectory()
        let restorer = Restorer(store: reopened, options: options)
        let result = try await restorer.restore(root: root, target: dir.p("out"))
        #expect(result.files == count)
        for f in 0..<count { #expect(readBytes(dir.p("out") + String(format: "/f%03d", f)) == contents[f]) }
        #expect(leftovers(dir.p("out")).isEmpty)
        #expect(lstatOf(dir.p("out/f123"))!.st_mode & 0o777 == 0o640)
    }

    @Test("a symbolic link or another file swapped in place of a temporary file between the passes is refused")
    func swappedTemporaryIsRefused() async throws {
        let t = TestRepository()
        let repo = try await t.create(packSize: 1 << 20)
        let bytes = deterministicBytes(50_000, seed: 77)
        let id = try await saveBlob(repo, bytes)
        let file = { (name: String) in TreeNode(name: Array(name.utf8), kind: .file, mode: 0o644, size: 50_000, content: [id]) }
        var subtrees: [String: BlobID] = [:]
        for name in ["a", "b", "c"] {
            subtrees[name] = try await repo.saveTree(try Tree(nodes: [file(name == "c" ? "ok" : "victim")])).id
        }
        let root = try await saveRoot(repo, ["a", "b", "c"].map {
            TreeNode(name: Array($0.utf8), kind: .directory, mode: 0o755, subtree: subtrees[$0]!)
        })
        let reopened = try await t.open()
        let dir = TemporaryDirectory()
        let outside = writeFile(Array("outside".utf8), dir.p("outside"))
        let other = writeFile(Array("other".utf8), dir.p("other"))
        let restorer = Restorer(store: reopened)
        let out = dir.p("out")
        restorer.afterStructurePass = {
            // A link to a file outside, and a hard link to one (another inode, a regular file).
            for (sub, replacement) in [("a", "symlink"), ("b", "hard link")] {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: out + "/" + sub)) ?? []
                for name in names where name.hasPrefix(".coffer-restore-") {
                    let path = out + "/" + sub + "/" + name
                    unlink(path)
                    if replacement == "symlink" { symlink(outside, path) } else { link(other, path) }
                }
            }
        }
        var failures: [RestoreFailure] = []
        do {
            _ = try await restorer.restore(root: root, target: out)
            Issue.record("a swapped temporary file was written through")
        } catch TreeError.restoreIncomplete(let result) {
            failures = result.failures
            #expect(result.files == 1)
        }
        #expect(failures.map(\.path) == ["/a/victim", "/b/victim"], "\(failures)")
        #expect(failures.allSatisfy { $0.category == .integrity }, "\(failures)")
        #expect(readBytes(outside) == Array("outside".utf8), "the file outside was not written through the link")
        #expect(readBytes(other) == Array("other".utf8), "nor through the hard link")
        #expect(readBytes(out + "/c/ok") == bytes)
        #expect(lstatOf(out + "/a/victim") == nil && lstatOf(out + "/b/victim") == nil)
        #expect(leftovers(out).isEmpty)
    }
}
