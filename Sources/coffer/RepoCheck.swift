import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

/// `coffer check`: is the repository whole?
struct RepoCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a repository's structure and, with --read-data, every blob.",
        discussion: """
        Exit status 3 when anything is damaged or missing; every problem names the object. \
        Packs no index lists (left by an interrupted backup) are warnings: 'prune' removes them.
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions

    @Flag(help: "Read and check every pack: every blob decrypts, decompresses and matches its id.")
    var readData = false

    @Option(help: ArgumentHelp("Read only part of the packs: a percentage (10%) or part n of t (1/5).", valueName: "N%|n/t"))
    var readDataSubset: String?

    func validate() throws {
        if readData && readDataSubset != nil { throw ValidationError("give --read-data or --read-data-subset, not both") }
        if let subset = readDataSubset { _ = try Self.selection(subset) }
    }

    static func selection(_ text: String) throws -> ReadDataSelection {
        if text.hasSuffix("%"), let p = Double(text.dropLast()), p > 0, p <= 100 { return .fraction(p / 100) }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, let n = Int(parts[0]), let t = Int(parts[1]), t >= 1, n >= 1, n <= t { return .subset(n: n, of: t) }
        throw ValidationError("--read-data-subset takes N% (0 < N ≤ 100) or n/t (1 ≤ n ≤ t)")
    }

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("check")
            let selection: ReadDataSelection = readData ? .all : try readDataSubset.map(Self.selection) ?? ReadDataSelection.none
            let repository = try RepoKeys.open(repo, keys, tolerateDamage: true)
            let report = try runBlocking { try await repository.check(readData: selection, trees: RepoTreeHooks.checkTrees(repository)) }
            if repo.json {
                try printJSON(report)
            } else {
                print("\(counted(report.keyObjects, "key object")), \(counted(report.indexObjects, "index object")), \(counted(report.packs, "pack")), \(counted(report.blobs, "blob")), \(counted(report.snapshots, "snapshot"))")
                if selection != .none { print("read \(counted(report.packsRead, "pack")), \(counted(report.blobsRead, "blob"))") }
                for w in report.warnings { print("warning: \(DisplayText.escape(w.description))") }
                for e in report.errors { print("error: \(DisplayText.escape(e.description))") }
                if report.ok { print("no errors were found") }
            }
            if !report.ok {
                throw RepositoryError.checkFailed(problems: report.errors.count)
            }
        }
    }
}

/// Where the tree layer plugs into check and prune: the walk from a snapshot's root tree.
enum RepoTreeHooks {
    /// Check: every tree a snapshot reaches loads, authenticates and parses, and every blob it
    /// names is listed by an index.
    static func checkTrees(_ repository: Repository) -> (@Sendable (Snapshot) async throws -> [CheckProblem])? {
        return { snapshot in
            let object = "snapshots/\(snapshot.id)"
            var used = Set<UsedBlob>()
            do {
                try await repository.usedBlobs(root: snapshot.info.tree, into: &used)
            } catch {
                return [CheckProblem(object: object, message: "its trees cannot be read: \(error)")]
            }
            return used.sorted { $0.id < $1.id }.compactMap { blob in
                repository.contains(blob.kind, blob.id) ? nil
                    : CheckProblem(object: object, message: "needs \(blob.kind) blob \(blob.id.hex), which no index lists")
            }
        }
    }

    /// Prune: every blob (trees and data) a snapshot reaches.
    static func usedBlobs(_ repository: Repository) -> @Sendable (Snapshot) async throws -> Set<BlobID> {
        return { snapshot in
            var used = Set<UsedBlob>()
            try await repository.usedBlobs(root: snapshot.info.tree, into: &used)
            return Set(used.map(\.id))
        }
    }
}
