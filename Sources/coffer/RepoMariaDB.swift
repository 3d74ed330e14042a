import ArgumentParser
import CofferDatabase
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `coffer backup --mariadb`: the flags, and the backup run (the library does the work).
struct MariaDBOptions: ParsableArguments {
    @Flag(help: "Back up the local MariaDB/MySQL server with mariabackup (a physical backup, streamed into the repository as /mariadb/backup.xbstream).")
    var mariadb = false

    @Option(name: .customLong("mariadb-defaults-file"),
            help: ArgumentHelp("A client option file ([client] user, password, socket; [mariadb-backup] options), given to the tools as their first argument. Without it the tools read no option file and use the socket /run/mysqld/mysqld.sock; passwords are accepted only in this file.",
                               valueName: "file"))
    var defaultsFile: String?

    @Flag(name: .customLong("mariadb-incremental"),
          help: "An incremental physical backup on top of the newest MariaDB snapshot of this host.")
    var incremental = false

    func validate() throws {
        if !mariadb && (defaultsFile != nil || incremental) {
            throw ValidationError("--mariadb-defaults-file and --mariadb-incremental need --mariadb")
        }
        if let defaultsFile, !FileManager.default.isReadableFile(atPath: defaultsFile) {
            throw ValidationError("--mariadb-defaults-file \(defaultsFile) is not a readable file")
        }
    }
}

extension RepoBackup {
    /// Checks of the flags that combine with --mariadb.
    func validateMariaDB() throws {
        if stdin || stdinFromCommand || !arguments.isEmpty {
            throw ValidationError("--mariadb takes no paths and excludes --stdin and --stdin-from-command")
        }
        if !exclude.isEmpty { throw ValidationError("--exclude does not apply to --mariadb") }
    }

    /// `backup --mariadb`: a physical backup into a new snapshot (incremental on request).
    func runMariaDB() throws {
        try Runtime.reporting {
            let (repository, options) = try openForBackup()
            var base: SnapshotRecord?
            if mariadb.incremental {
                if repository.writeOnly {
                    throw UsageError("an incremental backup reads its base snapshot: a writer key cannot (take full backups with it)")
                }
                base = try MariaDBBackup.incrementalBase(in: try loadSnapshots(repository), host: options.hostname)
            }
            let (archiveOptions, connection) = (options, MariaDBConnection(defaultsFile: mariadb.defaultsFile.map(Self.absolute)))
            let request = MariaDBBackup.Request(connection: connection, base: base)
            let (result, id) = try runBlocking { () -> (ArchiveResult, String) in
                try await repository.locked(exclusive: false) {
                    let archiver = Archiver(store: repository.store, options: archiveOptions)
                    let result = try await MariaDBBackup.run(request, archiver: archiver)
                    return (result, try await repository.catalog.saveSnapshot(result.info))
                }
            }
            if repo.json {
                try printJSON(SnapshotJSON(SnapshotRecord(id: id, info: result.info)))
                return
            }
            if !quiet, let database = result.info.database, let physical = database.physical {
                let tables = database.databases.reduce(0) { $0 + $1.tables.count }
                let kind = base.map { "incremental on \($0.shortID)" } ?? "full"
                Runtime.warn("\(database.method) \(kind) backup of \(database.serverVersion): LSN \(physical.fromLSN)–\(physical.toLSN), \(counted(database.databases.count, "database")), \(counted(tables, "table")) counted")
                Runtime.warn("Added to the repository: \(ProgressLine.bytes(UInt64(result.info.summary.dataAdded))) of \(ProgressLine.bytes(UInt64(result.info.summary.totalBytesProcessed))) streamed")
            }
            TreeFormat.out("snapshot \(id.prefix(8)) saved")
        }
    }
}
