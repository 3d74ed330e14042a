import CofferFormat
import CofferKeys
@_spi(Testing) @testable import CofferRepository
import Crypto
import Foundation
import Testing

/// A small repository made with fixed keys (`Repository.create(testSeed:)`), checked in under
/// Vectors/repo-v1 with Vectors/SHA256SUMS, so that a change to the repository format shows up as a
/// test failure and an outside reader has a repository to test against. The key object opens with
/// the key file Vectors/repo-v1.key (32 bytes 0x42, `COFFER-SYMMETRIC-KEY-V1:4242…`).
///
/// `COFFER_WRITE_REPO_VECTORS=1 swift test --filter RepositoryVectors` rewrites them (only after a
/// deliberate format change).
@Suite struct RepositoryVectors {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors").path
    static let repository = directory + "/repo-v1"
    static let key = try! SymmetricKeyFile(keyBytes: [UInt8](repeating: 0x42, count: 32))
    static let seed = [UInt8](repeating: 0x01, count: 32)
    static let created = Date(timeIntervalSince1970: 1_764_720_000)  // 2025-12-03T00:00:00Z

    /// The blobs stored in the vector repository, in the order written.
    static let blobs: [(BlobKind, [UInt8])] = [
        (.data, Array("hello, repository\n".utf8)),              // stored raw (too small to shrink)
        (.data, sqlLikeText(40_000, seed: 12)),                  // stored as zstd
        (.data, deterministicBytes(100_000, seed: 13)),          // random: raw, spans two payload chunks
        (.tree, Array("{\"nodes\":[]}\n".utf8)),
    ]

    /// The SHA256SUMS lines of the files under `root` (named `VECTORS/<last component of root>/…`).
    static func sums(of root: String) throws -> String {
        let prefix = (root as NSString).lastPathComponent
        let files = try FileManager.default.subpathsOfDirectory(atPath: root).filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: root + "/" + $0, isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
        return try files.map { path in
            let data = try Data(contentsOf: URL(fileURLWithPath: root + "/" + path))
            return Hex.encode(Array(SHA256.hash(data: data))) + "  \(prefix)/" + path
        }.joined(separator: "\n") + "\n"
    }

    /// The lines of Vectors/SHA256SUMS for one vector repository (its directory name).
    static func recordedSums(of name: String) throws -> String {
        let all = try String(contentsOfFile: directory + "/SHA256SUMS", encoding: .utf8)
        return all.split(separator: "\n").filter { $0.contains("  \(name)/") }.map { $0 + "\n" }.joined()
    }

