import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// `key remove` with object lock (docs/S3.md, "Object lock"): a retained key object is refused
/// before anything is removed, because a DELETE would only hide it (on S3) while its locked version
/// keeps opening the repository; once its retention is over it is removed as usual. On S3 itself
/// (moto) through the CLI: Tests/CofferCLITests/RepoS3KeyRemoveTests.swift.
@Suite("key remove under object lock", .serialized)
struct KeyRemovalLockTests {
    let t = TestRepository()

    func create(lock: ObjectLock?) async throws -> (Repository, LockingStorage, String) {
        let storage = LockingStorage(try LocalStorage.create(path: t.path))
        var options = Repository.CreateOptions()
        options.objectLock = lock
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [t.key]), options: options)
        let added = try await repo.addKey(KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()]))
        return (repo, storage, added)
    }

    @Test("a retained key object: the plan gives its date and why; removeKey refuses and removes nothing; after the date it is removed")
    func retainedKeyObjectIsRefused() async throws {
        let (repo, storage, added) = try await create(lock: ObjectLock(mode: .compliance, days: 10))
        let plan = try await repo.planKeyRemoval(String(added.prefix(10)))
        #expect(plan.id == added)
        let until = try #require(plan.retainedUntil)
        #expect(abs(until.timeIntervalSinceNow - 10 * 86_400) < 120)
        #expect(plan.lockMode == .compliance)
        #expect(plan.consequence.contains(RepositoryJSON.formatDate(until)))
        #expect(plan.consequence.contains("ring key") && plan.consequence.contains("data-key rotation"), "\(plan.consequence)")
        #expect(!plan.consequence.contains("--"), "a library message names no CLI flag")

        await #expect { try await repo.removeKey(added) } throws: { error in
            (error as? RepositoryError).map { $0.category == .usage && "\($0)".contains("Nothing was removed") } ?? false
        }
        #expect(storage.refusedRemovals.isEmpty, "no removal was even tried")
        #expect(try await repo.listKeys().map(\.id).contains(added))
        #expect(try await repo.keyHistory().events.allSatisfy { $0.event != .remove })

        // Ten days and more later: no longer retained, removed as usual.
        try storage.age(by: 11 * 86_400)
        let later = try await repo.planKeyRemoval(added)
        #expect(later.retainedUntil == nil && later.consequence.isEmpty)
        let removed = try await repo.removeKey(added)
        #expect(removed.id == added && removed.retainedUntil == nil)
        #expect(try await repo.listKeys().map(\.id) == [repo.keyID!])
        #expect(try await repo.keyHistory().events.last?.event == .remove)
    }

    @Test("without object lock the plan asks the storage nothing and removal is as before; the other refusals come first")
    func withoutLock() async throws {
        let (repo, storage, added) = try await create(lock: nil)
        let plan = try await repo.planKeyRemoval(added)
        #expect(plan.retainedUntil == nil && plan.lockMode == nil)
        #expect(storage.retentionQueries == 0)
        await #expect { _ = try await repo.planKeyRemoval(repo.keyID!) } throws: { ($0 as? RepositoryError)?.category == .usage }
        await #expect { _ = try await repo.planKeyRemoval("zz-no-such") } throws: { ($0 as? RepositoryError)?.category == .usage }
        try await repo.removeKey(added)
        #expect(try await repo.listKeys().count == 1)
    }
}
