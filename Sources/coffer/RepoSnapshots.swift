import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

struct RepoSnapshots: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots",
        abstract: "List the repository's snapshots, oldest first.",
        discussion: "One line per snapshot: its short id, time, host, tags and paths, and what the backup added. A SNAPSHOT argument of the other commands is a full id, a unique prefix of one, or 'latest'. With --json, restic's field names (id, short_id, time, hostname, paths, tags, parent), the backup's summary and signed_by (the signers a snapshot's signature names). With --verify-signer, only snapshots whose signature by a listed key verifies are listed (and get verified_by); the others are named on standard error and the exit status is non-zero.")

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Option(help: ArgumentHelp("Only snapshots of this host.", valueName: "name"))
    var host: String?

    @Option(name: .customLong("tag"), help: ArgumentHelp("Only snapshots with this tag (repeatable: any).", valueName: "tag"))
    var tags: [String] = []

    func run() throws {
        try Runtime.reporting {
            let (repository, _, all) = try openSnapshots("snapshots", repo: repo, keys: keys, signers: signers, references: [])
            let refused = all.filter { $0.signature.refusal != nil }
            let records = all.filter { $0.signature.refusal == nil }
                .filter { host == nil || $0.info.hostname == host }
                .filter { tags.isEmpty || !Set($0.info.tags).isDisjoint(with: tags) }
                .sorted { ($0.info.time, $0.id) < ($1.info.time, $1.id) }
            defer {
                for r in refused { Runtime.warn("refused: \(r.signature.refusal.map { "\($0)" } ?? "")") }
            }
            // Refused snapshots fail the listing after it is printed: invalid signatures first (3), else 2.
            func finish() throws {
                if let invalid = refused.first(where: { if case .invalid = $0.signature.refusal { return true }; return false }) {
                    throw invalid.signature.refusal!
                }
                if let first = refused.first { throw first.signature.refusal! }
            }
            let verifiers = repository.verifiers
            let tested = try runBlocking { try await repository.repository.latestRestoreTests(verifiers: verifiers) }
            if repo.json {
                try printJSON(records.map { r -> SnapshotJSON in
                    var json = SnapshotJSON(r)
                    json.restore_test = tested[r.id].map(RestoreTestSummaryJSON.init)
                    return json
                })
                try finish()
                return
            }
            TreeFormat.out("ID        Time                 Host        Tags        Paths")
            TreeFormat.out(String(repeating: "-", count: 72))
            for r in records {
                let host = r.info.hostname.padding(toLength: max(11, r.info.hostname.count), withPad: " ", startingAt: 0)
                let tags = r.info.tags.joined(separator: ",")
                TreeFormat.out(DisplayText.escape("\(r.shortID)  \(TreeFormat.time.string(from: r.info.time))  \(host) \(tags.padding(toLength: max(11, tags.count), withPad: " ", startingAt: 0)) \(r.info.paths.joined(separator: " "))\(r.signature.shown.map { "  " + $0 } ?? "")\(tested[r.id].map { "  " + RestoreTestSummaryJSON.text($0) } ?? "")"))
            }
            TreeFormat.out(String(repeating: "-", count: 72))
            TreeFormat.out("\(counted(records.count, "snapshot"))")
            try finish()
        }
    }
}
