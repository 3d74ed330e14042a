import ArgumentParser
import CofferDatabase
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
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Option(help: ArgumentHelp("Where to restore (PostgreSQL: a libpq connection string).", valueName: "target"))
    var target: String

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
    }

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("restore-db")
            let repository = try openTreeRepository(repo, keys: keys)
            let records = try loadSnapshots(repository)
            let record = try SnapshotSelection.resolve(snapshot, in: records)
            let chain = try databaseChain(record, in: records)
            _ = try DatabaseEngines.engine(for: record.info)
            let info = record.info
            var options = RestoreDBOptions()
            options.target = target
            options.databases = databases
            options.create = create
            options.globals = globals
            options.noOwner = noOwner
            options.jobs = jobs
            let quiet = repo.json
            options.log = { line in if !quiet { TreeFormat.out(line) } }
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
