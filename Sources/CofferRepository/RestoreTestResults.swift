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

/// A stored restore-test result, its object's name and its signature.
public struct StoredRestoreTest: Sendable, Equatable {
    public let object: String
    public let result: RestoreTestResult
    public var signature = ObjectSignature()
    public init(object: String, result: RestoreTestResult, signature: ObjectSignature = ObjectSignature()) {
        self.object = object; self.result = result; self.signature = signature
    }
    /// Counts for a reader that requires `verifiers`: no verifiers, or a signature by one verified.
    public var accepted: Bool { signature.refusal == nil }
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
    /// With `signer`, the object is a signed Coffer object exactly as a signed snapshot is
    /// (``saveSnapshot(_:signer:)``): the signature covers its name, so the snapshot it belongs
    /// to, and every stored payload byte.
    @discardableResult
    public func saveRestoreTest(_ result: RestoreTestResult, signer: PayloadSigner? = nil) async throws -> String {
        try requireFullAccess("snapshots")
        guard Self.isKeyObjectName(result.snapshot) else { throw RepositoryError.refused("a restore-test result needs a full snapshot id") }
        _ = try await loadSnapshot(result.snapshot)
        let name = try ObjectName(.snapshots, result.snapshot + Self.restoreTestMarker + Hex.encode(randomBytes(8)))
        let publicKey = currentDataPublicKey
        let fileKey = FileKey.random()
        let sealed = try CofferObject.seal(try RepositoryJSON.encode(result), objectName: name.description, fileKey: fileKey,
                                           stanzas: try publicKey.stanzas(for: fileKey), signer: signer)
        try await storage.save(name, contents: sealed, overwrite: false)
        return name.name
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
        try await loadRestoreTest(name, verifiers: []).result
    }

    /// One result with its signature. With `verifiers`, the signature is checked: the answer's
    /// `signature.verifiedBy` or `signature.refusal` says how it went (a refused result is still
    /// returned, so a listing can name it; it must not count as a test done).
    public func loadRestoreTest(_ name: String, verifiers: [SignatureVerifier]) async throws -> StoredRestoreTest {
        try requireFullAccess("snapshots")
        guard let snapshot = Self.restoreTestSnapshot(name) else { throw RepositoryError.refused("\(name) is not a restore-test result name") }
        let object = try ObjectName(.snapshots, name)
        let ring = try dataKeyring
        let (plain, _, stored) = try await Self.readObject(storage, object) { try ring.fileKey(for: $0, object: object.description) }
        let result = try RepositoryJSON.decode(RestoreTestResult.self, plain, object: object.description)
        guard result.snapshot == snapshot else {
            throw RepositoryError.damaged(object: object.description, reason: "it is the result of snapshot \(result.snapshot.prefix(8)), not of \(snapshot.prefix(8))")
        }
        let signature = try ObjectSignature.check(stored: stored, object: object.description, subject: .restoreTest(object.description),
                                                  verifiers: verifiers)
        return StoredRestoreTest(object: name, result: result, signature: signature)
    }

    /// Every stored result, oldest first (damaged ones fail the listing). With `verifiers`, each
    /// result's signature is checked (see ``loadRestoreTest(_:verifiers:)``).
    public func listRestoreTests(verifiers: [SignatureVerifier] = []) async throws -> [StoredRestoreTest] {
        var out: [StoredRestoreTest] = []
        for (name, _) in try await restoreTestNames() {
            out.append(try await loadRestoreTest(name, verifiers: verifiers))
        }
        return out.sorted { ($0.result.time, $0.object) < ($1.result.time, $1.object) }
    }

    /// The newest result of each snapshot that has one. Results that fail to authenticate are left
    /// out (`check` reports them), so one damaged result does not hide the snapshot list.
    public func latestRestoreTests() async throws -> [String: RestoreTestResult] {
        try await latestRestoreTests(verifiers: []).mapValues(\.result)
    }

    /// The newest result of each snapshot among those that count: with `verifiers`, only results
    /// whose signature by an accepted signer verifies (an unsigned, otherwise signed or altered
    /// result is passed over, so a forged "passed" never shows); without, every result that
    /// authenticates.
    public func latestRestoreTests(verifiers: [SignatureVerifier]) async throws -> [String: StoredRestoreTest] {
        var out: [String: StoredRestoreTest] = [:]
        for (name, _) in try await restoreTestNames() {
            let stored: StoredRestoreTest
            do { stored = try await loadRestoreTest(name, verifiers: verifiers) } catch RepositoryError.damaged { continue }
            guard stored.accepted else { continue }
            if let known = out[stored.result.snapshot], (known.result.time, known.object) > (stored.result.time, stored.object) { continue }
            out[stored.result.snapshot] = stored
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