    /// Rewrites the lines of SHA256SUMS for one vector repository, keeping the others' lines.
    static func updateSums(of name: String) throws {
        let path = directory + "/SHA256SUMS"
        let all = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let others = all.split(separator: "\n").filter { !$0.contains("  \(name)/") }.map { $0 + "\n" }.joined()
        try (others + sums(of: directory + "/" + name)).write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test("(re)writes the vector repository when COFFER_WRITE_REPO_VECTORS=1")
    func write() async throws {
        guard ProcessInfo.processInfo.environment["COFFER_WRITE_REPO_VECTORS"] == "1" else { return }
        try? FileManager.default.removeItem(atPath: Self.repository)
        try FileManager.default.createDirectory(atPath: Self.directory, withIntermediateDirectories: true)
        let storage = try LocalStorage.create(path: Self.repository)
        var options = Repository.CreateOptions()
        options.hostname = "vector-host"
        options.username = "vector"
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [Self.key]), options: options,
                                               testSeed: Self.seed, created: Self.created)
        for (kind, bytes) in Self.blobs {
            try await repo.save(kind, id: bytes.withUnsafeBytes { repo.blobID(of: $0) }, plaintext: bytes)
        }
        try await repo.flush()
        let tree = Self.blobs[3].1.withUnsafeBytes { repo.blobID(of: $0) }
        try await repo.saveSnapshot(SnapshotInfo(time: Self.created, tree: tree, paths: ["/srv/vector"], hostname: "vector-host",
                                                 username: "vector", tags: ["vector"], parent: nil, programVersion: "coffer vectors",
                                                 summary: .init()))
        try Self.updateSums(of: "repo-v1")
        try (Self.key.textEncoding(created: Self.created)).write(toFile: Self.directory + "/repo-v1.key", atomically: true, encoding: .utf8)
    }

    @Test("the checked-in repository is byte-identical to its SHA256SUMS and reads back: config, key, blobs, snapshot, check",
          .enabled(if: FileManager.default.fileExists(atPath: RepositoryVectors.directory + "/SHA256SUMS")))
    func read() async throws {
        #expect(try Self.sums(of: Self.repository) == Self.recordedSums(of: "repo-v1"), "the vector files changed")
        // Work on a copy (git keeps no empty directories; reading must not write anyway).
        let dir = TemporaryDirectory()
        let copy = dir.file("repo")
        try FileManager.default.copyItem(atPath: Self.repository, toPath: copy)
        for kind in ObjectKind.allCases { try? FileManager.default.createDirectory(atPath: copy + "/\(kind)", withIntermediateDirectories: true) }
        let keyText = try String(contentsOfFile: Self.directory + "/repo-v1.key", encoding: .utf8)
        let key = try SymmetricKeyFile.parse(Array(keyText.utf8), source: "repo-v1.key")
        #expect(key == Self.key)
        let repo = try await Repository.open(storage: try LocalStorage(path: copy), identities: KeyObjectIdentities(identities: [key]))
        #expect(repo.config.id.count == 64)
        #expect(repo.config.created == Self.created)
        // The pack size the vectors were made with (the default was 8 MiB then; it is 4 MiB now): a
        // reader takes the config's value, whatever the current default.
        #expect(repo.config.chunkerAvg == 512 << 10 && repo.config.packSize == 8 << 20)
        for (kind, bytes) in Self.blobs {
            let id = bytes.withUnsafeBytes { repo.blobID(of: $0) }
            #expect(try await repo.load(kind, id) == bytes)
        }
        let snapshots = try await repo.listSnapshots()
        #expect(snapshots.count == 1)
        #expect(snapshots[0].info.paths == ["/srv/vector"])
        #expect(snapshots[0].info.time == Self.created)
        #expect(try await repo.check(readData: .all).ok)
        // The same secrets as the seed gives: the format did not change how they are derived.
        let other = TemporaryDirectory()
        let fresh = try await Repository.create(storage: try LocalStorage.create(path: other.file("r")),
                                                keys: KeyObjectRecipients(recipients: [key]), options: .init(),
                                                testSeed: Self.seed, created: Self.created)
        #expect(fresh.config.id == repo.config.id)
        #expect(fresh.blobID(of: UnsafeRawBufferPointer(start: nil, count: 0)) == repo.blobID(of: UnsafeRawBufferPointer(start: nil, count: 0)))
        // A wrong key opens nothing.
        await expectCategory(.key) {
            _ = try await Repository.open(storage: try LocalStorage(path: copy), identities: KeyObjectIdentities(identities: [SymmetricKeyFile.generate()]))
        }
    }
}

/// The second vector repository, Vectors/repo-v1-ext: trees with extension blocks (docs/REPOSITORY.md,
/// "Tree encoding", kind bit 0x80). Same seed, key file and generator API as repo-v1; its snapshot
/// (paths `/srv/ext`) holds a directory with one user attribute, a file with two, and two files
/// that were one inode (hard links). The trees are built here from fixed metadata (not read from a
/// file system), so their bytes and ids are the same on every machine; docs/REPOSITORY.md lists
/// the bytes of the `ext` directory's tree.
///
/// `COFFER_WRITE_REPO_VECTORS=repo-v1-ext swift test --filter RepositoryExtVectors` rewrites only
/// this repository and its lines of SHA256SUMS (only after a deliberate format change).
@Suite struct RepositoryExtVectors {
    static let name = "repo-v1-ext"
    static let repository = RepositoryVectors.directory + "/" + name
    static let mtime: Int64 = 1_764_720_000 * 1_000_000_000 + 500_000_000  // 2025-12-03T00:00:00.5Z
    static let notes = Array("two attributes on this file\n".utf8)
    static let linked = Array("one file, two names\n".utf8)
    static let directoryXattrs = [ExtendedAttribute(name: Array("user.purpose".utf8), value: Array("repository vectors".utf8))]
    static let fileXattrs = [ExtendedAttribute(name: Array("user.comment".utf8), value: Array("hello".utf8)),
                             ExtendedAttribute(name: Array("user.mime_type".utf8), value: Array("text/plain".utf8))]

