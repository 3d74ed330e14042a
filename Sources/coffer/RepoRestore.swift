import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

struct RepoRestore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a snapshot (or the parts matching --include) below a target directory.",
        discussion: """
        Entries are restored under their full path in the snapshot, below DIR. Nothing is written \
        outside DIR: a symbolic link or file where a directory must go is refused. Files appear \
        under their names only once complete. Permission bits and times are restored; setuid and \
        setgid bits never are; owners only when run as root.
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Option(name: [.short, .customLong("target")], help: ArgumentHelp("The directory to restore into (created if missing).", valueName: "dir"))
    var target: String

    @Option(help: ArgumentHelp("Restore only entries matching this pattern (repeatable): a pattern without '/' matches names, one with '/' absolute paths in the snapshot; a matching directory is restored whole.",
                               valueName: "pattern"))
    var include: [String] = []

    @Flag(name: .customLong("no-xattrs"), help: "Do not restore extended attributes.")
    var noXattrs = false

    @Flag(name: .customLong("all-xattrs"), help: "Restore extended attributes of every namespace the system allows (trusted., security., system.), not only user.")
    var allXattrs = false

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    func validate() throws {
        if noXattrs && allXattrs { throw ValidationError("--no-xattrs and --all-xattrs exclude each other") }
    }

    func run() throws {
        try Runtime.reporting {
            AllocatorTuning.applyForRepository()
            let (repository, chosen, _) = try openSnapshots("restore", repo: repo, keys: keys, signers: signers, references: [snapshot])
            let record = chosen[0]
            var options = RestoreOptions()
            options.includes = try include.map(PathPattern.init)
            options.xattrs = noXattrs ? .none : allXattrs ? .all : .user
            let (target, restoreOptions) = (self.target, options)
            // A failing entry does not stop the others: every failure is reported at the end.
            var failure: TreeError?
            let result: RestoreResult
            do {
                result = try runBlocking {
                    try await Restorer(store: repository.store, options: restoreOptions).restore(root: record.info.tree, target: target)
                }
            } catch let e as TreeError {
                guard case .restoreIncomplete(let partial) = e else { throw e }
                for f in partial.failures { Runtime.warn("error: \(DisplayText.escape(f.path)): \(DisplayText.escape(f.reason))") }
                result = partial
                failure = e
            }
            for w in result.warnings { Runtime.warn("warning: \(DisplayText.escape(w.path)): \(DisplayText.escape(w.reason))") }
            if result.warningCount > result.warnings.count {
                Runtime.warn("warning: \(result.warningCount - result.warnings.count) more metadata warnings")
            }
            if result.xattrsSkipped > 0 {
                Runtime.warn("warning: \(result.xattrsSkipped) extended attributes outside user. were not restored (--all-xattrs restores them)")
            }
            if result.droppedSpecialBits > 0 {
                Runtime.warn("warning: setuid/setgid bits of \(result.droppedSpecialBits) entries were not restored")
            }
            if repo.json {
                struct Failure: Encodable { let path: String; let error: String }
                struct Summary: Encodable {
                    let message_type = "summary"; let files_restored: Int; let dirs_restored: Int; let symlinks_restored: Int
                    let hard_links_restored: Int; let xattrs_restored: Int; let bytes_restored: Int64; let errors: [Failure]; let warnings: [Failure]
                }
                try printJSON(Summary(files_restored: result.files, dirs_restored: result.directories, symlinks_restored: result.symlinks,
                                      hard_links_restored: result.hardLinks, xattrs_restored: result.xattrsSet,
                                      bytes_restored: result.bytes, errors: result.failures.map { Failure(path: $0.path, error: $0.reason) },
                                      warnings: result.warnings.map { Failure(path: $0.path, error: $0.reason) }))
            } else {
                Runtime.warn("restored snapshot \(record.shortID): \(counted(result.files, "file")), \(counted(result.directories, "directory", plural: "directories")), \(counted(result.symlinks, "symbolic link")), \(ProgressLine.bytes(UInt64(result.bytes)))")
            }
            if let failure { throw failure }
        }
    }
}
