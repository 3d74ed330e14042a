import CofferFormat
import Foundation

/// The outcome of one restore test (`coffer restore-test`) of a database snapshot, stored in the
/// repository as an encrypted object bound to its snapshot (docs/REPOSITORY.md, "Restore-test
/// results").
public struct RestoreTestResult: Codable, Sendable, Equatable {
    /// The full id of the snapshot tested.
    public var snapshot: String
    public var engine: String
    public var passed: Bool
    /// When the test started (UTC).
    public var time: Date
    public var hostname: String
    public var programVersion: String
    /// Wall-clock seconds of each phase.
    public var durations: Durations
    /// The databases restored and compared.
    public var databases: [String] = []
    /// Tables whose row counts were compared with those recorded at backup time, and their rows.
    public var tablesCompared = 0
    public var rowsCompared: Int64 = 0
    /// Every difference found ("shop: public.orders: 1000 rows recorded, 999 restored").
    public var mismatches: [String] = []
    public var checks: [Check] = []
    /// Why the test could not finish (the restore failed, a tool failed), with the tool's message.
    public var error: String?

    public struct Durations: Codable, Sendable, Equatable {
        public var serverStart = 0.0
        public var restore = 0.0
        public var compare = 0.0
        public var checks = 0.0
        public var total = 0.0
        public init() {}
    }

    /// One query of a check file and what it returned.
    public struct Check: Codable, Sendable, Equatable {
        public var file: String
        public var line: Int
        public var name: String?
        public var database: String?
        public var passed: Bool
        public var expected: [[String]]
        public var got: [[String]]?
        public var error: String?
        public init(file: String, line: Int, name: String?, database: String?, passed: Bool, expected: [[String]],
                    got: [[String]]?, error: String?) {
            self.file = file; self.line = line; self.name = name; self.database = database; self.passed = passed
            self.expected = expected; self.got = got; self.error = error
        }
    }

    public init(snapshot: String, engine: String, passed: Bool, time: Date, hostname: String, programVersion: String,
                durations: Durations = Durations()) {
        self.snapshot = snapshot; self.engine = engine; self.passed = passed; self.time = time
        self.hostname = hostname; self.programVersion = programVersion; self.durations = durations
    }
}

/// A stored restore-test result and its object's name.
public struct StoredRestoreTest: Sendable, Equatable {
    public let object: String
    public let result: RestoreTestResult
}

extension Repository {
    /// The marker between the snapshot id and the random part of a result's object name.
    static let restoreTestMarker = "-restoretest-"

    /// Whether `name` (in the snapshots namespace) is a restore-test result, and of which snapshot.
    static func restoreTestSnapshot(_ name: String) -> String? {
        let parts = name.components(separatedBy: restoreTestMarker)
        guard parts.count == 2, isKeyObjectName(parts[0]), parts[1].utf8.count == 16,
              parts[1].utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        return parts[0]
    }

    /// Stores a restore-test result for its snapshot (which must exist) as object
    /// `snapshots/<snapshot id>-restoretest-<16 random hex digits>`; returns the object name.
    @discardableResult
    public func saveRestoreTest(_ result: RestoreTestResult) async throws -> String {
        try requireFullAccess("snapshots")
        guard Self.isKeyObjectName(result.snapshot) else { throw RepositoryError.refused("a restore-test result needs a full snapshot id") }
        _ = try await loadSnapshot(result.snapshot)
        let name = result.snapshot + Self.restoreTestMarker + Hex.encode(randomBytes(8))
        let publicKey = currentDataPublicKey
        _ = try await writeObject(try ObjectName(.snapshots, name), try RepositoryJSON.encode(result)) { try publicKey.stanzas(for: $0) }
        return name
    }

    /// The names of every restore-test result object and the snapshot each belongs to.
    public func restoreTestNames() async throws -> [(name: String, snapshot: String)] {
        try await storage.listAll(.snapshots).compactMap { item in
            Self.restoreTestSnapshot(item.name.name).map { (item.name.name, $0) }
        }.sorted { $0.name < $1.name }
    }

