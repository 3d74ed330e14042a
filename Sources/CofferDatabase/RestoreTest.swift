import CofferRepository
import Foundation

/// `restore-test`: restores a database snapshot into a throwaway server of its engine, compares
/// every table's row count with the count recorded at backup time, runs the check files' queries,
/// and tears the server down, whatever happened. Engine-neutral: the engine comes from
/// ``DatabaseEngines``.
public enum RestoreTester {
    /// Runs the test. Throws only when no test could be run (no database snapshot, the engine's
    /// server cannot be started); a failed restore, a mismatch or a failed check is a result with
    /// `passed == false`.
    public static func run(snapshot id: String, chain: [(id: String, info: SnapshotInfo)], store: any BlobStore,
                           checks: [CheckFile], hostname: String, programVersion: String,
                           log: (@Sendable (String) -> Void)? = nil) async throws -> RestoreTestResult {
        guard let info = chain.last?.info, let recorded = info.database else {
            throw DatabaseError.unsupported("the snapshot is not a database backup (it has no database information)")
        }
        let engine = try DatabaseEngines.engine(for: info)
        let started = Date()
        var result = RestoreTestResult(snapshot: id, engine: recorded.engine.rawValue, passed: false, time: started,
                                       hostname: hostname, programVersion: programVersion)
        result.databases = recorded.databases.map(\.name)
        func since(_ t: Date) -> Double { (Date().timeIntervalSince(t) * 1000).rounded() / 1000 }
        log?("starting a throwaway \(recorded.engine.rawValue) server")
        var phase = Date()
        let server = try await engine.startThrowaway()
        result.durations.serverStart = since(phase)
        defer { server.tearDown() }
        do {
            phase = Date()
            log?("restoring \(counted(recorded.databases.count, "database"))")
            try await engine.restore(chain: chain, from: store, into: server)
            result.durations.restore = since(phase)
            phase = Date()
            log?("comparing row counts")
            let restored = try await server.rowCounts()
            for db in recorded.databases {
                guard let got = restored.first(where: { $0.name == db.name }) else {
                    result.mismatches.append("\(db.name): the database is missing after the restore")
                    continue
                }
                let gotTables = Dictionary(got.tables.map { ("\($0.schema).\($0.name)", $0.rows) }, uniquingKeysWith: { a, _ in a })
                let wanted = Set(db.tables.map { "\($0.schema).\($0.name)" })
                for table in db.tables {
                    let key = "\(table.schema).\(table.name)"
                    result.tablesCompared += 1
                    // Saturating: the counts come from the snapshot, whose writer may claim anything.
                    let (sum, overflow) = result.rowsCompared.addingReportingOverflow(max(0, table.rows))
                    result.rowsCompared = overflow ? Int64.max : sum
                    guard let rows = gotTables[key] else {
                        result.mismatches.append("\(db.name): table \(key) (\(table.rows) rows recorded) is missing after the restore")
                        continue
                    }
                    if rows != table.rows {
                        result.mismatches.append("\(db.name): table \(key): \(table.rows) rows recorded, \(rows) restored")
                    }
                }
                for key in gotTables.keys.sorted() where !wanted.contains(key) {
                    result.mismatches.append("\(db.name): table \(key) was not recorded at backup time")
                }
            }
            result.durations.compare = since(phase)
            phase = Date()
            for file in checks {
                for q in file.queries {
                    var check = RestoreTestResult.Check(file: file.path, line: q.line, name: q.name, database: q.database,
                                                        passed: false, expected: q.expected, got: nil, error: nil)
                    do {
                        let got = try await server.query(q.sql, database: q.database)
                        check.got = got
                        check.passed = CheckFile.matches(got, q.expected)
                    } catch {
                        check.error = "\(error)"
                    }
                    result.checks.append(check)
                }
            }
            if !checks.isEmpty { log?("ran \(counted(result.checks.count, "check query"))") }
            result.durations.checks = since(phase)
        } catch {
            result.error = "\(error)"
        }
        result.passed = result.error == nil && result.mismatches.isEmpty && result.checks.allSatisfy(\.passed)
        result.durations.total = since(started)
        return result
    }
}
