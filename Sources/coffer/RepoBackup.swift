import ArgumentParser
import CofferFormat
import CofferDatabase
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct RepoBackup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up files and directories (or a stream) into the repository as a new snapshot.",
        discussion: """
        Files whose size, modification time, change time and inode are those of the parent \
        snapshot (the newest one of this host with the same paths) are not read again. With \
        --writer-key there is no parent: every file is read, and only new chunks are stored.

        Streams: --stdin --stdin-name NAME backs up standard input as one file; with \
        --stdin-from-command, the command after "--" is run (no shell, an environment without \
        secrets) and its output is backed up; if it fails, no snapshot is written.

        --sign KEY signs the snapshot object (readers require it with --verify-signer KEY.pub).
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signing: SignOptions
    @OptionGroup var mariadb: MariaDBOptions
    @OptionGroup var postgres: PostgresBackupOptions

    @Option(name: .customLong("tag"), help: ArgumentHelp("Add a tag to the snapshot (repeatable).", valueName: "tag"))
    var tags: [String] = []

    @Option(help: ArgumentHelp("The host name recorded (default: this host's name).", valueName: "name"))
    var host: String?

    @Option(help: ArgumentHelp("Leave out entries matching a pattern (repeatable): a pattern without '/' matches names, one with '/' absolute paths; '*' matches any characters.",
                               valueName: "pattern"))
    var exclude: [String] = []

    @Flag(help: "Back up standard input as one file.")
    var stdin = false

    @Option(name: .customLong("stdin-name"), help: ArgumentHelp("The file name of a stream backup.", valueName: "name"))
    var stdinName = "stdin"

    @Flag(name: .customLong("stdin-from-command"), help: "Run the command given after '--' and back up its output.")
    var stdinFromCommand = false

    @Flag(help: "Print only errors and the snapshot id.")
    var quiet = false

    @Option(help: ArgumentHelp("How new chunks are compressed: auto (zstd level 2, the default), fast (level 1), max (level 19: slow, for archives written once) or off. A chunk that does not shrink is stored raw.",
                               valueName: "off|auto|fast|max"))
    var compression: CompressionMode = .auto

    @Flag(name: .customLong("no-xattrs"), help: "Do not record extended attributes.")
    var noXattrs = false

    @Argument(help: ArgumentHelp("Files and directories to back up; with --stdin-from-command, the command and its arguments (after '--').",
                                 valueName: "path"))
    var arguments: [String] = []

    var paths: [String] { stdinFromCommand ? [] : arguments }
    var command: [String] { stdinFromCommand ? arguments : [] }

    func validate() throws {
        if mariadb.mariadb { return try validateMariaDB() }
        if stdin && stdinFromCommand { throw ValidationError("--stdin and --stdin-from-command exclude each other") }
        if stdinFromCommand && command.isEmpty { throw ValidationError("--stdin-from-command needs a command after '--'") }
        if (stdin || stdinFromCommand) && !paths.isEmpty { throw ValidationError("a stream backup takes no paths") }
        let database = postgres.enabled
        if database && (stdin || stdinFromCommand || !arguments.isEmpty) { throw ValidationError("a database backup takes no paths and no --stdin") }
        if !database && !stdin && !stdinFromCommand && paths.isEmpty { throw ValidationError("give at least one path to back up (or --stdin)") }
    }

    /// The start of every kind of backup run: the signature digest checked, the repository opened
    /// for writing with the `--sign` signer, and the archive options of the shared flags.
    func openForBackup() throws -> (TreeRepository, ArchiveOptions) {
        if signing.sign != nil && signing.digest != .chunkSHA256 {
            throw ValidationError("snapshots are signed with chunk-sha256 digests: leave out --signature-digest")
        }
        AllocatorTuning.applyForRepository()
        var opened = try openTreeRepository(repo, keys: keys, forWriting: true)
        opened.repository.compression = compression
        opened.signer = try signing.signer(keys: keys)
        var options = ArchiveOptions.current()
        if let host { options.hostname = host }
        options.tags = tags
        options.excludes = try exclude.map(PathPattern.init)
        options.programVersion = "coffer \(Coffer.configuration.version)"
        return (opened, options)
    }

    func run() throws {
        if mariadb.mariadb { return try runMariaDB() }
        try Runtime.reporting {
            let (repository, start) = try openForBackup()
            var options = start
            let absolute = paths.map(Self.absolute)
            if !stdin && !stdinFromCommand && !postgres.enabled && !repository.writeOnly {
                options.parent = SnapshotSelection.parent(for: absolute, host: options.hostname, in: try loadSnapshots(repository))
            }
            let progress = BackupProgress(enabled: !quiet && !repo.json && isatty(2) == 1)
            options.progress = progress.callback
            options.xattrs = !noXattrs
            options.xattrNotice = { Runtime.warn("warning: \(DisplayText.escape($0))") }
            let archiveOptions = options
            let (streamName, isStdin, isCommand, command) = (stdinName, stdin, stdinFromCommand, command)
            let pg = postgres.conninfo.map { ($0, postgres.databases) }
            let (result, id) = try runBlocking { () -> (ArchiveResult, String) in
              try await repository.locked(exclusive: false) {
                let archiver = Archiver(store: repository.store, options: archiveOptions)
                let result: ArchiveResult
                if let pg {
                    result = try await PostgresBackup.backup(conninfo: pg.0, databases: pg.1, archiver: archiver)
                } else if isStdin {
                    result = try await archiver.backup(stream: 0, name: streamName)
                } else if isCommand {
                    result = try await archiver.backup(command: command, name: streamName)
                } else {
                    result = try await archiver.backup(paths: absolute)
                }
                return (result, try await repository.catalog.saveSnapshot(result.info))
              }
            }
            progress.stop()
            for warning in result.warnings { Runtime.warn("warning: \(warning)") }
            let s = result.info.summary
            if repo.json {
                try printJSON(SnapshotJSON(SnapshotRecord(id: id, info: result.info)))
            } else {
                if !quiet {
                    if let parent = result.info.parent { Runtime.warn("using parent snapshot \(parent.prefix(8))") }
                    Runtime.warn("Files: \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnmodified) unmodified")
                    Runtime.warn("Dirs:  \(s.dirsNew) new, \(s.dirsChanged) changed, \(s.dirsUnmodified) unmodified")
                    Runtime.warn("Added to the repository: \(ProgressLine.bytes(UInt64(s.dataAdded))) in \(s.dataBlobs) data and \(counted(s.treeBlobs, "tree blob")); processed \(counted(s.totalFilesProcessed, "file")), \(ProgressLine.bytes(UInt64(s.totalBytesProcessed)))")
                }
                TreeFormat.out("snapshot \(id.prefix(8)) saved")
            }
            if !result.warnings.isEmpty {
                throw TreeError.readFailed(path: "\(result.warnings.count) entries", reason: "snapshot \(id.prefix(8)) was saved without them")
            }
        }
    }

    static func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var out: [Substring] = []
        for part in full.split(separator: "/") where part != "." {
            if part == ".." { if !out.isEmpty { out.removeLast() } } else { out.append(part) }
        }
        return "/" + out.joined(separator: "/")
    }
}

/// A progress line on standard error while a backup runs (a terminal only).
final class BackupProgress: @unchecked Sendable {
    private let line: ProgressLine?
    private let lock = NSLock()
    private var last: Int64 = 0

    init(enabled: Bool) { line = enabled ? ProgressLine(total: nil, quiet: false) : nil }

    var callback: (@Sendable (Int, Int64) -> Void)? {
        guard let line else { return nil }
        return { [self] _, bytes in
            let delta = lock.withLock { () -> Int64 in
                let d = max(0, bytes - last)
                last = max(last, bytes)
                return d
            }
            if delta > 0 { line.counter.add(UInt64(delta)) }
        }
    }

    func stop() { line?.stop() }
}

extension CompressionMode: ExpressibleByArgument {}
