import ArgumentParser
import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one place where the tree commands (backup, snapshots, ls, restore, dump, diff, forget) turn
/// the key options into an open repository: the coordinator adapts only this function when the key
/// options become a `KeyRing`.
struct TreeRepository: Sendable {
    let store: any BlobStore
    let catalog: any SnapshotCatalog
    /// Opened with a writer key: can add, cannot read.
    let writeOnly: Bool
    /// Removes unused data after `forget` (repo-core's prune), given the blobs still used.
    let prune: (@Sendable (_ used: Set<UsedBlob>) async throws -> Void)?
}

func openTreeRepository(_ repo: RepoOptions, keys: KeyOptions, signing: SignOptions? = nil,
                        exclusive: Bool = false) throws -> TreeRepository {
    _ = try repo.repositoryPath()
    throw TreeError.invalidRequest("this build cannot open repositories yet (the repository format is not merged)")
}

/// Loads every snapshot (refused with a writer key).
func loadSnapshots(_ repository: TreeRepository) throws -> [SnapshotRecord] {
    try runBlocking { try await repository.catalog.listSnapshots() }
}

/// restic's JSON for a snapshot (`snapshots --json`, `backup --json`).
struct SnapshotJSON: Encodable {
    let id: String
    let short_id: String
    let time: Date
    let tree: String
    let paths: [String]
    let hostname: String
    let username: String
    let tags: [String]
    let parent: String?
    let program_version: String
    let summary: SummaryJSON

    struct SummaryJSON: Encodable {
        let files_new, files_changed, files_unmodified, dirs_new, dirs_changed, dirs_unmodified: Int
        let data_blobs, tree_blobs: Int
        let data_added, data_added_packed: Int64
        let total_files_processed: Int
        let total_bytes_processed: Int64
    }

    init(_ r: SnapshotRecord) {
        let i = r.info, s = i.summary
        id = r.id; short_id = r.shortID; time = i.time; tree = i.tree.hex; paths = i.paths; hostname = i.hostname
        username = i.username; tags = i.tags; parent = i.parent; program_version = i.programVersion
        summary = SummaryJSON(files_new: s.filesNew, files_changed: s.filesChanged, files_unmodified: s.filesUnmodified,
                              dirs_new: s.dirsNew, dirs_changed: s.dirsChanged, dirs_unmodified: s.dirsUnmodified,
                              data_blobs: s.dataBlobs, tree_blobs: s.treeBlobs, data_added: s.dataAdded,
                              data_added_packed: s.dataAddedPacked, total_files_processed: s.totalFilesProcessed,
                              total_bytes_processed: s.totalBytesProcessed)
    }
}

enum TreeFormat {
    static let time: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone.current
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f
    }()

    /// A line on standard output (paths escaped: they come from the repository).
    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
