import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

private typealias SetXattr = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32
private typealias GetXattr = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int) -> Int

private func setXattr(_ path: String, _ name: String, _ value: String) -> Bool {
    guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "lsetxattr") else { return false }
    let f = unsafeBitCast(p, to: SetXattr.self)
    let bytes = Array(value.utf8)
    return bytes.withUnsafeBytes { f(path, name, $0.baseAddress, $0.count, 0) } == 0
}

private func getXattr(_ path: String, _ name: String) -> String? {
    guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "lgetxattr") else { return nil }
    let f = unsafeBitCast(p, to: GetXattr.self)
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = buffer.withUnsafeMutableBytes { f(path, name, $0.baseAddress, $0.count) }
    return n < 0 ? nil : String(decoding: buffer[..<n], as: UTF8.self)
}

/// `backup`/`restore`/`ls` with extended attributes and hard links, through the real binary.
@Suite struct RepoXattrLinkTests {
    @Test("xattrs and hard links: backup records them, ls --json shows them, restore sets them; --no-xattrs on both sides")
    func xattrsAndHardLinks() throws {
        let scratch = Scratch()
        let key = try scratch.keygen()
        let env = ["COFFER_REPOSITORY": scratch.file("repo")]
        func run(_ args: [String]) throws -> RunResult { try coffer([args[0], "--key-file", key] + args.dropFirst(), environment: env) }
        let source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
        let file = try scratch.write(Array("tagged\n".utf8), "src/tagged.txt", mode: 0o644)
        guard setXattr(file, "user.origin", "camera-7") else {
            Issue.record("the file system of \(scratch.path) refuses user.* attributes; tmpfs and ext4 allow them")
            return
        }
        _ = try scratch.write(Array("linked\n".utf8), "src/one")
        #expect(link(scratch.file("src/one"), scratch.file("src/two")) == 0)
        #expect(try run(["init"]).status == 0)
        let backup = try run(["backup", source])
        #expect(backup.status == 0, "\(backup.stderr)")

        let ls = try run(["ls", "--json", "latest"])
        #expect(ls.status == 0, "\(ls.stderr)")
        let nodes = ls.stdoutText.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let tagged = nodes.first { ($0["path"] as? String)?.hasSuffix("/tagged.txt") == true }
        #expect(tagged?["xattrs"] as? [String] == ["user.origin"])
        #expect(nodes.first { ($0["path"] as? String)?.hasSuffix("/two") == true }?["links"] as? Int == 2)
        #expect(!ls.stdoutText.contains("camera-7"), "ls shows names, not values")

        let restore = try run(["restore", "--json", "latest", "--target", scratch.file("out")])
        #expect(restore.status == 0, "\(restore.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(restore.stdout)) as? [String: Any])
        #expect(summary["hard_links_restored"] as? Int == 1)
        #expect(summary["xattrs_restored"] as? Int == 1)
        let out = scratch.file("out") + source
        #expect(getXattr(out + "/tagged.txt", "user.origin") == "camera-7")
        var a = stat(), b = stat()
        #expect(lstat(out + "/one", &a) == 0 && lstat(out + "/two", &b) == 0)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2)

        let plain = try run(["restore", "--no-xattrs", "latest", "--target", scratch.file("plain")])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(getXattr(scratch.file("plain") + source + "/tagged.txt", "user.origin") == nil)
        let both = try run(["restore", "--no-xattrs", "--all-xattrs", "latest", "--target", scratch.file("both")])
        #expect(both.status == Exit.usage)

        let bare = try run(["backup", "--no-xattrs", source])
        #expect(bare.status == 0, "\(bare.stderr)")
        let bareLs = try run(["ls", "--json", "latest"])
        #expect(!bareLs.stdoutText.contains("user.origin"))
    }
}
