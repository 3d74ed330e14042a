import CofferRepository
import Foundation

/// The contract between the database-independent commands (`backup --postgres/--mariadb`,
/// `restore-db`, `restore-test`) and one engine's code (PostgreSQL.swift, MariaDB.swift).
///
/// Layering: this module sits beside the archiver and restorer (layer 3); it runs the database tools
/// as child processes (no shell, an environment without Coffer's secrets: ``CofferKeys/ChildEnvironment``
/// plus the tool's own variables such as PGPASSFILE/PGPASSWORD), streams their output into the
/// repository through ``Archiver`` and back out through ``Restorer``; no plaintext touches the disk
/// except where the engine itself needs files (mariabackup's prepare works on a directory).

/// A server started for a restore test in a temporary directory on a free port (or socket), owned by
/// this process. Everything it created is removed by ``tearDown()``.
public protocol ThrowawayServer: AnyObject, Sendable {
    var engine: DatabaseInfo.Engine { get }

    /// Exact per-table row counts of every user database now (system schemas and databases left out),
    /// in the shape recorded at backup time, so the two can be compared table by table.
    func rowCounts() async throws -> [DatabaseInfo.Database]

    /// Runs one SQL query in `database` (nil: the engine's default) and returns the rows, each column
    /// as text (NULL as the empty string): what a `--check-sql` file's expectations are compared with.
    func query(_ sql: String, database: String?) async throws -> [[String]]

    /// Stops the server (waiting for its processes to exit, killing them if they do not) and removes
    /// its temporary directory. Idempotent; safe to call after a failed start and on interruption.
    func tearDown()
}

/// One database engine's restore side, used by `restore-db` and `restore-test`.
public protocol DatabaseEngine: Sendable {
    static var engine: DatabaseInfo.Engine { get }

    /// Starts a throwaway server of this engine (the tools found on PATH or in the engine's usual
    /// directories), running as an unprivileged user when this process is root.
    static func startThrowaway() async throws -> any ThrowawayServer

    /// Restores the snapshot's databases into a throwaway server started by ``startThrowaway()``.
    /// `chain` is the snapshot and, for an incremental physical backup, its bases, oldest first
    /// (each with its id and ``SnapshotInfo``); `store` reads their files.
    static func restore(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                        into server: any ThrowawayServer) async throws

    /// `restore-db`: restores the snapshot into a real server or directory as `options` say and
    /// returns one line per step done. Has a default (refusing), so an engine may leave it out.
    static func restoreDB(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                          options: RestoreDBOptions) async throws -> [String]
}

/// What `restore-db` asks of an engine (restoring into a real server or directory, not a throwaway).
/// Fields an engine does not use are ignored by it; engine-specific settings go into `settings`.
public struct RestoreDBOptions: Sendable {
    /// Where to restore: PostgreSQL, a libpq connection string; MariaDB, a target directory.
    public var target: String?
    /// Only these databases of the snapshot (empty: all of them).
    public var databases: [String] = []
    /// Create each database (PostgreSQL: `pg_restore --create`).
    public var create = false
    /// Also restore the server's global objects (PostgreSQL: roles and tablespaces).
    public var globals = false
    /// Databases restored at once.
    public var jobs = 1
    /// Leave object ownership to the restoring user (PostgreSQL: `--no-owner`).
    public var noOwner = false
    /// Engine-specific settings by name.
    public var settings: [String: String] = [:]
    /// Called with one line per step as the restore goes on (for the user's terminal).
    public var log: (@Sendable (String) -> Void)?

    public init() {}
}

extension DatabaseEngine {
    /// Restores the snapshot (`chain` as for ``restore(chain:from:into:)``) as `options` say; returns
    /// one line per step done. Engines that do not implement it refuse.
    public static func restoreDB(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                                 options: RestoreDBOptions) async throws -> [String] {
        throw DatabaseError.unsupported("restore-db is not implemented for \(engine.rawValue) snapshots")
    }
}
