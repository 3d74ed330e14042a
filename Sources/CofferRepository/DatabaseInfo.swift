import Foundation

/// What a database backup recorded at dump time (issue 14); stored inside the snapshot
/// (``SnapshotInfo/database``), so it is encrypted and authenticated like the rest of the snapshot.
/// nil for file and plain stream backups. `restore-db` and `restore-test` read it to know which
/// engine and which files of the snapshot to use, and what row counts to expect.
public struct DatabaseInfo: Codable, Sendable, Equatable {
    public enum Engine: String, Codable, Sendable {
        case postgresql, mariadb
    }

    public var engine: Engine
    /// The tool that produced the snapshot's files: "pg_dump", "mariabackup", "mysqldump".
    public var method: String
    /// The server's version string as the server reported it (e.g. "15.8", "10.11.6-MariaDB").
    public var serverVersion: String
    /// The databases in the snapshot, each with its file in the snapshot's tree and its tables.
    public var databases: [Database]
    /// Physical backups (mariabackup): the LSNs and the chain; nil for logical dumps.
    public var physical: PhysicalBackup?

    public struct Database: Codable, Sendable, Equatable {
        public var name: String
        /// The path of this database's file in the snapshot (e.g. "/postgres/shop.dump"), or nil when
        /// the database is part of a stream shared with others (a physical backup).
        public var file: String?
        /// The database's size on the server at dump time, in bytes (0 when unknown).
        public var sizeBytes: Int64
        public var tables: [Table]

        public init(name: String, file: String?, sizeBytes: Int64, tables: [Table]) {
            self.name = name; self.file = file; self.sizeBytes = sizeBytes; self.tables = tables
        }
    }

    public struct Table: Codable, Sendable, Equatable, Hashable {
        public var schema: String
        public var name: String
        /// Exact row count at dump time (SELECT count(*)), so a restore can be compared exactly.
        public var rows: Int64

        public init(schema: String, name: String, rows: Int64) {
            self.schema = schema; self.name = name; self.rows = rows
        }
    }

    public struct PhysicalBackup: Codable, Sendable, Equatable {
        /// "full-backuped" or "incremental", as xtrabackup_checkpoints says.
        public var backupType: String
        public var fromLSN: UInt64
        public var toLSN: UInt64
        public var lastLSN: UInt64
        /// For an incremental backup: the id of the snapshot it applies to (full or incremental).
        public var baseSnapshot: String?
        /// The path of the xbstream file in the snapshot (e.g. "/mariadb/backup.xbstream").
        public var file: String

        /// Stored as from_lsn/to_lsn/last_lsn: the repository's JSON converts keys to and from
        /// snake case, and "fromLSN" would come back as "fromLsn" (so is named that way here).
        enum CodingKeys: String, CodingKey {
            case backupType, fromLSN = "fromLsn", toLSN = "toLsn", lastLSN = "lastLsn", baseSnapshot, file
        }

        public init(backupType: String, fromLSN: UInt64, toLSN: UInt64, lastLSN: UInt64, baseSnapshot: String?, file: String) {
            self.backupType = backupType; self.fromLSN = fromLSN; self.toLSN = toLSN; self.lastLSN = lastLSN
            self.baseSnapshot = baseSnapshot; self.file = file
        }
    }

    public init(engine: Engine, method: String, serverVersion: String, databases: [Database], physical: PhysicalBackup? = nil) {
        self.engine = engine; self.method = method; self.serverVersion = serverVersion
        self.databases = databases; self.physical = physical
    }
}