    /// The `ext` directory's tree: `a-link` and `b-link` (one inode, link count 2), `notes.txt`
    /// (two attributes). `blobID` is the repository's keyed id function.
    static func extTree(_ blobID: ([UInt8]) -> BlobID) throws -> Tree {
        func file(_ name: String, _ content: [UInt8], mode: UInt32, inode: UInt64, xattrs: [ExtendedAttribute] = [], links: UInt32 = 0) -> TreeNode {
            TreeNode(name: Array(name.utf8), kind: .file, mode: mode, uid: 1000, gid: 1000, user: Array("vector".utf8),
                     group: Array("vector".utf8), mtimeNanos: mtime, ctimeNanos: mtime, size: UInt64(content.count),
                     inode: inode, device: 42, content: [blobID(content)], xattrs: xattrs, links: links)
        }
        return try Tree(nodes: [
            file("a-link", linked, mode: 0o644, inode: 1001, links: 2),
            file("b-link", linked, mode: 0o644, inode: 1001, links: 2),
            file("notes.txt", notes, mode: 0o640, inode: 1002, xattrs: fileXattrs),
        ])
    }

    static func directory(_ name: String, subtree: BlobID, xattrs: [ExtendedAttribute] = []) -> TreeNode {
        TreeNode(name: Array(name.utf8), kind: .directory, mode: 0o750, uid: 1000, gid: 1000, user: Array("vector".utf8),
                 group: Array("vector".utf8), mtimeNanos: mtime, ctimeNanos: mtime, inode: 1000, device: 42,
                 subtree: subtree, xattrs: xattrs)
    }