    /// One result, authenticated, bound to its object name and checked to name the snapshot its
    /// object name names.
    public func loadRestoreTest(_ name: String) async throws -> RestoreTestResult {
        try requireFullAccess("snapshots")
        guard let snapshot = Self.restoreTestSnapshot(name) else { throw RepositoryError.refused("\(name) is not a restore-test result name") }
        let object = try ObjectName(.snapshots, name)
        let ring = try dataKeyring
        let (plain, _, _) = try await Self.readObject(storage, object) { try ring.fileKey(for: $0, object: object.description) }
        let result = try RepositoryJSON.decode(RestoreTestResult.self, plain, object: object.description)
        guard result.snapshot == snapshot else {
            throw RepositoryError.damaged(object: object.description, reason: "it is the result of snapshot \(result.snapshot.prefix(8)), not of \(snapshot.prefix(8))")
        }
        return result
    }

    /// Every stored result, oldest first (damaged ones fail the listing).
    public func listRestoreTests() async throws -> [StoredRestoreTest] {
        var out: [StoredRestoreTest] = []
        for (name, _) in try await restoreTestNames() {
            out.append(StoredRestoreTest(object: name, result: try await loadRestoreTest(name)))
        }
        return out.sorted { ($0.result.time, $0.object) < ($1.result.time, $1.object) }
    }

    /// The newest result of each snapshot that has one. Results that fail to authenticate are left
    /// out (`check` reports them), so one damaged result does not hide the snapshot list.
    public func latestRestoreTests() async throws -> [String: RestoreTestResult] {
        var out: [String: RestoreTestResult] = [:]
        for (name, _) in try await restoreTestNames() {
            let result: RestoreTestResult
            do { result = try await loadRestoreTest(name) } catch RepositoryError.damaged { continue }
            if let known = out[result.snapshot], known.time > result.time { continue }
            out[result.snapshot] = result
        }
        return out
    }

    /// Removes the results of snapshot `id` (done when the snapshot is removed); returns how many.
    @discardableResult
    public func removeRestoreTests(of id: String) async throws -> Int {
        var removed = 0
        for (name, snapshot) in try await restoreTestNames() where snapshot == id {
            do { try await storage.remove(try ObjectName(.snapshots, name)) } catch StorageError.notFound {}
            removed += 1
        }
        return removed
    }

    /// Removes results whose snapshot no longer exists (left by an interrupted forget); for prune.
    @discardableResult
    public func removeOrphanedRestoreTests(dryRun: Bool = false) async throws -> Int {
        let snapshots = Set(try await snapshotIDs())
        var removed = 0
        for (name, snapshot) in try await restoreTestNames() where !snapshots.contains(snapshot) {
            if !dryRun { do { try await storage.remove(try ObjectName(.snapshots, name)) } catch StorageError.notFound {} }
            removed += 1
        }
        return removed
    }

    /// For check: results that do not authenticate (errors) and results of missing snapshots
    /// (warnings: prune removes them).
    public func checkRestoreTests() async throws -> (errors: [CheckProblem], warnings: [CheckProblem], count: Int) {
        let snapshots = Set(try await snapshotIDs())
        var errors: [CheckProblem] = [], warnings: [CheckProblem] = []
        let names = try await restoreTestNames()
        for (name, snapshot) in names {
            let object = "snapshots/\(name)"
            do {
                _ = try await loadRestoreTest(name)
                if !snapshots.contains(snapshot) {
                    warnings.append(CheckProblem(object: object, message: "restore-test result of snapshot \(snapshot.prefix(8)), which no longer exists (prune removes it)"))
                }
            } catch let e as RepositoryError {
                switch e {
                case .damaged(_, let reason): errors.append(CheckProblem(object: object, message: "damaged: \(reason)"))
                default: errors.append(CheckProblem(object: object, message: "\(e)"))
                }
            }
        }
        return (errors, warnings, names.count)
    }
}
