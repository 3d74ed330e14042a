import CofferFormat
import CofferKeys
@testable import CofferRepository
import Crypto
import Foundation
import Testing

/// Snapshot signatures (docs/REPOSITORY.md, "Snapshot signatures"), the restore that goes on past
/// failing entries, tree-walk limits and `data_added_packed`.
@Suite struct SnapshotSignatureTests {
    static func info(_ tree: BlobID, time: Double) -> SnapshotInfo {
        SnapshotInfo(time: Date(timeIntervalSince1970: time), tree: tree, paths: ["/x"], hostname: "h", username: "u",
                     tags: [], parent: nil, programVersion: "test", summary: .init())
    }

    static func emptyTree(_ repo: Repository) async throws -> BlobID {
        let saved = try await repo.saveTree(try Tree(nodes: []))
        try await repo.flush()
        return saved.id
    }

    @Test("a signed snapshot verifies with its signer; unsigned and other signers are refused (key), and the listing names who signed")
    func signedUnsignedOtherSigner() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await Self.emptyTree(repo)
        let producer = Ed25519Signer(), stranger = Ed25519Signer()
        let signed = try await repo.saveSnapshot(Self.info(tree, time: 1000), signer: producer)
        let unsigned = try await repo.saveSnapshot(Self.info(tree, time: 2000))
        let other = try await repo.saveSnapshot(Self.info(tree, time: 3000), signer: stranger)

        let reopened = try await t.open()
        // Without verifiers: every snapshot loads; the trailer's signers are reported, unchecked.
        let plain = try await reopened.listSnapshots()
        #expect(plain.count == 3)
        #expect(plain.first { $0.id == signed }?.signature.signers == [producer.verifier.label])
        #expect(plain.first { $0.id == unsigned }?.signature.signers == [])
        #expect(plain.allSatisfy { $0.signature.verifiedBy == nil && $0.signature.refusal == nil })

        let checked = try await reopened.listSnapshots(verifiers: [producer.verifier])
        let byID = Dictionary(uniqueKeysWithValues: checked.map { ($0.id, $0) })
        #expect(byID[signed]?.signature.verifiedBy == producer.verifier.label)
        #expect(byID[signed]?.signature.refusal == nil)
        #expect(byID[unsigned]?.signature.refusal == .notAccepted(.snapshot(unsigned), found: [], accepted: [producer.verifier.label]))
        #expect(byID[other]?.signature.refusal == .notAccepted(.snapshot(other), found: [stranger.verifier.label], accepted: [producer.verifier.label]))
        #expect(byID[unsigned]?.signature.refusal?.category == .key)
        // Any one of several accepted signers will do.
        let either = try await reopened.listSnapshots(verifiers: [stranger.verifier, producer.verifier])
        #expect(either.filter { $0.signature.verifiedBy != nil }.count == 2)

