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
        abstract: "Write one file, or a directory as a tar archive, of a snapshot to standard output.",
        discussion: "A file: its content, reading only its chunks, each authenticated before it is written; for example 'coffer dump latest shop.dump | pg_restore -d shop'. A directory (or /): a POSIX tar stream (pax format) of it and everything below it, names relative to the snapshot's root; for example 'coffer dump latest /etc | tar -x -C /tmp/etc'.")

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Argument(help: ArgumentHelp("The path in the snapshot of a file (for a stream backup: its name) or a directory ('/' for the whole snapshot).", valueName: "path"))
    var path: String

    func run() throws {
        try Runtime.reporting {
            let (repository, chosen, _) = try openSnapshots("dump", repo: repo, keys: keys, signers: signers, references: [snapshot])
            let record = chosen[0]
            let components = pathComponents(path)
            let store = repository.store
            _ = try runBlocking {
                if try await store.lookup(path: components, root: record.info.tree)?.kind == .directory {
                    _ = try await TarDump.dump(store: store, root: record.info.tree, path: components, to: 1)
                } else {
                    _ = try await Restorer(store: store).dump(root: record.info.tree, path: components, to: 1)
                }
            }
        }
    }
}
