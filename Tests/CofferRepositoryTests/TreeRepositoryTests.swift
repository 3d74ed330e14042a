import CofferFormat
import CofferKeys
@testable import CofferRepository
import Foundation
import Testing

/// The archiver, restorer, walks and forget against the real `Repository` (packs, index,
/// snapshot objects), not the in-memory scaffolding.
@Suite struct TreeRepositoryTests {
    struct Catalog: SnapshotCatalog {
        let repository: Repository
        func saveSnapshot(_ info: SnapshotInfo) async throws -> String { try await repository.saveSnapshot(info) }
        func listSnapshots() async throws -> [SnapshotRecord] { try await repository.listSnapshots().map { SnapshotRecord(id: $0.id, info: $0.info) } }
        func removeSnapshot(id: String) async throws { try await repository.removeSnapshot(id) }
    }

    @Test func backupIncrementalRestoreForgetPrune() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let catalog = Catalog(repository: repo)
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let first = try await Archiver(store: repo, options: try options()).backup(paths: [dir.p("src")])
        let firstID = try await catalog.saveSnapshot(first.info)

        // Reopened (index and snapshots read back from storage): the second backup reads nothing.
        let reopened = try await t.open()
        let records = try await Catalog(repository: reopened).listSnapshots()
        let parent = try #require(SnapshotSelection.parent(for: [dir.p("src")], host: "host1", in: records))
        #expect(parent.id == firstID)
        let archiver = Archiver(store: reopened, options: try options(parent: parent))
        let second = try await archiver.backup(paths: [dir.p("src")])
        #expect(archiver.filesRead == 0)
        #expect(second.info.summary.dataBlobs == 0)
        _ = try await Catalog(repository: reopened).saveSnapshot(second.info)

        let result = try await Restorer(store: reopened).restore(root: second.info.tree, target: dir.p("out"))
        #expect(result.files == 8)
        #expect(compareTrees(dir.p("src"), dir.p("out") + dir.p("src")) == [])

        // Forget the first, prune with the trees' used blobs: the second still restores whole.
        var policy = ForgetPolicy(); policy.last = 1
        let groups = try policy.apply(to: try await Catalog(repository: reopened).listSnapshots())
        #expect(groups.flatMap(\.remove).map(\.id) == [firstID])
        for r in groups.flatMap(\.remove) { try await reopened.removeSnapshot(r.id) }
        _ = try await reopened.prune { snapshot in
            var used = Set<UsedBlob>()
            try await reopened.usedBlobs(root: snapshot.info.tree, into: &used)
            return Set(used.map(\.id))
        }
        let afterPrune = try await t.open()
        let again = try await Restorer(store: afterPrune).restore(root: second.info.tree, target: dir.p("out2"))
        #expect(again.files == 8)
        #expect(compareTrees(dir.p("src"), dir.p("out2") + dir.p("src")) == [])
    }

    @Test func writerKeyBacksUpButCannotRead() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        let writerKey = try WriterKeyFile.parse(try repo.makeWriterKey().encoded())
        let writer = try await Repository.open(storage: try LocalStorage(path: t.path), writerKey: writerKey)
        let dir = TemporaryDirectory()
        makeSampleTree(dir.p("src"))
        let result = try await Archiver(store: writer, options: try options()).backup(paths: [dir.p("src")])
        let id = try await writer.saveSnapshot(result.info)
        await #expect(throws: (any Error).self) {
            _ = try await Restorer(store: writer).restore(root: result.info.tree, target: dir.p("nope"))
        }
        // The owner reads what the writer stored.
        let owner = try await t.open()
        #expect(try await owner.listSnapshots().map(\.id) == [id])
        let restored = try await Restorer(store: owner).restore(root: result.info.tree, target: dir.p("out"))
        #expect(restored.files == 8)
        #expect(compareTrees(dir.p("src"), dir.p("out") + dir.p("src")) == [])
    }

    @Test func failingCommandWritesNoSnapshot() async throws {
        let t = TestRepository()
        let repo = try await t.create()
        await #expect(throws: TreeError.self) {
            let r = try await Archiver(store: repo, options: try options()).backup(command: ["/bin/sh", "-c", "echo data; exit 1"], name: "x")
            _ = try await repo.saveSnapshot(r.info)
        }
        #expect(try await repo.snapshotIDs().isEmpty)
    }
}
