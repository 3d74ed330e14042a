import CofferFormat
@testable import CofferRepository
import Foundation
import Testing

/// `PathPattern`: matching, and the decision whether anything below a directory can match (so a
/// restore with `--include` loads only the subtrees a pattern can reach).
@Suite struct PathPatternTests {
    func below(_ pattern: String, _ path: String) throws -> Bool {
        try PathPattern(pattern).mayMatchBelow(path: Array(path.utf8))
    }

    @Test("name patterns (no '/') can match below any directory")
    func namePatterns() throws {
        for pattern in ["f", "*.sql", "a?c", "[ab]x", "\\*"] {
            #expect(try below(pattern, "/srv"), "\(pattern)")
            #expect(try below(pattern, "/home/ann/deep"), "\(pattern)")
        }
    }

    @Test("literal path patterns reach only their ancestors")
    func literalPaths() throws {
        #expect(try below("/srv/ext/notes.txt", "/srv"))
        #expect(try below("/srv/ext/notes.txt", "/srv/ext"))
        #expect(try !below("/srv/ext/notes.txt", "/srv/ext/notes.txt"), "the entry itself is matched, not below it")
        #expect(try !below("/srv/ext/notes.txt", "/srv/other"))
        #expect(try !below("/srv/ext/notes.txt", "/home"))
        #expect(try !below("/srv/ext", "/srv/e"), "a name prefix is not a directory prefix")
        #expect(try !below("/srv/ext", "/srv/ext2"))
        #expect(try !below("/srv/ext/", "/srv/ext"), "trailing slashes are dropped: the directory itself matches")
        #expect(try below("/srv/ext/", "/srv"))
        #expect(try !below("srv/ext", "/srv"), "a relative path pattern never matches an absolute path")
        #expect(try !below("/", "/srv"))
    }

    @Test("wildcards: only the literal head before the first *, ? or [ counts (they also match '/')")
    func wildcards() throws {
        #expect(try below("/srv/*/x", "/srv"))
        #expect(try below("/srv/*/x", "/srv/a"))
        #expect(try below("/srv/*/x", "/srv/a/b/c"), "* matches '/' too")
        #expect(try !below("/srv/*/x", "/home"))
        #expect(try !below("/srv/*/x", "/sr"), "'/sr/' is not a prefix of '/srv/'")
        #expect(try below("/srv**", "/srv2/deep"), "'/srv**' matches '/srv2/deep/x'")
        #expect(try below("/s*", "/srv"))
        #expect(try !below("/s*", "/home"))
        #expect(try below("/srv/**/x", "/srv/a/b"))
        #expect(try !below("/srv/**/x", "/var"))
        #expect(try below("/srv/d?/x", "/srv/dz"))
        #expect(try !below("/srv/d?/x", "/srv/q"), "the head '/srv/d' rules out '/srv/q/'")
        #expect(try !below("/srv/d?/x", "/var/q"))
        #expect(try below("/srv/[ab]/x", "/srv/a"))
        #expect(try !below("/srv/[ab]/x", "/tmp"))
        #expect(try below("*/x", "/anything"), "a leading wildcard reaches everywhere")
    }

    @Test("backslash escapes are literal bytes of the head")
    func escapes() throws {
        #expect(try below("/srv/a\\*b/x", "/srv/a*b"))
        #expect(try !below("/srv/a\\*b/x", "/srv/aXb"), "an escaped * is a literal *")
        #expect(try below("/srv/x\\", "/srv"), "a trailing backslash: unknown, so reachable")
        // Matching agrees with the escapes.
        #expect(try PathPattern("/srv/a\\*b/x").matches(path: Array("/srv/a*b/x".utf8), name: Array("x".utf8)))
    }

    @Test("mayMatchBelow never rules out a directory under which the pattern matches something (checked against fnmatch)")
    func agreesWithMatching() throws {
        let patterns = ["/a/b", "/a/*", "/a/b*", "/a/?/c", "/a/[bc]/d", "/*", "/a\\/b/c", "b", "/a/b/c/d", "/x*/y"]
        let paths = ["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/c/d", "/a/bb/x", "/x", "/xy/y", "/x/z/y", "/b", "/a/z/c"]
        for pattern in patterns {
            let p = try PathPattern(pattern)
            for path in paths {
                let components = path.split(separator: "/").map(String.init)
                let name = Array(components.last!.utf8)
                guard p.matches(path: Array(path.utf8), name: name) else { continue }
                // Every proper ancestor directory of a matching path must be entered.
                for depth in 1..<components.count {
                    let ancestor = "/" + components[..<depth].joined(separator: "/")
                    #expect(p.mayMatchBelow(path: Array(ancestor.utf8)), "\(pattern) matches \(path), so \(ancestor) must be entered")
                }
            }
        }
    }

