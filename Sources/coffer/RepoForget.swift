import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

struct RepoForget: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove snapshots by a keep policy (restic's rules), per host and paths; --prune then removes unused data.",
        discussion: """
        Snapshots are grouped by host and paths; in each group, newest first, a snapshot is kept \
        when a rule keeps it (--keep-last N; --keep-hourly/daily/weekly/monthly/yearly N: the \
        newest of each of the last N hours/days/... that have snapshots, -1 for all; --keep-within \
        1y2m3d4h of the group's newest snapshot; --keep-tag T[,T...]: snapshots having all of those \
        tags). Time buckets are UTC. Without any rule nothing is removed.
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions

    @Option(name: .customLong("keep-last"), help: ArgumentHelp("Keep the N newest snapshots.", valueName: "n")) var last = 0
    @Option(name: .customLong("keep-hourly"), help: ArgumentHelp("Keep the newest of the last N hours.", valueName: "n")) var hourly = 0
    @Option(name: .customLong("keep-daily"), help: ArgumentHelp("Keep the newest of the last N days.", valueName: "n")) var daily = 0
    @Option(name: .customLong("keep-weekly"), help: ArgumentHelp("Keep the newest of the last N weeks.", valueName: "n")) var weekly = 0
    @Option(name: .customLong("keep-monthly"), help: ArgumentHelp("Keep the newest of the last N months.", valueName: "n")) var monthly = 0
    @Option(name: .customLong("keep-yearly"), help: ArgumentHelp("Keep the newest of the last N years.", valueName: "n")) var yearly = 0
    @Option(name: .customLong("keep-within"), help: ArgumentHelp("Keep snapshots within this duration of the newest (e.g. 2m15d).", valueName: "duration")) var within: String?
    @Option(name: .customLong("keep-tag"), help: ArgumentHelp("Keep snapshots with all these tags (comma-separated; repeatable).", valueName: "tags")) var keepTags: [String] = []

    @Flag(name: [.short, .customLong("dry-run")], help: "Only show what would be removed.")
    var dryRun = false

    @Flag(help: "Then remove the data no remaining snapshot uses.")
    var prune = false

    @Argument(help: ArgumentHelp("Snapshots to remove explicitly (ids or prefixes), instead of a policy.", valueName: "snapshot"))
    var snapshots: [String] = []

    func validate() throws {
        for n in [last, hourly, daily, weekly, monthly, yearly] where n < -1 {
            throw ValidationError("keep counts are -1 (all) or more")
        }
    }

    func policy() throws -> ForgetPolicy {
        var p = ForgetPolicy()
        p.last = last; p.hourly = hourly; p.daily = daily; p.weekly = weekly; p.monthly = monthly; p.yearly = yearly
        p.within = try within.map(ForgetDuration.init(parsing:))
        p.tags = keepTags.map { $0.split(separator: ",").map(String.init) }
        return p
    }

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("forget")
            let repository = try openTreeRepository(repo, keys: keys)
            let records = try loadSnapshots(repository)
            var remove: [SnapshotRecord] = []
            var keep: [SnapshotRecord] = []
            if !snapshots.isEmpty {
                remove = try snapshots.map { try SnapshotSelection.resolve($0, in: records) }
                let removed = Set(remove.map(\.id))
                keep = records.filter { !removed.contains($0.id) }
            } else {
                let groups = try policy().apply(to: records)
                for g in groups {
                    if !repo.json {
                        TreeFormat.out(DisplayText.escape("snapshots of host \(g.hostname), paths \(g.paths.joined(separator: " ")):"))
                        for d in g.decisions {
                            TreeFormat.out("  \(d.keep ? "keep  " : "remove") \(d.record.shortID)  \(TreeFormat.time.string(from: d.record.info.time))  \(d.reasons.joined(separator: ", "))")
                        }
                    }
                    keep += g.keep
                    remove += g.remove
                }
            }
            let toRemove = remove.map(\.id)
            let explicit = !snapshots.isEmpty
            let dryRun = self.dryRun
            let outcome = try runBlocking {
                try await repository.repository.removeSnapshots(toRemove, skipLocked: !explicit, dryRun: dryRun)
            }
            let lockedRecords = remove.filter { outcome.locked[$0.id] != nil }
            if repo.json {
                struct Locked: Encodable { let id: String; let short_id: String; let until: Date }
                struct Result: Encodable { let keep: [SnapshotJSON]; let remove: [SnapshotJSON]; let locked: [Locked]; let dry_run: Bool }
                try printJSON(Result(keep: keep.map(SnapshotJSON.init), remove: remove.filter { outcome.locked[$0.id] == nil }.map(SnapshotJSON.init),
                                     locked: lockedRecords.map { Locked(id: $0.id, short_id: $0.shortID, until: outcome.locked[$0.id]!) },
                                     dry_run: dryRun))
            } else {
                for r in lockedRecords {
                    TreeFormat.out("locked \(r.shortID): under object lock until \(TreeFormat.time.string(from: outcome.locked[r.id]!)), kept until a forget after that")
                }
            }
            guard !dryRun else {
                if !repo.json { TreeFormat.out("dry run: \(counted(outcome.removed.count, "snapshot")) would be removed\(lockedRecords.isEmpty ? "" : ", \(lockedRecords.count) locked")") }
                return
            }
            if prune {
                let report = try runBlocking { try await repository.prune() }
                if repo.json { try printJSON(report) } else {
                    Runtime.warn("prune: \(counted(report.packsRemoved, "pack")) removed, \(report.packsRepacked) repacked, \(counted(report.blobsRemoved, "blob")) removed (\(ProgressLine.bytes(UInt64(max(0, report.bytesRemoved)))))")
                    for line in RepoPrune.lockLines(report) { Runtime.warn("prune: " + line.trimmingCharacters(in: .whitespaces)) }
                }
            }
            if !repo.json { TreeFormat.out("removed \(counted(outcome.removed.count, "snapshot"))\(lockedRecords.isEmpty ? "" : ", \(lockedRecords.count) kept under object lock")\(prune ? ", pruned unused data" : "")") }
        }
    }
}
