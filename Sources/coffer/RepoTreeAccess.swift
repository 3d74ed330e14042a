import ArgumentParser
import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An open repository as the tree commands (backup, snapshots, ls, restore, dump, diff, forget)
/// use it: the blob store and the snapshot catalog.
struct TreeRepository: Sendable {
    let repository: Repository
    /// Signers a snapshot must be signed by to be used (`--verify-signer`); empty: not checked.
    var verifiers: [SignatureVerifier] = []
    /// Signs the snapshots this command writes (`backup --sign`).
    var signer: PayloadSigner? = nil
    var store: any BlobStore { repository }
    var catalog: any SnapshotCatalog { RepositoryCatalog(repository: repository, verifiers: verifiers, signer: signer) }
    /// Opened with a writer key: can add, cannot read.
    var writeOnly: Bool { repository.access == .writer }

    /// Runs `body` under a repository lock (shared for backups, exclusive for forget).
    func locked<T: Sendable>(exclusive: Bool, _ body: () async throws -> T) async throws -> T {
        try await repository.withLock(exclusive: exclusive, body)
    }

    /// Repo-core's prune, keeping every blob the remaining snapshots' trees reach.
    func prune() async throws -> PruneReport {
        try await repository.prune(usedBlobs: RepoTreeHooks.usedBlobs(repository))
    }
}

/// The snapshot objects of a `Repository` as the archiver's callers and forget see them.
struct RepositoryCatalog: SnapshotCatalog {
    let repository: Repository
    var verifiers: [SignatureVerifier] = []
    var signer: PayloadSigner? = nil
    func saveSnapshot(_ info: SnapshotInfo) async throws -> String { try await repository.saveSnapshot(info, signer: signer) }
    func listSnapshots() async throws -> [SnapshotRecord] {
        try await repository.listSnapshots(verifiers: verifiers).map { SnapshotRecord(id: $0.id, info: $0.info, signature: $0.signature) }
    }
    func removeSnapshot(id: String) async throws { try await repository.removeSnapshot(id) }
}

/// The one place where the tree commands turn the key options into an open repository (through
/// repo-core's `RepoKeys`, which the coordinator adapts when the key options become a `KeyRing`).
/// `forWriting`: a writer key (`--writer-key`) is accepted.
func openTreeRepository(_ repo: RepoOptions, keys: KeyOptions, forWriting: Bool = false) throws -> TreeRepository {
    TreeRepository(repository: forWriting ? try RepoKeys.openForWriting(repo, keys) : try RepoKeys.open(repo, keys))
}
/// Loads every snapshot (refused with a writer key).
func loadSnapshots(_ repository: TreeRepository) throws -> [SnapshotRecord] {
    try runBlocking { try await repository.catalog.listSnapshots() }
}

/// `--verify-signer`: the producers whose snapshot signatures a reading command accepts.
struct SnapshotSignerOptions: ParsableArguments {
    @Option(name: .customLong("verify-signer"),
            help: ArgumentHelp("Use only snapshots signed by this signing public key (NAME.pub, from 'backup --sign NAME.key'); repeatable: any one listed signer is enough. Unsigned snapshots, other signers and altered snapshots are refused; 'latest' is the newest accepted snapshot.",
                               valueName: "pub"))
    var verifySigner: [String] = []

    func verifiers() throws -> [SignatureVerifier] {
        try verifySigner.map { path in
            try SigningKeyText.verifier(String(decoding: try KeySources.readAll(path: path), as: UTF8.self), source: path)
        }
    }
}

/// The preamble of every command that reads snapshots (ls, restore, dump, diff, ...): refuses a
/// writer key, opens the repository with the keys, loads the snapshots (checking their signatures
/// when signers are required) and resolves each reference (id, unique prefix or `latest`).
func openSnapshots(_ command: String, repo: RepoOptions, keys: KeyOptions, signers: SnapshotSignerOptions,
                   references: [String], host: String? = nil) throws -> (TreeRepository, [SnapshotRecord], all: [SnapshotRecord]) {
    try repo.refuseWriterKey(command)
    var repository = try openTreeRepository(repo, keys: keys)
    repository.verifiers = try signers.verifiers()
    let records = try loadSnapshots(repository)
    let chosen = try references.map { reference -> SnapshotRecord in
        guard !repository.verifiers.isEmpty else { return try SnapshotSelection.resolve(reference, in: records, host: host) }
        var skipped: [SnapshotRecord] = []
        let record = try SnapshotSelection.resolveAccepted(reference, in: records, host: host, skipped: &skipped)
        for s in skipped {
            Runtime.warn("warning: newer snapshot \(s.shortID) was skipped: \(s.signature.refusal.map { "\($0)" } ?? "")")
        }
        return record
    }
    return (repository, chosen, records)
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
    /// The signers the snapshot's signature trailer names (checked only with --verify-signer).
    let signed_by: [String]
    /// With --verify-signer: the accepted signer whose signature verified.
    let verified_by: String?
    /// The newest restore-test result (`snapshots`), absent when there is none.
    var restore_test: RestoreTestSummaryJSON? = nil

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
        signed_by = r.signature.signers; verified_by = r.signature.verifiedBy
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
