import ArgumentParser
import CofferDatabase
import CofferRepository
import Foundation

/// `coffer backup --postgres CONNINFO [--database DB]...` (RepoBackup adds these options).
struct PostgresBackupOptions: ParsableArguments {
    @Option(name: .customLong("postgres"),
            help: ArgumentHelp("Back up a PostgreSQL server: a libpq connection string of keyword=value pairs (e.g. 'host=/run/postgresql user=backup') or a postgresql:// URI; the password only from PGPASSFILE, ~/.pgpass or PGPASSWORD, never in the string.",
                               valueName: "conninfo"))
    var conninfo: String?

    @Option(name: .customLong("database"),
            help: ArgumentHelp("With --postgres: back up this database (repeatable; default: every database but the templates).", valueName: "name"))
    var databases: [String] = []

    var enabled: Bool { conninfo != nil }

    func validate() throws {
        if !databases.isEmpty && conninfo == nil { throw ValidationError("--database needs --postgres") }
        if let conninfo {
            do { _ = try PostgresConnInfo(parsing: conninfo) } catch { throw ValidationError("--postgres: \(error)") }
        }
    }
}

/// The chain a database snapshot restores from: its bases (an incremental physical backup's
/// `baseSnapshot`, followed), oldest first, then the snapshot itself.
func databaseChain(_ record: SnapshotRecord, in records: [SnapshotRecord]) throws -> [(id: String, info: SnapshotInfo)] {
    var chain: [(id: String, info: SnapshotInfo)] = [(record.id, record.info)]
    var seen: Set<String> = [record.id]
    while let base = chain.first?.info.database?.physical?.baseSnapshot {
        guard let found = records.first(where: { $0.id == base }) else {
            throw TreeError.notFound("snapshot \(base.prefix(8)), the base of incremental snapshot \(chain.first!.id.prefix(8))")
        }
        guard seen.insert(found.id).inserted else { throw TreeError.invalidRequest("the chain of incremental snapshots loops at \(found.shortID)") }
        chain.insert((found.id, found.info), at: 0)
    }
    return chain
}
