import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct RepoDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Write one file of a snapshot to standard output.",
        discussion: "Reads only the chunks of that file, each authenticated before it is written; for example 'coffer dump latest shop.dump | pg_restore -d shop'. A directory is refused.")

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Argument(help: ArgumentHelp("The file's path in the snapshot (for a stream backup: its name).", valueName: "path"))
    var path: String

    func run() throws {
        try Runtime.reporting {
            let (repository, chosen, _) = try openSnapshots("dump", repo: repo, keys: keys, signers: signers, references: [snapshot])
            let record = chosen[0]
            let components = pathComponents(path)
            _ = try runBlocking {
                try await Restorer(store: repository.store).dump(root: record.info.tree, path: components, to: 1)
            }
        }
    }
}
