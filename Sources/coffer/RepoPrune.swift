import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

/// `coffer prune`: remove data no snapshot needs.
struct RepoPrune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove data that no snapshot needs (after 'forget').",
        discussion: """
        Takes an exclusive lock. Packs holding some needed data are repacked; new packs and index are \
        stored before anything is removed. Nothing is removed if a snapshot needs data that is missing.
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions

    @Flag(help: "Only report what would be removed.")
    var dryRun = false

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("prune")
            let repository = try RepoKeys.open(repo, keys)
            let walk = RepoTreeHooks.usedBlobs(repository)
            let dryRun = self.dryRun
            let report = try runBlocking { try await repository.prune(dryRun: dryRun, usedBlobs: walk) }
            if repo.json {
                try printJSON(report)
            } else {
                let verb = dryRun ? "would remove" : "removed"
                print("\(counted(report.snapshots, "snapshot")) need \(counted(report.usedBlobs, "blob"))")
                print("\(verb) \(counted(report.blobsRemoved, "blob")): \(counted(report.packsRemoved, "pack")), \(report.unreferencedPacksRemoved) unreferenced packs, \(report.bytesRemoved) bytes")
                print("\(dryRun ? "would repack" : "repacked") \(counted(report.packsRepacked, "pack")) (\(counted(report.blobsRepacked, "blob")) kept), kept \(counted(report.packsKept, "pack"))")
                if report.leftoversRemoved > 0 {
                    print("\(dryRun ? "would remove" : "removed") \(counted(report.leftoversRemoved, "leftover")) of interrupted writes")
                }
                for line in Self.lockLines(report) { print(line) }
            }
        }
    }

    /// Object lock: what stays, and when it becomes removable ("12 packs, 96 MiB removable from
    /// 2027-01-04").
    static func lockLines(_ report: PruneReport) -> [String] {
        guard report.lockedPacks > 0 || report.lockedIndexObjects > 0 else { return [] }
        var lines = ["under object lock: \(counted(report.lockedPacks, "pack")) (\(ProgressLine.bytes(UInt64(max(0, report.lockedBytes))))) and \(counted(report.lockedIndexObjects, "index object")) kept"]
        for group in report.removableFrom {
            var parts: [String] = []
            if group.packs > 0 { parts.append("\(counted(group.packs, "pack")), \(ProgressLine.bytes(UInt64(max(0, group.bytes))))") }
            if group.indexObjects > 0 { parts.append(counted(group.indexObjects, "index object")) }
            lines.append("  \(parts.joined(separator: ", ")) removable from \(group.date)")
        }
        return lines
    }
}
