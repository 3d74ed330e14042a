import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct DirectoryTrees {
    func scratch() throws -> String {
        let root = NSTemporaryDirectory() + "coffer-tree-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: "\(root)/tree/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/outside", withIntermediateDirectories: true)
        try Data("inside".utf8).write(to: URL(fileURLWithPath: "\(root)/tree/sub/f"))
        try Data("victim".utf8).write(to: URL(fileURLWithPath: "\(root)/outside/f"))
        return root
    }

    @Test("a directory swapped for a symbolic link after listing is not followed")
    func swappedDirectory() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var skipped: [(path: String, reason: String)] = []
        let tree = try DirectoryTree.list("\(root)/tree", skipped: &skipped)
        let entry = try #require(tree.entries.first { $0.relative == "sub/f" })
        #expect(rename("\(root)/tree/sub", "\(root)/moved") == 0)
        #expect(symlink("../outside", "\(root)/tree/sub") == 0)
        #expect(throws: CofferError.self) { _ = try tree.directory(of: entry) }
        // Another real directory in its place is refused too: it is not the directory listed.
        unlink("\(root)/tree/sub")
        try FileManager.default.createDirectory(atPath: "\(root)/tree/sub", withIntermediateDirectories: false)
        #expect(throws: CofferError.self) { _ = try tree.directory(of: entry) }
    }

    @Test("symbolic links in a tree are listed as skipped, never followed")
    func linksSkipped() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        symlink("../outside", "\(root)/tree/link")
        symlink("../../outside/f", "\(root)/tree/sub/filelink")
        var skipped: [(path: String, reason: String)] = []
        let tree = try DirectoryTree.list("\(root)/tree", skipped: &skipped)
        #expect(tree.entries.map(\.relative) == ["sub/f"])
        #expect(Set(skipped.map(\.path)) == ["link", "sub/filelink"])
    }

    @Test("an original is removed only while its name still holds the file that was read")
    func removeOnlyTheFileRead() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = try DirectoryHandle.open(path: "\(root)/tree/sub")
        let readIdentity = try directory.identity(of: "f")
        // The name now holds another file: it stays.
        #expect(rename("\(root)/tree/sub/f", "\(root)/tree/sub/old") == 0)
        try Data("replacement".utf8).write(to: URL(fileURLWithPath: "\(root)/tree/sub/f"))
        #expect(throws: CofferError.self) { try directory.removeOriginal("f", expected: readIdentity) }
        #expect(FileManager.default.fileExists(atPath: "\(root)/tree/sub/f"))
        try directory.removeOriginal("old", expected: readIdentity)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/tree/sub/old"))
    }

    @Test("new outputs never get setuid, setgid or sticky bits, and lose the umask's bits")
    func outputModes() {
        let umask = OutputMode.umask
        #expect(OutputMode.forNewFile(from: 0o7777) == 0o777 & ~umask)
        #expect(OutputMode.forNewFile(from: 0o4755) & 0o7000 == 0)
        #expect(OutputMode.forReplacement(of: 0o104640) == 0o640)
    }

    @Test("a file of a run whose read-back differs from what was encrypted is never committed")
    func verifyWrittenRefusesOtherPlaintext() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let encryptor = try CofferEncryptor(recipients: [SymmetricKeyFile.generate()])
        let output = try AtomicOutputFile(path: "\(root)/tree/new.cof")
        let plaintext = Array("what was meant".utf8)
        let source = try ByteSource.open(path: "\(root)/tree/sub/f")  // "inside", not `plaintext`
        defer { source.close() }
        #expect(throws: FileError.self) {
            try output.complete { sink in
                let bytes = try encryptor.encrypt(from: source, to: sink, parameters: HeaderParameters(), engine: StreamEngine(threads: 1))
                try output.verifyWritten(fileKey: encryptor.fileKey, objectName: [], expectedBytes: bytes,
                                         expectedDigest: PlaintextDigest(bytes: bytes, sha256: Array(plaintext.prefix(32))), threads: 1)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: "\(root)/tree/new.cof"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/tree").sorted() == ["sub"])
    }
}
