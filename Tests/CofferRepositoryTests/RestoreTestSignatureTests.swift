import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// Signed restore-test results (docs/REPOSITORY.md, "Restore-test results", "Signed results"):
/// sealed as snapshot signatures are, counted under `--verify-signer` only when an accepted
/// signature verifies, and bound to the snapshot they name.
@Suite struct RestoreTestSignatureTests {
    static func snapshot(_ repo: Repository, time: Double) async throws -> String {
        let saved = try await repo.saveTree(try Tree(nodes: []))
        try await repo.flush()
        return try await repo.saveSnapshot(SnapshotSignatureTests.info(saved.id, time: time))
    }

    static func result(_ snapshot: String, passed: Bool, time: Double) -> RestoreTestResult {
        var r = RestoreTestResult(snapshot: snapshot, engine: "postgresql", passed: passed, time: Date(timeIntervalSince1970: time),
                                  hostname: "tester", programVersion: "test")
        r.databases = ["shop"]
        r.tablesCompared = 3
        return r
    }

    @Test("a signed result verifies with its signer; unsigned and other signers' results do not count, so a forged newer 'passed' never shows")
    func signedUnsignedWrongSigner() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let id = try await Self.snapshot(repo, time: 100)
        let tester = Ed25519Signer(), stranger = Ed25519Signer()
        let signed = try await repo.saveRestoreTest(Self.result(id, passed: false, time: 1000), signer: tester)
        let unsigned = try await repo.saveRestoreTest(Self.result(id, passed: true, time: 2000))
        let other = try await repo.saveRestoreTest(Self.result(id, passed: true, time: 3000), signer: stranger)

        let reopened = try await t.open()
        // Without verifiers: every result counts, the claimed signers are reported, unchecked.
        let all = try await reopened.listRestoreTests()
        #expect(all.map(\.object) == [signed, unsigned, other])
        #expect(all[0].signature.signers == [tester.verifier.label])
        #expect(all[1].signature.signers == [])
        #expect(all.allSatisfy { $0.signature.verifiedBy == nil && $0.signature.refusal == nil })
        #expect(try await reopened.latestRestoreTests(verifiers: [])[id]?.object == other)
        #expect(try await reopened.latestRestoreTests()[id]?.passed == true)

