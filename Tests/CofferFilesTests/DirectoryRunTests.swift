import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
import Testing

@Suite struct DirectoryRuns {
    func makeTree(files: Int) throws -> String {
        let root = NSTemporaryDirectory() + "coffer-run-\(UUID().uuidString)"
        for i in 0..<files {
            let path = "\(root)/d\(i % 3)/f\(i)"
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try Data(repeating: UInt8(i), count: i * 1000).write(to: URL(fileURLWithPath: path))
        }
        return root
    }

    @Test("a run over a directory wraps the key once: one scrypt derivation to encrypt, one to decrypt")
    func scryptOncePerRun() throws {
        let root = try makeTree(files: 12)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let writer = try Passphrase(Array("run pw".utf8), workFactor: 10)
        let encryptor = try CofferEncryptor(recipients: [writer])
        let run = DirectoryRun(threads: 3, removeOriginal: true)
        let encrypted = try run.encrypt(root: root, encryptor: encryptor, parameters: HeaderParameters(chunkSize: 4096))
        #expect(encrypted.completed.count == 12)
        #expect(encrypted.failures.isEmpty)
        #expect(writer.derivations == 1)

        let reader = try Passphrase(Array("run pw".utf8), workFactor: 10)
        let decrypted = try run.decrypt(root: root, identities: [reader])
        #expect(decrypted.completed.count == 12)
        #expect(decrypted.failures.isEmpty)
        #expect(reader.derivations == 1)
        for i in 0..<12 {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(root)/d\(i % 3)/f\(i)"))
            #expect(data == Data(repeating: UInt8(i), count: i * 1000))
        }
    }

    @Test("a wrong key fails every file, removes nothing, and leaves no output")
    func wrongKey() throws {
        let root = try makeTree(files: 5)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let run = DirectoryRun(threads: 2, removeOriginal: true)
        _ = try run.encrypt(root: root, encryptor: CofferEncryptor(recipients: [SymmetricKeyFile.generate()]),
                            parameters: HeaderParameters())
        let report = try run.decrypt(root: root, identities: [SymmetricKeyFile.generate()])
        #expect(report.completed.isEmpty)
        #expect(report.failures.count == 5)
        #expect(report.failures.allSatisfy { $0.error.category == .key })
        let names = try FileManager.default.subpathsOfDirectory(atPath: root).filter { !$0.hasPrefix("d") || $0.contains("/") }
        #expect(names.allSatisfy { $0.hasSuffix(".cof") }, "\(names)")
    }
}
