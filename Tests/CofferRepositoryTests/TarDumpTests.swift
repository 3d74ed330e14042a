import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// Runs a command (no shell, through ChildSpawn: Foundation's Process is unreliable with many
/// tests spawning at once) and returns its wait status (0: success) and its output.
@discardableResult
func runTool(_ argv: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let dir = TemporaryDirectory()
    let outFD = open(dir.file("out"), O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
    let errFD = open(dir.file("err"), O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
    defer { close(outFD); close(errFD) }
    let started = try ChildSpawn.start(argv, stdin: .null, stdout: .fd(outFD), stderr: .fd(errFD))
    let status = ChildSpawn.wait(started.pid)
    return (status, String(decoding: readBytes(dir.file("out")) ?? [], as: UTF8.self),
            String(decoding: readBytes(dir.file("err")) ?? [], as: UTF8.self))
}

/// `dump SNAPSHOT DIR`: a directory as a POSIX tar stream, read back by GNU tar.
@Suite struct TarDumpTests {
    /// Dumps `components` of `root` into a file and returns its path.
    func dump(_ store: any BlobStore, _ root: BlobID, _ components: [[UInt8]], into path: String) async throws -> TarDump.Summary {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        return try await TarDump.dump(store: store, root: root, path: components, to: fd)
    }

    @Test("a backed-up tree dumped as tar extracts with GNU tar to the same names, contents, modes, mtimes and symlinks; long names use pax")
    func roundTripThroughGNUTar() async throws {
        let dir = TemporaryDirectory()
        let long = String(repeating: "n", count: 120)
        let deep = (0..<12).map { "dir\($0)" }.joined(separator: "/")  // a path of more than 100 bytes
        writeFile(deterministicBytes(300_000, seed: 3), dir.p("src/big.bin"), mode: 0o640)
        writeFile(Array("small\n".utf8), dir.p("src/sub/small.txt"), mode: 0o600)
        writeFile([], dir.p("src/empty"))
        writeFile(Array("deep\n".utf8), dir.p("src/\(deep)/\(long)"))
        writeFile(Array("exec\n".utf8), dir.p("src/sub/run.sh"), mode: 0o755)
        try FileManager.default.createDirectory(atPath: dir.p("src/emptydir"), withIntermediateDirectories: true)
        #expect(symlink("sub/small.txt", dir.p("src/link")) == 0)
        #expect(symlink(String(repeating: "t", count: 150), dir.p("src/longlink")) == 0)
        chmod(dir.p("src/sub"), 0o750)
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, dir.p("src/sub/small.txt"), &times, 0)
        let store = MemoryBlobStore()
        let info = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")]).info

        let tar = dir.file("out.tar")
        let summary = try await dump(store, info.tree, pathComponents(dir.p("src")), into: tar)
        #expect(summary.files == 5 && summary.symlinks == 2)
        #expect(summary.bytes == 300_000 + 6 + 5 + 5)
        let size = try #require(lstatOf(tar)).st_size
        #expect(size % 512 == 0, "whole blocks")

        // tar -t: every name, relative to the snapshot's root.
        let listed = try runTool(["/usr/bin/tar", "-tf", tar])
        #expect(listed.status == 0, "\(listed.stderr)")
        let names = Set(listed.stdout.split(separator: "\n").map(String.init))
        let base = String(dir.p("src").dropFirst())
        #expect(names.contains(base + "/"))
        #expect(names.contains(base + "/sub/small.txt"))
        #expect(names.contains(base + "/\(deep)/\(long)"))
        #expect(names.contains(base + "/emptydir/"))
        #expect(!names.contains { $0.hasPrefix("/") || $0.contains("..") })

        // tar -x: the same tree.
        let out = dir.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extracted = try runTool(["/usr/bin/tar", "-xpf", tar, "-C", out])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        let root = out + "/" + base
        #expect(readBytes(root + "/big.bin") == deterministicBytes(300_000, seed: 3))
        #expect(readBytes(root + "/sub/small.txt") == Array("small\n".utf8))
        #expect(readBytes(root + "/empty") == [])
        #expect(readBytes(root + "/\(deep)/\(long)") == Array("deep\n".utf8))
        #expect(lstatOf(root + "/big.bin").map { $0.st_mode & 0o7777 } == 0o640)
        #expect(lstatOf(root + "/sub/run.sh").map { $0.st_mode & 0o7777 } == 0o755)
        #expect(lstatOf(root + "/sub").map { $0.st_mode & 0o7777 } == 0o750)
        #expect(lstatOf(root + "/sub/small.txt").map { $0.st_mtim.tv_sec } == 1_700_000_000)
        #expect(lstatOf(root + "/emptydir").map { $0.st_mode & S_IFMT } == S_IFDIR)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/link") == "sub/small.txt")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/longlink") == String(repeating: "t", count: 150))
        #expect(lstatOf(root + "/big.bin").map { $0.st_uid } == getuid())

        // The snapshot's root ("/") dumps everything, and a file is refused (the CLI writes files raw).
        let whole = try await dump(store, info.tree, [], into: dir.file("all.tar"))
        #expect(whole.files == 5 && whole.directories > summary.directories)
        await #expect(throws: TreeError.self) { _ = try await dump(store, info.tree, pathComponents(dir.p("src/big.bin")), into: dir.file("f.tar")) }
        await #expect(throws: TreeError.self) { _ = try await dump(store, info.tree, [Array("nowhere".utf8)], into: dir.file("n.tar")) }
    }

    @Test("a long name that is not UTF-8 goes into a pax path record with hdrcharset=BINARY and extracts byte for byte")
    func binaryLongName() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let data = Array("raw".utf8)
        let id = store.idKey.id(of: data)
        _ = try await store.save(.data, id: id, plaintext: data)
        let name = [UInt8](repeating: 0x61, count: 105) + [0xff, 0xfe]
        let sub = try await store.saveTree(try Tree(nodes: [TreeNode(name: name, kind: .file, mode: 0o644, size: 3, content: [id])]))
        let root = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("d".utf8), kind: .directory, mode: 0o755, subtree: sub.id)]))
        let tar = dir.file("out.tar")
        _ = try await dump(store, root.id, [], into: tar)
        // The "d/" header, then the pax header and its records, then the file's header.
        let bytes = try #require(readBytes(tar))
        #expect(bytes[512 + 156] == 0x78)
        let records = Array(bytes[1024..<1536].prefix { $0 != 0 })
        #expect(String(decoding: records, as: UTF8.self).hasPrefix("21 hdrcharset=BINARY\n"))
        #expect(records.split(separator: 0x0a).contains { $0.elementsEqual(Array("119 path=d/".utf8) + name) })
        let out = dir.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extracted = try runTool(["/usr/bin/tar", "-xf", tar, "-C", out])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        let path = Array((out + "/d/").utf8) + name
        let content = withBytePath(path) { p -> [UInt8]? in
            let fd = open(p, O_RDONLY)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 16)
            let n = read(fd, &buffer, 16)
            return n < 0 ? nil : Array(buffer[..<n])
        }
        #expect(content == data)
    }

    @Test("hard links: the first file of a group carries the content, the others are tar hard links to it; GNU tar extracts one inode")
    func hardLinks() async throws {
        let dir = TemporaryDirectory()
        let long = String(repeating: "l", count: 110)  // the first's name is over 100 bytes: a linkpath record
        writeFile(deterministicBytes(200_000, seed: 9), dir.p("src/\(long)/a"), mode: 0o640)
        try FileManager.default.createDirectory(atPath: dir.p("src/z"), withIntermediateDirectories: true)
        #expect(link(dir.p("src/\(long)/a"), dir.p("src/b")) == 0)
        #expect(link(dir.p("src/\(long)/a"), dir.p("src/z/c")) == 0)
        writeFile(Array("alone\n".utf8), dir.p("src/single"))
        let store = MemoryBlobStore()
        let info = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")]).info
        let tar = dir.file("out.tar")
        let summary = try await dump(store, info.tree, pathComponents(dir.p("src")), into: tar)
        #expect(summary.files == 4 && summary.hardLinks == 2)
        #expect(summary.bytes == 200_000 + 6, "the linked content is written once")

        // tar -tv names the link targets: depth first in name order, "b" then "llll…/a" then "z/c";
        // "b" is met first, so it carries the content.
        let base = String(dir.p("src").dropFirst())
        let listed = try runTool(["/usr/bin/tar", "-tvf", tar])
        #expect(listed.status == 0, "\(listed.stderr)")
        let lines = listed.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasSuffix("\(base)/\(long)/a link to \(base)/b") }, "\(lines)")
        #expect(lines.contains { $0.hasSuffix("\(base)/z/c link to \(base)/b") }, "\(lines)")

        let out = dir.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extracted = try runTool(["/usr/bin/tar", "-xpf", tar, "-C", out])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        let root = out + "/" + base
        let b = try #require(lstatOf(root + "/b")), a = try #require(lstatOf(root + "/\(long)/a")), c = try #require(lstatOf(root + "/z/c"))
        #expect(a.st_ino == b.st_ino && c.st_ino == b.st_ino && b.st_nlink == 3)
        #expect(readBytes(root + "/b") == deterministicBytes(200_000, seed: 9))
        #expect(b.st_mode & 0o7777 == 0o640)
        #expect(lstatOf(root + "/single").map { $0.st_nlink } == 1)

        // Dumping only the long directory: its "a" is the group's first there, written with content.
        let part = try await dump(store, info.tree, pathComponents(dir.p("src/\(long)")), into: dir.file("part.tar"))
        #expect(part.files == 1 && part.hardLinks == 0 && part.bytes == 200_000)
    }

    @Test("a forged hard link (same device and inode, other content or size) is written as a file of its own")
    func forgedHardLinkIsAFile() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        func blob(_ bytes: [UInt8]) async throws -> BlobID {
            let id = store.idKey.id(of: bytes)
            _ = try await store.save(.data, id: id, plaintext: bytes)
            return id
        }
        let one = Array("one\n".utf8), two = Array("two!\n".utf8)
        let idOne = try await blob(one), idTwo = try await blob(two)
        func file(_ name: String, _ size: Int, _ id: BlobID) -> TreeNode {
            TreeNode(name: Array(name.utf8), kind: .file, mode: 0o644, size: UInt64(size), inode: 7, device: 1, content: [id], links: 2)
        }
        let sub = try await store.saveTree(try Tree(nodes: [file("a", 4, idOne), file("b", 4, idOne), file("c", 5, idTwo)]))
        let root = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("d".utf8), kind: .directory, mode: 0o755, subtree: sub.id)]))
        let tar = dir.file("out.tar")
        let summary = try await dump(store, root.id, [], into: tar)
        #expect(summary.files == 3 && summary.hardLinks == 1 && summary.bytes == 4 + 5)
        let out = dir.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extracted = try runTool(["/usr/bin/tar", "-xf", tar, "-C", out])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        #expect(lstatOf(out + "/d/a")?.st_ino == lstatOf(out + "/d/b")?.st_ino)
        #expect(lstatOf(out + "/d/c")?.st_ino != lstatOf(out + "/d/a")?.st_ino)
        #expect(readBytes(out + "/d/b") == one && readBytes(out + "/d/c") == two)
    }

    @Test("user xattrs go into SCHILY.xattr records that GNU tar --xattrs restores")
    func xattrs() async throws {
        let dir = TemporaryDirectory()
        writeFile(Array("x".utf8), dir.p("src/f"))
        guard setUserXattr(dir.p("src/f"), "user.comment", Array("hello".utf8)) else {
            Issue.record("the file system of \(dir.p("")) refuses user.* attributes")
            return
        }
        let store = MemoryBlobStore()
        let info = try await Archiver(store: store, options: try options()).backup(paths: [dir.p("src")]).info
        let tar = dir.file("out.tar")
        _ = try await dump(store, info.tree, pathComponents(dir.p("src")), into: tar)
        let out = dir.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extracted = try runTool(["/usr/bin/tar", "--xattrs", "--xattrs-include=user.*", "-xf", tar, "-C", out])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        #expect(getXattr(out + dir.p("src/f"), "user.comment") == Array("hello".utf8))
    }

    @Test("ustar fields that overflow (8 GiB sizes, large uids, old times, long owner names) go into pax records")
    func paxRecords() throws {
        #expect(TarWriter.octal(0o77777777777, width: 12) != nil)
        #expect(TarWriter.octal(1 << 33, width: 12) == nil)
        #expect(TarWriter.paxRecord("path", Array("abc".utf8)) == Array("12 path=abc\n".utf8))
        // The length counts its own digits: 9 bytes of body → "11 k=12345\n"? check by rule.
        for n in [1, 5, 90, 93, 94, 95, 990, 995, 996, 997] {
            let record = TarWriter.paxRecord("k", [UInt8](repeating: 0x61, count: n))
            let digits = record.prefix { $0 != 0x20 }
            #expect(Int(String(decoding: digits, as: UTF8.self)) == record.count, "value of \(n) bytes")
        }
        let dir = TemporaryDirectory()
        let path = dir.file("h.tar")
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var writer = TarWriter(fd: fd)
        let node = TreeNode(name: Array("big".utf8), kind: .file, mode: 0o4755, uid: 3_000_000, gid: 5, user: Array(String(repeating: "u", count: 40).utf8),
                            mtimeNanos: -5_000_000_000, size: 9 << 30)
        try writer.header(for: node, name: Array("big".utf8), type: .file, size: 9 << 30)
        try writer.finish()
        close(fd)
        let bytes = try #require(readBytes(path))
        // A pax header ('x'), its records, then the ustar header of the file.
        #expect(bytes[156] == 0x78)
        let records = String(decoding: bytes[512..<1024].prefix { $0 != 0 }, as: UTF8.self)
        #expect(records.contains(" size=\(9 << 30)\n"))
        #expect(records.contains(" uid=3000000\n"))
        #expect(records.contains(" uname=\(String(repeating: "u", count: 40))\n"))
        #expect(records.contains(" mtime=-5\n"))
        let header = Array(bytes[1024..<1536])
        #expect(header[156] == 0x30)
        #expect(String(decoding: header[100..<107], as: UTF8.self) == "0000755", "set-user-id is not passed on")
        #expect(String(decoding: header[257..<262], as: UTF8.self) == "ustar")
        // The checksum: the sum of the header's bytes with the checksum field as spaces.
        var blank = header
        for i in 148..<156 { blank[i] = 0x20 }
        #expect(Int(String(decoding: header[148..<154], as: UTF8.self), radix: 8) == blank.reduce(0) { $0 + Int($1) })
        let listed = try runTool(["/usr/bin/tar", "-tvf", path])
        #expect(listed.stdout.contains("big"), "\(listed.stderr)")
    }

    @Test("content that does not add up to the recorded size, and a missing blob, fail the dump")
    func damagedContentFails() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let data = Array("four".utf8)
        let id = store.idKey.id(of: data)
        _ = try await store.save(.data, id: id, plaintext: data)
        let short = try await store.saveTree(try Tree(nodes: [TreeNode(name: [0x66], kind: .file, size: 10, content: [id])]))
        let error = await #expect(throws: TreeError.self) { _ = try await dump(store, short.id, [], into: dir.file("a.tar")) }
        #expect(error?.category == .integrity)
        let missing = try await store.saveTree(try Tree(nodes: [TreeNode(name: [0x66], kind: .file, size: 4,
                                                                          content: [BlobID(bytes: [UInt8](repeating: 3, count: 32))])]))
        await #expect(throws: (any Error).self) { _ = try await dump(store, missing.id, [], into: dir.file("b.tar")) }
        // A forged tree with a name "..": refused by the tree reader before any entry is written.
        var forged = Tree.magic + [0, 0, 0, 1, 0, 2, 0x2e, 0x2e, 0x02]
        forged += [0, 0, 0x01, 0xed] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 0]
        forged += [UInt8](repeating: 0, count: 40) + [UInt8](repeating: 5, count: 32)
        let hostile = store.putRaw(.tree, forged)
        await #expect(throws: TreeError.self) { _ = try await dump(store, hostile, [], into: dir.file("c.tar")) }
        #expect(lstatOf(dir.file("c.tar"))?.st_size == 0, "nothing written")
    }
}