        // With the tester's key: only its (failed) result counts; the newer "passed" ones are passed over.
        let checked = try await reopened.listRestoreTests(verifiers: [tester.verifier])
        let byName = Dictionary(uniqueKeysWithValues: checked.map { ($0.object, $0) })
        #expect(byName[signed]?.signature.verifiedBy == tester.verifier.label)
        #expect(byName[signed]?.accepted == true)
        #expect(byName[unsigned]?.signature.refusal == .notAccepted(.restoreTest("snapshots/\(unsigned)"), found: [], accepted: [tester.verifier.label]))
        #expect(byName[other]?.signature.refusal == .notAccepted(.restoreTest("snapshots/\(other)"), found: [stranger.verifier.label], accepted: [tester.verifier.label]))
        #expect(byName[unsigned]?.signature.refusal?.category == .key)
        let latest = try await reopened.latestRestoreTests(verifiers: [tester.verifier])
        #expect(latest[id]?.object == signed)
        #expect(latest[id]?.result.passed == false)
        #expect(latest[id]?.signature.verifiedBy == tester.verifier.label)
        // Only the stranger's key accepted: its result, none of the others.
        #expect(try await reopened.latestRestoreTests(verifiers: [stranger.verifier])[id]?.object == other)
        // A key that signed nothing: no result shows at all.
        #expect(try await reopened.latestRestoreTests(verifiers: [Ed25519Signer().verifier])[id] == nil)
        // Signed results are still results: check accepts them, forget removes them.
        #expect(try await reopened.checkRestoreTests().errors.isEmpty)
    }

    @Test("a signature byte changed after signing: refused as invalid (integrity) and passed over; a zeroed signature is damage for every reader")
    func tamperedSignature() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let id = try await Self.snapshot(repo, time: 100)
        let tester = Ed25519Signer()
        let name = try await repo.saveRestoreTest(Self.result(id, passed: true, time: 1000), signer: tester)
        let path = try #require(t.files(.snapshots).first { $0.hasSuffix(name) })
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        // Trailer: 2 × (8-byte key id + 64-byte signature); the first signature starts 8 bytes in.
        try flipByte(path, at: -(2 * 72) + 8 + 9)
        let tampered = try await t.open().loadRestoreTest(name, verifiers: [tester.verifier])
        #expect(tampered.signature.refusal == .invalid(.restoreTest("snapshots/\(name)"), signer: tester.verifier.label))
        #expect(tampered.signature.refusal?.category == .integrity)
        #expect(try await t.open().latestRestoreTests(verifiers: [tester.verifier])[id] == nil)
        // A payload byte changed: the object no longer authenticates at all.
        try original.write(to: URL(fileURLWithPath: path))
        let header = try CofferObject.parseHeader(Array(original), object: "snapshots/\(name)")
        try flipByte(path, at: header.payloadStart + 3)
        await #expect(throws: RepositoryError.self) { _ = try await t.open().loadRestoreTest(name) }
        #expect(try await t.open().latestRestoreTests(verifiers: [])[id] == nil)
        // A zeroed signature: structural damage, found without any public key; check reports it.
        var zeroed = [UInt8](original)
        for i in (zeroed.count - 144 + 8)..<(zeroed.count - 72) { zeroed[i] = 0 }
        try Data(zeroed).write(to: URL(fileURLWithPath: path))
        await #expect(throws: RepositoryError.self) { _ = try await t.open().loadRestoreTest(name) }
        #expect(try await t.open().checkRestoreTests().errors.count == 1)
        // Restored: verifies again.
        try original.write(to: URL(fileURLWithPath: path))
        #expect(try await t.open().loadRestoreTest(name, verifiers: [tester.verifier]).signature.verifiedBy == tester.verifier.label)
    }

    @Test("a signed result is bound to its snapshot: copied under another snapshot's name it does not authenticate; one naming another snapshot inside is damaged")
    func boundToItsSnapshot() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let a = try await Self.snapshot(repo, time: 100)
        let b = try await Self.snapshot(repo, time: 200)
        let tester = Ed25519Signer()
        // Snapshot a's test failed; an attacker with storage access copies a passing result of b over to a.
        let failedA = try await repo.saveRestoreTest(Self.result(a, passed: false, time: 1000), signer: tester)
        let passedB = try await repo.saveRestoreTest(Self.result(b, passed: true, time: 1000), signer: tester)
        let source = try #require(t.files(.snapshots).first { $0.hasSuffix(passedB) })
        let moved = a + "-restoretest-" + String(repeating: "e", count: 16)
        let target = (source as NSString).deletingLastPathComponent + "/" + moved
        try FileManager.default.copyItem(atPath: source, toPath: target)
        let reopened = try await t.open()
        await #expect(throws: RepositoryError.self) { _ = try await reopened.loadRestoreTest(moved, verifiers: [tester.verifier]) }
        let latest = try await reopened.latestRestoreTests(verifiers: [tester.verifier])
        #expect(latest[a]?.object == failedA)
        #expect(latest[a]?.result.passed == false)
        #expect(latest[b]?.object == passedB)
        #expect(try await reopened.checkRestoreTests().errors.map(\.object) == ["snapshots/\(moved)"])
        try FileManager.default.removeItem(atPath: target)

        // A key holder seals, under a's name and with a valid signature, a result naming b: refused.
        let forged = a + "-restoretest-" + String(repeating: "f", count: 16)
        let name = try ObjectName(.snapshots, forged)
        let fileKey = FileKey.random()
        let sealed = try CofferObject.seal(try RepositoryJSON.encode(Self.result(b, passed: true, time: 5000)), objectName: name.description,
                                           fileKey: fileKey, stanzas: try repo.currentDataPublicKey.stanzas(for: fileKey), signer: tester)
        try await repo.storage.save(name, contents: sealed, overwrite: false)
        let error = await #expect(throws: RepositoryError.self) { _ = try await t.open().loadRestoreTest(forged, verifiers: [tester.verifier]) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("not of \(a.prefix(8))"))
        #expect(try await t.open().latestRestoreTests(verifiers: [tester.verifier])[a]?.object == failedA)
    }
}
