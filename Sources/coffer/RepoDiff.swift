import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

struct RepoDiff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what changed between two snapshots.",
        discussion: "One line per path that differs: + added, - removed, M content changed, U only its metadata (mode, times, owner) changed. Compares trees only; unchanged directories are skipped without being read.")

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Argument(help: ArgumentHelp("The older snapshot.", valueName: "snapshot1"))
    var first: String

    @Argument(help: ArgumentHelp("The newer snapshot.", valueName: "snapshot2"))
    var second: String

    func run() throws {
        try Runtime.reporting {
            let (repository, chosen, _) = try openSnapshots("diff", repo: repo, keys: keys, signers: signers, references: [first, second])
            let (a, b) = (chosen[0], chosen[1])
            let changes = try runBlocking { try await TreeWalk.diff(store: repository.store, from: a.info.tree, to: b.info.tree) }
            if repo.json {
                struct Change: Encodable { let message_type = "change"; let path: String; let modifier: String }
                for c in changes { try printJSON(Change(path: TreeNode.display(c.path), modifier: c.change.symbol)) }
                return
            }
            TreeFormat.out("comparing snapshot \(a.shortID) to \(b.shortID):")
            for c in changes { TreeFormat.out("\(c.change.symbol)    \(TreeNode.display(c.path))") }
            let counts = Dictionary(grouping: changes, by: \.change.symbol).mapValues(\.count)
            TreeFormat.out("\(counts["+"] ?? 0) added, \(counts["-"] ?? 0) removed, \(counts["M"] ?? 0) modified, \(counts["U"] ?? 0) metadata only")
        }
    }
}
