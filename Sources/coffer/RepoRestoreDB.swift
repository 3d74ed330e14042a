import ArgumentParser
import CofferDatabase
import CofferFormat
import CofferRepository
import Foundation

struct RepoRestoreDB: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-db",
        abstract: "Restore a database snapshot into a server.",
        discussion: """
        PostgreSQL snapshots (backup --postgres): each database's dump goes from the repository \
        through a pipe into pg_restore (no plaintext file), stopping at the first error with \
        pg_restore's message. --target is a libpq connection string (no password in it: PGPASSFILE, \
        ~/.pgpass or PGPASSWORD). With --create, each database is created under its own name \
        (pg_restore --create, connecting to the target's dbname or 'postgres'); without it, each \
        is restored into the existing database of the same name, or, when one database is \
        restored, into the target's dbname. --globals first restores roles and tablespaces \
        (statements that fail, such as roles that exist, are reported and skipped). pg_restore -j \
        cannot read a pipe, so --jobs N restores up to N databases at once, each with one pg_restore.

        MariaDB snapshots (backup --mariadb): --copy-back DATADIR or --move-back DATADIR (or \
        --target DATADIR, which moves) restores the snapshot and the incremental ones below it: \
        each is extracted with mbstream -x, the full backup prepared with mariabackup --prepare, \
        each incremental applied in order, and the result copied (or moved) into DATADIR, which \
        must be missing or empty (the server using it stopped); the files are given to the owner \
        of an existing DATADIR, or to 'mysql' when run as root. A failing step shows its output.
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Option(help: ArgumentHelp("Where to restore (PostgreSQL: a libpq connection string; MariaDB: a data directory, moved into).", valueName: "target"))
    var target: String?

    @Option(name: .customLong("copy-back"), help: ArgumentHelp("MariaDB: prepare the backup and copy it into this data directory (missing or empty).", valueName: "datadir"))
    var copyBack: String?

    @Option(name: .customLong("move-back"), help: ArgumentHelp("MariaDB: prepare the backup and move it into this data directory (missing or empty).", valueName: "datadir"))
    var moveBack: String?

    @Option(name: .customLong("database"), help: ArgumentHelp("Restore only this database (repeatable; default: all in the snapshot).", valueName: "name"))
    var databases: [String] = []

    @Flag(help: "Create each database (it must not exist).")
    var create = false

    @Flag(help: "Also restore the server's global objects (roles, tablespaces).")
    var globals = false

    @Flag(name: .customLong("no-owner"), help: "Do not restore object ownership (the restoring user owns everything).")
    var noOwner = false

    @Option(help: ArgumentHelp("Databases restored at once.", valueName: "n"))
    var jobs = 1

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        let given = [target, copyBack, moveBack].compactMap { $0 }
        if given.count != 1 { throw ValidationError("give exactly one of --target, --copy-back DATADIR and --move-back DATADIR") }
        if given[0].isEmpty { throw ValidationError("the target must not be empty") }
    }

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("restore-db")
            let repository = try openTreeRepository(repo, keys: keys)
            let records = try loadSnapshots(repository)
            let record = try SnapshotSelection.resolve(snapshot, in: records)
            let chain = try databaseChain(record, in: records)
            let engine = try DatabaseEngines.engine(for: record.info)
            let info = record.info
            var options = RestoreDBOptions()
            options.target = target ?? copyBack ?? moveBack
            if copyBack != nil || moveBack != nil {
                guard engine.engine == .mariadb else {
                    throw ValidationError("--copy-back and --move-back restore physical MariaDB backups; snapshot \(record.shortID) is a \(engine.engine.rawValue) backup: use --target")
                }
                options.settings["copy-back"] = copyBack != nil ? "1" : "0"
            }
            options.databases = databases
            options.create = create
            options.globals = globals
            options.noOwner = noOwner
            options.jobs = jobs
            let quiet = repo.json
            // Lines name databases from the snapshot: escaped before they reach the terminal.
            options.log = { line in if !quiet { TreeFormat.out(DisplayText.escape(line)) } }
            let finalOptions = options
            let lines = try runBlocking {
                try await repository.locked(exclusive: false) {
                    try await DatabaseEngines.engine(for: info).restoreDB(chain: chain, from: repository.store, options: finalOptions)
                }
            }
            if repo.json {
                struct Result: Encodable { let snapshot: String; let steps: [String] }
                try printJSON(Result(snapshot: record.id, steps: lines))
            }
        }
    }
}
