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

    func files(_ root: String) throws -> [String] {
        try FileManager.default.subpathsOfDirectory(atPath: root).filter { !$0.hasPrefix("d") || $0.contains("/") }.sorted()
    }

    @Test("resuming an interrupted encryption: NAME and NAME.cof both present, NAME removed only once NAME.cof holds its content (one scrypt for the earlier run)")
    func resumeEncryption() throws {
        let root = try makeTree(files: 6)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let writer = try Passphrase(Array("run pw".utf8), workFactor: 10)
        // The earlier run, killed before removing the originals: both files of every pair exist.
        let first = try DirectoryRun(threads: 2, removeOriginal: false)
            .encrypt(root: root, encryptor: CofferEncryptor(recipients: [writer]), parameters: HeaderParameters(chunkSize: 4096))
        #expect(first.completed.count == 6)
        let earlier = try Data(contentsOf: URL(fileURLWithPath: "\(root)/d1/f4.cof"))
        // d2/f5 changed since: its .cof no longer holds its content.
        try Data("changed".utf8).write(to: URL(fileURLWithPath: "\(root)/d2/f5"))

        let resumer = try Passphrase(Array("run pw".utf8), workFactor: 10)
        let report = try DirectoryRun(threads: 2, removeOriginal: true)
            .encrypt(root: root, encryptor: CofferEncryptor(recipients: [resumer]), parameters: HeaderParameters(chunkSize: 4096),
                     identities: [resumer])
        #expect(report.completed.count == 5)
        #expect(report.failures.map(\.path) == ["d2/f5"])
        #expect(report.failures.first.map { $0.error.category } == .io)
        #expect("\(report.failures.first!.error)".contains("holds other data"))
        // One derivation to wrap this run's key, one to unwrap the earlier run's.
        #expect(resumer.derivations == 2)
        #expect(try files(root) == ["d0/f0.cof", "d0/f3.cof", "d1/f1.cof", "d1/f4.cof", "d2/f2.cof", "d2/f5", "d2/f5.cof"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(root)/d1/f4.cof")) == earlier)

        // Without a key that opens the earlier run's files, nothing is removed: "already exists".
        try Data("again".utf8).write(to: URL(fileURLWithPath: "\(root)/d0/f0"))
        let stranger = try DirectoryRun(threads: 1, removeOriginal: true)
            .encrypt(root: root, encryptor: CofferEncryptor(recipients: [SymmetricKeyFile.generate()]), parameters: HeaderParameters(),
                     identities: [SymmetricKeyFile.generate()])
        #expect(stranger.failures.contains { failure in
            guard failure.path == "d0/f0", case .alreadyExists? = failure.error as? FileError else { return false }
            return true
        })
        #expect(FileManager.default.fileExists(atPath: "\(root)/d0/f0"))
    }

    @Test("resuming an interrupted decryption: NAME.cof removed only when NAME holds what it decrypts to")
    func resumeDecryption() throws {
        let root = try makeTree(files: 4)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let key = SymmetricKeyFile.generate()
        _ = try DirectoryRun(threads: 1, removeOriginal: false)
            .encrypt(root: root, encryptor: CofferEncryptor(recipients: [key]), parameters: HeaderParameters())
        try Data("other".utf8).write(to: URL(fileURLWithPath: "\(root)/d1/f1"))
        let report = try DirectoryRun(threads: 1, removeOriginal: true).decrypt(root: root, identities: [key])
        #expect(report.completed.count == 3)
        #expect(report.failures.map(\.path) == ["d1/f1.cof"])
        #expect(try files(root) == ["d0/f0", "d0/f3", "d1/f1", "d1/f1.cof", "d2/f2"])
        // Without --remove-original an existing output is still refused.
        let kept = try DirectoryRun(threads: 1, removeOriginal: false).decrypt(root: root, identities: [key])
        #expect(kept.failures.map(\.path) == ["d1/f1.cof"])
        #expect("\(kept.failures.first!.error)".hasSuffix("it already exists"))
    }

    @Test("keys that apply only to some headers are made only for those (a passphrase prompt, KMS)")
    func keyCandidates() throws {
        let key = SymmetricKeyFile.generate()
        let made = LockedCounter()
        let candidates: [KeyCandidate] = [
            .given(key),
            .whenHeaderHas(stanzaTypes: ["scrypt"]) { made.increment(); return try Passphrase(Array("pw".utf8), workFactor: 10) },
        ]
        let fileKey = FileKey.random()
        let plain = try Header.sealed(parameters: HeaderParameters(), stanzas: try key.wrap(fileKey: fileKey.bytes), fileKey: fileKey)
        #expect(try KeyCandidate.identities(candidates, for: plain).map(\.label) == [key.label])
        #expect(made.value == 0)
        let withPassphrase = try Header.sealed(parameters: HeaderParameters(),
                                               stanzas: try key.wrap(fileKey: fileKey.bytes) + Passphrase(Array("pw".utf8), workFactor: 10).wrap(fileKey: fileKey.bytes),
                                               fileKey: fileKey)
        #expect(try KeyCandidate.identities(candidates, for: withPassphrase).count == 2)
        #expect(made.value == 1)
    }

    @Test("file errors name no command-line flag and keep their exit classes")
    func fileErrors() {
        let errors: [FileError] = [
            .alreadyExists(path: "p"), .notADirectory(path: "p"), .changedWhileReading(path: "p"),
            .notAsExpected(path: "p", reason: "r"), .existingOutputDiffers(path: "p", original: "o"),
            .toolUnavailable(tool: "zstd", reason: "r"), .wrongName(path: "p", expectedSuffix: ".age"),
        ]
        for error in errors { #expect(!error.description.contains("--"), "\(error)") }
        #expect(errors.map(\.category) == [.io, .io, .io, .io, .io, .key, .usage])
    }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
