import CofferFormat
import CofferKeys
@testable import CofferRepository
import Crypto
import Foundation
import Testing

/// The key history (docs/REPOSITORY.md, "Key history") and `key list`'s lifecycle view.
@Suite struct KeyHistoryTests {
    /// A repository with an init event, an added key, a rotation and a removal.
    static func repositoryWithHistory() async throws -> (TestRepository, Repository) {
        let t = TestRepository()
        let repo = try await t.create()
        try await repo.appendKeyEvent(KeyEvent(.initialized, key: repo.keyID, maxKeyAge: 90 * 86400))
        let second = SymmetricKeyFile.generate()
        let added = try await repo.addKey(KeyObjectRecipients(recipients: [second]))
        try await repo.rotateDataKey()
        let third = try await repo.addKey(KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()]))
        try await repo.removeKey(third)
        _ = added
        return (t, repo)
    }

    func historyFile(_ t: TestRepository, _ seq: Int) -> String { t.path + "/keys/log-" + String(format: "%010d", seq) }

    @Test("init, add, rotate, add, remove are appended in order as a hash chain; the head is the newest event's hash")
    func chain() async throws {
        let (t, repo) = try await Self.repositoryWithHistory()
        let history = try await t.open().keyHistory()
        #expect(history.events.map(\.event) == [.initialized, .add, .rotate, .add, .remove])
        #expect(history.events.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(history.events[0].prev == "")
        #expect(history.events[2].key == "data-2")
        #expect(history.events[3].key == history.events[4].key)
        #expect(history.maxKeyAge == 90 * 86400)
        for i in 1..<5 {
            let previous = try Data(contentsOf: URL(fileURLWithPath: historyFile(t, i)))
            #expect(history.events[i].prev == Hex.encode(Array(SHA256.hash(data: previous))))
        }
        let last = try Data(contentsOf: URL(fileURLWithPath: historyFile(t, 5)))
        #expect(history.head == Hex.encode(Array(SHA256.hash(data: last))))
        // Appending after reopening continues the chain.
        let next = try await repo.appendKeyEvent(KeyEvent(.policy, maxKeyAge: 0))
        #expect(next.seq == 6 && next.prev == history.head)
        #expect(try await t.open().keyHistory().maxKeyAge == nil, "0 turns the rotation period off")
    }

    @Test("an edited event, a removed event and a swapped event are each detected, by keyHistory and by check")
    func tampering() async throws {
        let (t, _) = try await Self.repositoryWithHistory()
        let two = historyFile(t, 2), three = historyFile(t, 3)
        let original = try Data(contentsOf: URL(fileURLWithPath: two))
        // Edited: one flipped byte in the payload.
        try flipByte(two, at: -5)
        await #expect(throws: RepositoryError.self) { _ = try await t.open().keyHistory() }
        let report = try await t.open(tolerateDamage: true).check()
        #expect(report.errors.contains { $0.object == "keys/log-0000000002" }, "\(report.errors)")
        // Removed from the middle: a gap.
        try FileManager.default.removeItem(atPath: two)
        do { _ = try await t.open().keyHistory(); Issue.record("a gap was accepted") } catch let e as RepositoryError {
            #expect("\(e)".contains("gap"))
        }
        // Swapped: event 3 stored under the name of event 2 (bound to its name: refused).
        try FileManager.default.copyItem(atPath: three, toPath: two)
        do { _ = try await t.open().keyHistory(); Issue.record("a swapped event was accepted") } catch let e as RepositoryError {
            #expect("\(e)".contains("another name"))
        }
        try FileManager.default.removeItem(atPath: two)
        try original.write(to: URL(fileURLWithPath: two))
        #expect(try await t.open().keyHistory().events.count == 5)
    }

    @Test("a writer key can neither read nor append the key history")
    func writerCannotWriteHistory() async throws {
        let (t, repo) = try await Self.repositoryWithHistory()
        let writer = try await Repository.open(storage: try LocalStorage(path: t.path),
                                               writerKey: try WriterKeyFile.parse(try repo.makeWriterKey().encoded()))
        await #expect(throws: RepositoryError.self) { _ = try await writer.keyHistory() }
        await #expect(throws: RepositoryError.self) { _ = try await writer.appendKeyEvent(KeyEvent(.policy, maxKeyAge: 1)) }
    }

    @Test("key lifecycle: kinds, creation times from the history, generations, retired data keys, overdue past the rotation period")
    func lifecycle() async throws {
        let (t, _) = try await Self.repositoryWithHistory()
        let repo = try await t.open()
        let history = try await repo.keyHistory()
        let now = try await repo.keyLifecycle(history: history)
        let objects = now.filter { $0.kind == "key object" }
        #expect(objects.count == 2)
        #expect(objects.allSatisfy { $0.created != nil && $0.status == .active && !$0.overdue })
        #expect(objects.first { !$0.current }?.generation == 1)
        let data = now.filter { $0.kind == "data key" }
        #expect(data.map(\.id) == ["data-1", "data-2"])
        #expect(data.map(\.status) == [.retired, .active])
        #expect(data.map(\.generation) == [1, 2])
        // 100 days later: every active key is overdue, the retired data key is not flagged.
        let later = try await repo.keyLifecycle(history: history, now: Date().addingTimeInterval(100 * 86400))
        #expect(later.filter(\.overdue).map(\.id).sorted() == (objects.map(\.id) + ["data-2"]).sorted())
    }
}
