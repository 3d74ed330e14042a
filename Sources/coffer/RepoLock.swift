import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `coffer lock extend`: object lock retention of what the kept snapshots need.
struct RepoLock: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Object lock (immutable backups) of an S3 repository made with 'init --object-lock-days'.",
        discussion: "Run 'lock extend' periodically (more often than the lock's days): objects written long ago would otherwise become deletable while snapshots still need them (docs/S3.md, \"Object lock\").",
        subcommands: [Extend.self])

    struct Extend: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Extend the retention of every object the snapshots need to now + N days.",
            discussion: "The config, key objects, snapshots, the packs their data is in and the index objects that list them get a retention until now + N days (default: the repository's lock days), in parallel; objects already retained that long are skipped, so running it twice is harmless. Packs only forgotten snapshots need are not extended: they become removable when their retention ends.")

        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        @Option(help: ArgumentHelp("Retain until now + N days (1 to \(ObjectLock.maxDays); default: the repository's object lock days).", valueName: "n"))
        var days: Int?

        func validate() throws {
            if let days, !(1...ObjectLock.maxDays).contains(days) {
                throw ValidationError("--days must be 1 to \(ObjectLock.maxDays)")
            }
        }

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("lock extend")
                let repository = try RepoKeys.open(repo, keys)
                let walk = RepoTreeHooks.usedBlobs(repository)
                let days = self.days
                let showProgress = !repo.json && isatty(2) == 1
                let report = try runBlocking {
                    try await repository.extendLocks(days: days, usedBlobs: walk) { done, total in
                        if showProgress && (done == total || done % 100 == 0) {
                            FileHandle.standardError.write(Data("\rlock extend: \(done)/\(total) objects\(done == total ? "\n" : "")".utf8))
                        }
                    }
                }
                if repo.json { return try printJSON(report) }
                print("retained until \(TreeFormat.time.string(from: report.until)) (\(counted(report.days, "day"))): \(counted(report.objects, "object")) the snapshots need, \(ProgressLine.bytes(UInt64(max(0, report.bytes))))")
                print("  \(counted(report.snapshots, "snapshot")), \(counted(report.packs, "pack")), \(counted(report.indexObjects, "index object")), \(counted(report.keyObjects, "config and key object"))")
                print("  extended \(report.extended), already retained that long \(report.alreadyRetained)")
            }
        }
    }
}