        // Selection: "latest" is the newest accepted snapshot; the newer refused ones are reported.
        let records = checked.map { SnapshotRecord(id: $0.id, info: $0.info, signature: $0.signature) }
        var skipped: [SnapshotRecord] = []
        let latest = try SnapshotSelection.resolveAccepted("latest", in: records, skipped: &skipped)
        #expect(latest.id == signed)
        #expect(Set(skipped.map(\.id)) == [unsigned, other])
        #expect(throws: ObjectSignatureError.self) { try SnapshotSelection.resolveAccepted(String(unsigned.prefix(12)), in: records, skipped: &skipped) }
        #expect(try SnapshotSelection.resolveAccepted(String(signed.prefix(12)), in: records, skipped: &skipped).id == signed)
    }

    @Test("a signature byte or a payload byte changed after signing: the snapshot is refused as invalid (integrity)")
    func tamperedSignatureAndPayload() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let tree = try await Self.emptyTree(repo)
        let producer = Ed25519Signer()
        let id = try await repo.saveSnapshot(Self.info(tree, time: 1000), signer: producer)
        let path = t.files(.snapshots).first { $0.hasSuffix(id) }!
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        // The trailer is the last 2 × (8 + 64) bytes: the first slot's signature starts 8 bytes in.
        try flipByte(path, at: -(2 * 72) + 8 + 5)
        let tampered = try await t.open().loadSnapshot(id, verifiers: [producer.verifier])
        #expect(tampered.signature.refusal == .invalid(.snapshot(id), signer: producer.verifier.label))
        #expect(tampered.signature.refusal?.category == .integrity)
        // A zeroed signature is structural damage, found without any public key.
        var zeroed = [UInt8](original)
        for i in (zeroed.count - 144 + 8)..<(zeroed.count - 72) { zeroed[i] = 0 }
        try Data(zeroed).write(to: URL(fileURLWithPath: path))
        await #expect(throws: RepositoryError.self) { _ = try await t.open().loadSnapshot(id) }
        // Stripping the trailer breaks the layout the authenticated header declares.
        try Data(original.dropLast(144)).write(to: URL(fileURLWithPath: path))
        await #expect(throws: RepositoryError.self) { _ = try await t.open().loadSnapshot(id) }
        // Restored: verifies again.
        try original.write(to: URL(fileURLWithPath: path))
        #expect(try await t.open().loadSnapshot(id, verifiers: [producer.verifier]).signature.verifiedBy == producer.verifier.label)
    }

    @Test("a writer key signs the snapshots it writes, and a full key verifies them")
    func writerSigns() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let writer = try await Repository.open(storage: try LocalStorage(path: t.path),
                                               writerKey: try WriterKeyFile.parse(try repo.makeWriterKey().encoded()))
        let saved = try await writer.saveTree(try Tree(nodes: []))
        try await writer.flush()
        let producer = Ed25519Signer()
        let id = try await writer.saveSnapshot(Self.info(saved.id, time: 5), signer: producer)
        #expect(try await t.open().loadSnapshot(id, verifiers: [producer.verifier]).signature.verifiedBy != nil)
    }

    // MARK: Restore goes on past failures; limits; packed size

    @Test("restore goes on past a file with a missing blob, a damaged subtree and a size mismatch, restores the rest and reports each failure")
    func restoreKeepsGoing() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        func data(_ text: String) async throws -> BlobID {
            let bytes = Array(text.utf8)
            let id = store.idKey.id(of: bytes)
            _ = try await store.save(.data, id: id, plaintext: bytes)
            return id
        }
        let good = try await data("good"), other = try await data("other")
        let missing = store.idKey.id(of: Array("never stored".utf8))
        let missingTree = store.idKey.id(of: Array("no such tree".utf8))
        let sub = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("inner".utf8), kind: .file, size: 5, content: [other])]))
        let root = try await store.saveTree(try Tree(nodes: [
            TreeNode(name: Array("a".utf8), kind: .file, size: 4, content: [good]),
            TreeNode(name: Array("b-missing".utf8), kind: .file, size: 12, content: [missing]),
            TreeNode(name: Array("c-short".utf8), kind: .file, size: 40, content: [good]),
            TreeNode(name: Array("d".utf8), kind: .directory, subtree: sub.id),
            TreeNode(name: Array("e-damaged".utf8), kind: .directory, subtree: missingTree),
            TreeNode(name: Array("z".utf8), kind: .file, size: 5, content: [other]),
        ]))
        let error = await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).restore(root: root.id, target: dir.p("out"))
        }
        guard case .restoreIncomplete(let result) = error else { Issue.record("not an incomplete restore: \(String(describing: error))"); return }
        #expect(result.failures.map(\.path) == ["/b-missing", "/c-short", "/e-damaged"])
        #expect(result.files == 3)
        #expect(readBytes(dir.p("out/a")) == Array("good".utf8))
        #expect(readBytes(dir.p("out/z")) == Array("other".utf8))
        #expect(readBytes(dir.p("out/d/inner")) == Array("other".utf8))
        // Nothing under a failed file's name, and no temporary left.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.p("out")).sorted() == ["a", "d", "z"])
        #expect(error?.category == .integrity)
    }

    @Test("a tree that names one subtree many times (billions of entries) or claims exabytes is refused before anything is written")
    func walkLimits() async throws {
        let dir = TemporaryDirectory()
        let store = MemoryBlobStore()
        let bytes = Array("x".utf8)
        let blob = store.idKey.id(of: bytes)
        _ = try await store.save(.data, id: blob, plaintext: bytes)
        // Level 0: 100 one-byte files; each level above: 100 directories naming the level below.
        var level = try await store.saveTree(try Tree(nodes: (0..<100).map {
            TreeNode(name: Array("f\($0)".utf8), kind: .file, size: 1, content: [blob])
        })).id
        for _ in 0..<5 {
            let below = level
            level = try await store.saveTree(try Tree(nodes: (0..<100).map {
                TreeNode(name: Array("d\($0)".utf8), kind: .directory, subtree: below)
            })).id
        }
        let bomb = level
        let empty = try await store.saveTree(try Tree(nodes: [])).id
        #expect(TreeWalkLimits().maxEntries == 20_000_000)
        var small = TreeWalkLimits(); small.maxEntries = 1000
        var restoreOptions = RestoreOptions(); restoreOptions.limits = small
        await #expect(throws: TreeError.limitExceeded("the snapshot's trees hold more than 1000 entries")) {
            _ = try await Restorer(store: store, options: restoreOptions).restore(root: bomb, target: dir.p("out"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.p("out")))
        await #expect(throws: TreeError.self) {
            try await TreeWalk.list(store: store, root: bomb, limits: small) { _, _ in }
        }
        await #expect(throws: TreeError.self) {
            _ = try await TreeWalk.diff(store: store, from: bomb, to: empty, limits: small)
        }
        // Two files claiming 2^63 bytes each: the sum overflows; refused before writing.
        let huge = try await store.saveTree(try Tree(nodes: [
            TreeNode(name: Array("h1".utf8), kind: .file, size: 1 << 63, content: [blob]),
            TreeNode(name: Array("h2".utf8), kind: .file, size: 1 << 63, content: [blob]),
        ]))
        await #expect(throws: TreeError.self) {
            _ = try await Restorer(store: store).restore(root: huge.id, target: dir.p("out2"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.p("out2")))
    }

    @Test("data_added_packed is the stored size of the added data: smaller than data_added for text, about equal for random bytes")
    func dataAddedPacked() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let dir = TemporaryDirectory()
        writeFile(Array(String(repeating: "compressible line of text\n", count: 40_000).utf8), dir.p("src/text"))
        let text = try await Archiver(store: repo, options: try options()).backup(paths: [dir.p("src")])
        let s = text.info.summary
        #expect(s.dataAddedPacked > 0 && s.dataAddedPacked < s.dataAdded / 4, "\(s.dataAddedPacked) of \(s.dataAdded)")
        var random = [UInt8](repeating: 0, count: 300_000)
        for i in random.indices { random[i] = UInt8.random(in: 0...255) }
        writeFile(random, dir.p("src2/random"))
        let raw = try await Archiver(store: repo, options: try options()).backup(paths: [dir.p("src2")])
        let r = raw.info.summary
        #expect(r.dataAdded == 300_000)
        #expect(r.dataAddedPacked >= r.dataAdded && r.dataAddedPacked <= r.dataAdded + r.dataAdded / 1000, "\(r.dataAddedPacked)")
        // Nothing new: nothing packed.
        let again = try await Archiver(store: repo, options: try options()).backup(paths: [dir.p("src2")])
        #expect(again.info.summary.dataAddedPacked == 0)
    }
}