    @Test("(re)writes the extension-block vector repository when COFFER_WRITE_REPO_VECTORS=repo-v1-ext")
    func write() async throws {
        guard ProcessInfo.processInfo.environment["COFFER_WRITE_REPO_VECTORS"] == Self.name else { return }
        try? FileManager.default.removeItem(atPath: Self.repository)
        let storage = try LocalStorage.create(path: Self.repository)
        var options = Repository.CreateOptions()
        options.hostname = "vector-host"
        options.username = "vector"
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [RepositoryVectors.key]),
                                               options: options, testSeed: RepositoryVectors.seed, created: RepositoryVectors.created)
        let id: ([UInt8]) -> BlobID = { bytes in bytes.withUnsafeBytes { repo.blobID(of: $0) } }
        for content in [Self.linked, Self.notes] { _ = try await repo.save(.data, id: id(content), plaintext: content) }
        let extTree = try Self.extTree(id)
        let ext = try await repo.saveTree(extTree).id
        // For docs/REPOSITORY.md, "Vectors".
        print("repo-v1-ext: ext tree id \(ext.hex)\nbytes \(Hex.encode(extTree.encoded()))")
        let srv = try await repo.saveTree(try Tree(nodes: [Self.directory("ext", subtree: ext, xattrs: Self.directoryXattrs)])).id
        var srvNode = Self.directory("srv", subtree: srv)
        srvNode.uid = 0; srvNode.gid = 0; srvNode.user = Array("root".utf8); srvNode.group = Array("root".utf8); srvNode.mode = 0o755
        let root = try await repo.saveTree(try Tree(nodes: [srvNode])).id
        try await repo.flush()
        _ = try await repo.saveSnapshot(SnapshotInfo(time: RepositoryVectors.created, tree: root, paths: ["/srv/ext"], hostname: "vector-host",
                                                     username: "vector", tags: ["vector", "xattrs"], parent: nil,
                                                     programVersion: "coffer vectors", summary: .init()))
        try RepositoryVectors.updateSums(of: Self.name)
    }

    /// The names of `path`'s extended attributes (not following a link), sorted.
    func xattrNames(_ path: String) -> [String] {
        guard let list = Xattr.llist else { return [] }
        let size = list(path, nil, 0)
        guard size > 0 else { return [] }
        var buffer = [CChar](repeating: 0, count: size)
        let n = buffer.withUnsafeMutableBufferPointer { list(path, $0.baseAddress, size) }
        guard n > 0 else { return [] }
        return buffer[..<n].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }.sorted()
    }

    @Test("repo-v1-ext: byte-identical to SHA256SUMS; its tree bytes are the documented ones; check passes; restore gives names, contents, xattrs, hard links",
          .enabled(if: FileManager.default.fileExists(atPath: RepositoryExtVectors.repository)))
    func read() async throws {
        #expect(try RepositoryVectors.sums(of: Self.repository) == RepositoryVectors.recordedSums(of: Self.name), "the vector files changed")
        let dir = TemporaryDirectory()
        let copy = dir.file("repo")
        try FileManager.default.copyItem(atPath: Self.repository, toPath: copy)
        for kind in ObjectKind.allCases { try? FileManager.default.createDirectory(atPath: copy + "/\(kind)", withIntermediateDirectories: true) }
        let keyText = try String(contentsOfFile: RepositoryVectors.directory + "/repo-v1.key", encoding: .utf8)
        let key = try SymmetricKeyFile.parse(Array(keyText.utf8), source: "repo-v1.key")
        let repo = try await Repository.open(storage: try LocalStorage(path: copy), identities: KeyObjectIdentities(identities: [key]))
        #expect(repo.config.created == RepositoryVectors.created)
        // Every object authenticates and every blob matches its id.
        let report = try await repo.check(readData: .all)
        #expect(report.ok)
        let snapshots = try await repo.listSnapshots()
        try #require(snapshots.count == 1)
        let info = snapshots[0].info
        #expect(info.paths == ["/srv/ext"] && info.tags == ["vector", "xattrs"] && info.hostname == "vector-host")

        // The stored trees are exactly the encodings of the fixed nodes, and the ext tree's bytes
        // are the hex docs/REPOSITORY.md lists for outside readers.
        let id: ([UInt8]) -> BlobID = { bytes in bytes.withUnsafeBytes { repo.blobID(of: $0) } }
        let expected = try Self.extTree(id).encoded()
        let extID = id(expected)
        let rootTree = try await repo.loadTree(info.tree)
        let srvTree = try await repo.loadTree(try #require(rootTree.node(named: Array("srv".utf8))?.subtree))
        let extNode = try #require(srvTree.node(named: Array("ext".utf8)))
        #expect(extNode.subtree == extID)
        #expect(extNode.xattrs == Self.directoryXattrs)
        #expect(try await repo.load(.tree, extID) == expected)
        #expect(expected[12 + 2 + 6] == 0x81, "a-link's kind byte: file with an extension block")
        let doc = try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../docs/REPOSITORY.md").standardized.path, encoding: .utf8)
        let docHex = doc.filter { !$0.isWhitespace }
        #expect(docHex.contains(Hex.encode(expected)), "docs/REPOSITORY.md lists the ext tree's bytes")
        #expect(doc.contains(Hex.encode(extID.bytes)), "docs/REPOSITORY.md names the ext tree's id")

        // Restore and compare with what the trees say.
        let target = dir.file("out")
        let result = try await Restorer(store: repo).restore(root: info.tree, target: target)
        let ext = target + "/srv/ext"
        #expect(try FileManager.default.contentsOfDirectory(atPath: ext).sorted() == ["a-link", "b-link", "notes.txt"])
        #expect(readBytes(ext + "/notes.txt") == Self.notes)
        #expect(readBytes(ext + "/a-link") == Self.linked)
        #expect(readBytes(ext + "/b-link") == Self.linked)
        let a = try #require(lstatOf(ext + "/a-link")), b = try #require(lstatOf(ext + "/b-link"))
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2, "a-link and b-link are one file")
        #expect(lstatOf(ext + "/notes.txt")?.st_nlink == 1)
        #expect(result.files == 3 && result.hardLinks == 1)
        #expect(lstatOf(ext + "/notes.txt").map { $0.st_mode & 0o777 } == 0o640)
        #expect(lstatOf(ext).map { $0.st_mode & 0o777 } == 0o750)
        let st = try #require(lstatOf(ext + "/notes.txt"))
        #expect(Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec) == Self.mtime)
        writeFile([], dir.file("probe"))
        guard setUserXattr(dir.file("probe"), "user.x", []) else {
            Issue.record("the file system of \(dir.path) refuses user.* attributes; tmpfs and ext4 allow them")
            return
        }
        #expect(xattrNames(ext + "/notes.txt") == ["user.comment", "user.mime_type"])
        #expect(getXattr(ext + "/notes.txt", "user.comment") == Array("hello".utf8))
        #expect(getXattr(ext + "/notes.txt", "user.mime_type") == Array("text/plain".utf8))
        #expect(xattrNames(ext) == ["user.purpose"])
        #expect(getXattr(ext, "user.purpose") == Array("repository vectors".utf8))
        #expect(xattrNames(ext + "/a-link").isEmpty)
        #expect(result.xattrsSet == 3 && result.warnings.isEmpty)
    }
}
