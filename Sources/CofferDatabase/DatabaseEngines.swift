import CofferRepository

/// The engines this build restores, by the engine a snapshot's ``DatabaseInfo`` names: `restore-db`
/// and `restore-test` dispatch through this table (one line per engine).
public enum DatabaseEngines {
    public static let all: [DatabaseInfo.Engine: any DatabaseEngine.Type] = [
        .postgresql: PostgreSQLEngine.self,
        .mariadb: MariaDBEngine.self,
    ]

    /// The engine for a snapshot's database backup; refuses snapshots without one.
    public static func engine(for info: SnapshotInfo) throws -> any DatabaseEngine.Type {
        guard let database = info.database else {
            throw DatabaseError.unsupported("the snapshot is not a database backup (it has no database information)")
        }
        guard let engine = all[database.engine] else {
            throw DatabaseError.unsupported("this build does not restore \(database.engine.rawValue) snapshots")
        }
        return engine
    }
}
