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

    static func sums(of root: String) throws -> String {
        let files = try FileManager.default.subpathsOfDirectory(atPath: root).filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: root + "/" + $0, isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
        return try files.map { path in
            let data = try Data(contentsOf: URL(fileURLWithPath: root + "/" + path))
            return Hex.encode(Array(SHA256.hash(data: data))) + "  repo-v1/" + path
        }.joined(separator: "\n") + "\n"
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
        try Self.sums(of: Self.repository).write(toFile: Self.directory + "/SHA256SUMS", atomically: true, encoding: .utf8)
        try (Self.key.textEncoding(created: Self.created)).write(toFile: Self.directory + "/repo-v1.key", atomically: true, encoding: .utf8)
    }

    @Test("the checked-in repository is byte-identical to its SHA256SUMS and reads back: config, key, blobs, snapshot, check",
          .enabled(if: FileManager.default.fileExists(atPath: RepositoryVectors.directory + "/SHA256SUMS")))
    func read() async throws {
        let sums = try String(contentsOfFile: Self.directory + "/SHA256SUMS", encoding: .utf8)
        #expect(try Self.sums(of: Self.repository) == sums, "the vector files changed")
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
