@testable import CofferDatabase
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// ``WorkDirectory/remove(_:)``: what a throwaway server's teardown uses to remove its directory.
@Suite struct WorkDirectoryTests {
    static func makeTree(_ root: String, files: Int) throws {
        for d in 0..<8 {
            let dir = "\(root)/restore/base/d\(d)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for f in 0..<files { FileManager.default.createFile(atPath: "\(dir)/f\(f)", contents: Data(repeating: 1, count: 64)) }
        }
    }

    @Test("removes nested trees, names that are not UTF-8, and symbolic links without following them")
    func removesWithoutFollowing() throws {
        let base = NSTemporaryDirectory() + "coffer-wd-\(UInt32.random(in: 0...UInt32.max))"
        let outside = base + "-outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        FileManager.default.createFile(atPath: outside + "/keep", contents: Data("keep".utf8))
        try Self.makeTree(base, files: 3)
        #expect(symlink(outside, base + "/restore/link-to-outside") == 0)
        #expect(symlink(outside + "/keep", base + "/restore/base/file-link") == 0)
        let odd: [CChar] = [0x6E, CChar(bitPattern: 0xFF), 0x61, 0x6D, 0x65, 0]  // "n\u{FF}ame": not UTF-8
        let fd = open(base + "/restore", O_RDONLY | O_DIRECTORY)
        #expect(openat(fd, odd, O_CREAT | O_WRONLY, 0o600) >= 0)
        close(fd)
        WorkDirectory.remove(base)
        #expect(!FileManager.default.fileExists(atPath: base))
        #expect(FileManager.default.contents(atPath: outside + "/keep") == Data("keep".utf8))
        WorkDirectory.remove(base)  // a missing path is fine
    }

    @Test("two removers of one tree at once (a signal handler's teardown and the restore's cleanup) leave nothing behind")
    func concurrentRemovers() async throws {
        for round in 0..<3 {
            let base = NSTemporaryDirectory() + "coffer-wd-race-\(round)-\(UInt32.random(in: 0...UInt32.max))"
            try Self.makeTree(base, files: 40)
            await withTaskGroup(of: Void.self) { group in
                group.addTask { WorkDirectory.remove(base + "/restore") }
                group.addTask { WorkDirectory.remove(base) }
                group.addTask { WorkDirectory.remove(base + "/restore/base") }
            }
            #expect(!FileManager.default.fileExists(atPath: base), "round \(round): \(String(describing: try? FileManager.default.subpathsOfDirectory(atPath: base)))")
        }
    }
}