    /// root → srv → d0…d9, each with a file `f` and a subdirectory `deeper` holding a file `g`.
    func tree(_ store: MemoryBlobStore) async throws -> (root: BlobID, trees: Set<BlobID>) {
        let data = Array("content".utf8)
        let id = store.idKey.id(of: data)
        _ = try await store.save(.data, id: id, plaintext: data)
        var trees = Set<BlobID>()
        var dirs: [TreeNode] = []
        for i in 0..<10 {
            // Distinct trees (the mtimes differ), so each is its own load.
            let deeper = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("g".utf8), kind: .file, mtimeNanos: Int64(i),
                                                                            size: 7, content: [id])])).id
            let d = try await store.saveTree(try Tree(nodes: [
                TreeNode(name: Array("deeper".utf8), kind: .directory, mode: 0o755, subtree: deeper),
                TreeNode(name: Array("f".utf8), kind: .file, mtimeNanos: Int64(i), size: 7, content: [id]),
            ])).id
            trees.formUnion([deeper, d])
            dirs.append(TreeNode(name: Array("d\(i)".utf8), kind: .directory, mode: 0o755, mtimeNanos: Int64(i), subtree: d))
        }
        let srv = try await store.saveTree(try Tree(nodes: dirs)).id
        let root = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("srv".utf8), kind: .directory, mode: 0o755, subtree: srv)])).id
        trees.formUnion([srv, root])
        return (root, trees)
    }

    func treeLoads(_ store: MemoryBlobStore, _ trees: Set<BlobID>, includes: [String], target: String, root: BlobID) async throws -> (Int, RestoreResult) {
        var options = RestoreOptions()
        options.includes = try includes.map(PathPattern.init)
        store.resetLoads()
        let result = try await Restorer(store: store, options: options).restore(root: root, target: target)
        return (store.loads.filter { trees.contains($0) }.count, result)
    }

    @Test("restore --include loads only the subtrees a pattern can reach")
    func restoreLoadsFewerTrees() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let (root, trees) = try await tree(store)
        #expect(trees.count == 22)
        let (all, full) = try await treeLoads(store, trees, includes: [], target: dir.file("all"), root: root)
        #expect(full.files == 20)
        #expect(all == 22, "a full restore loads every tree once")
        // A literal path: root, srv and d3 only (not d3/deeper, not the other d*).
        let (literal, one) = try await treeLoads(store, trees, includes: ["/srv/d3/f"], target: dir.file("one"), root: root)
        #expect(one.files == 1)
        #expect(readBytes(dir.file("one/srv/d3/f")) == Array("content".utf8))
        #expect(literal == 3, "loaded \(literal) trees")
        #expect(literal < all)
        // A directory pattern: everything below it is selected and loaded, nothing beside it.
        let (subtree, sub) = try await treeLoads(store, trees, includes: ["/srv/d5"], target: dir.file("sub"), root: root)
        #expect(sub.files == 2)
        #expect(subtree == 4, "root, srv, d5, d5/deeper: loaded \(subtree)")
        // A name pattern can match anywhere: every tree is loaded, as before.
        let (named, byName) = try await treeLoads(store, trees, includes: ["g"], target: dir.file("name"), root: root)
        #expect(byName.files == 10)
        #expect(named == all)
        // No pattern reaches anything: only the root and srv are read.
        let (none, _) = try await treeLoads(store, trees, includes: ["/home/x"], target: dir.file("none"), root: root)
        #expect(none == 1, "only the root tree: loaded \(none)")
    }

    @Test("ls with a path loads only the trees on the way to it and those below it")
    func listingAPathLoadsItsSubtreeOnly() async throws {
        let store = MemoryBlobStore()
        let (root, trees) = try await tree(store)
        store.resetLoads()
        var listed: [String] = []
        try await TreeWalk.list(store: store, root: root, start: [Array("srv".utf8), Array("d3".utf8)]) { path, _ in
            listed.append(TreeNode.display(path))
        }
        #expect(listed == ["/srv/d3", "/srv/d3/deeper", "/srv/d3/deeper/g", "/srv/d3/f"])
        let loads = store.loads.filter { trees.contains($0) }.count
        #expect(loads == 4, "root, srv, d3, d3/deeper: loaded \(loads)")
    }
}
