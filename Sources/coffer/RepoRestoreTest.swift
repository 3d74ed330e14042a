import ArgumentParser
import CofferDatabase
import CofferFormat
import CofferRepository
import Foundation

struct RepoRestoreTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-test",
        abstract: "Restore a database snapshot into a throwaway server and check it.",
        discussion: """
        Starts a server of the snapshot's engine in a temporary directory (PostgreSQL: initdb and \
        pg_ctl, listening only on a unix socket there, as the 'postgres' user when run as root), \
        restores the snapshot into it, compares every table's row count with the count recorded \
        at backup time, runs the queries of each --check-sql file and compares their rows with the \
        file's '-- expect:' lines (format: docs/DATABASES.md), then stops the server and removes \
        the directory, also on failure and on SIGINT/SIGTERM. The result is stored in the \
        repository with the snapshot (unless --no-save) and shown by 'coffer snapshots'; with \
        --sign KEY the stored result is signed (as 'backup --sign' signs snapshots), and \
        'snapshots --verify-signer KEY.pub' then shows only results that key signed.

        Exit status: 0 the test passed; 1 it failed (restore error, damaged data, a row count or a \
        check that differs: the report says which); other codes as for every command (e.g. 5 when \
        no server could be started, 64 for a bad check file).
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signing: SignOptions

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Option(name: .customLong("check-sql"), help: ArgumentHelp("A file of queries with their expected results (repeatable).", valueName: "file"))
    var checkFiles: [String] = []

    @Flag(name: .customLong("no-save"), help: "Do not store the result in the repository.")
    var noSave = false

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("restore-test")
            if signing.sign != nil && signing.digest != .chunkSHA256 {
                throw ValidationError("restore-test results are signed with chunk-sha256 digests: leave out --signature-digest")
            }
            if signing.sign != nil && noSave { throw ValidationError("--sign signs the stored result: it does not go with --no-save") }
            // Opened before anything runs, so a wrong passphrase or key fails at once.
            let signer = try signing.signer(keys: keys)
            let checks = try checkFiles.map(CheckFile.load)
            let repository = try openTreeRepository(repo, keys: keys)
            let records = try loadSnapshots(repository)
            let record = try SnapshotSelection.resolve(snapshot, in: records)
            let chain = try databaseChain(record, in: records)
            _ = try DatabaseEngines.engine(for: record.info)
            let host = ArchiveOptions.current().hostname
            let version = "coffer \(Coffer.configuration.version)"
            let quiet = repo.json
            let save = !noSave
            let result = try runBlocking { () -> RestoreTestResult in
                try await repository.locked(exclusive: false) {
                    let result = try await RestoreTester.run(snapshot: record.id, chain: chain, store: repository.store, checks: checks,
                                                             hostname: host, programVersion: version,
                                                             log: { line in if !quiet { Runtime.warn(line) } })
                    // Interrupted: the signal handler tore the server down and exits; record nothing.
                    Runtime.waitIfInterrupted()
                    if save { try await repository.repository.saveRestoreTest(result, signer: signer) }
                    return result
                }
            }
            if repo.json {
                try printJSON(result)
            } else {
                Self.printReport(result, shortID: record.shortID)
            }
            if !result.passed { throw ExitCode(1) }
        }
    }

    static func printReport(_ r: RestoreTestResult, shortID: String) {
        TreeFormat.out(DisplayText.escape("restore test of snapshot \(shortID) (\(r.engine), \(r.databases.joined(separator: ", "))): \(r.passed ? "PASSED" : "FAILED")"))
        if let error = r.error { TreeFormat.out(DisplayText.escape("  error: \(error)")) }
        TreeFormat.out("  row counts: \(counted(r.tablesCompared, "table")) compared (\(r.rowsCompared) rows), \(counted(r.mismatches.count, "difference"))")
        for m in r.mismatches { TreeFormat.out(DisplayText.escape("    \(m)")) }
        for c in r.checks {
            let label = c.name.map { " (\($0))" } ?? ""
            var line = "  check \(c.file):\(c.line)\(label): \(c.passed ? "passed" : "FAILED")"
            if !c.passed {
                if let e = c.error { line += ": \(e)" }
                else { line += ": expected \(Self.rows(c.expected)), got \(Self.rows(c.got ?? []))" }
            }
            TreeFormat.out(DisplayText.escape(line))
        }
        let d = r.durations
        TreeFormat.out(String(format: "  time: %.2f s (server start %.2f s, restore %.2f s, compare %.2f s, checks %.2f s)",
                              d.total, d.serverStart, d.restore, d.compare, d.checks))
    }

    static func rows(_ rows: [[String]]) -> String {
        rows.isEmpty ? "no rows" : rows.prefix(5).map { $0.joined(separator: " | ") }.joined(separator: "; ") + (rows.count > 5 ? "; …" : "")
    }
}

/// The restore-test column of `snapshots --json`: the newest result of the snapshot (with
/// --verify-signer: the newest one an accepted signer signed).
struct RestoreTestSummaryJSON: Encodable {
    let time: Date
    let passed: Bool
    let tables_compared: Int
    let checks: Int
    /// The signers the result's signature names (checked only with --verify-signer); empty: unsigned.
    let signed_by: [String]
    /// With --verify-signer: the accepted signer whose signature verified.
    let verified_by: String?
    init(_ stored: StoredRestoreTest) {
        let r = stored.result
        time = r.time; passed = r.passed; tables_compared = r.tablesCompared; checks = r.checks.count
        signed_by = stored.signature.signers; verified_by = stored.signature.verifiedBy
    }

    /// The text `snapshots` shows: "restore-tested TIME, passed[, signed by LABEL]".
    static func text(_ stored: StoredRestoreTest) -> String {
        let r = stored.result
        var text = "restore-tested \(TreeFormat.time.string(from: r.time)), \(r.passed ? "passed" : "FAILED")"
        if let signed = stored.signature.shown { text += ", " + signed }
        return text
    }
}

extension ObjectSignature {
    /// How text output names a signed object's signature (snapshots and restore-test results):
    /// "signed by LABEL" when verified, "signed by LABELS (not verified)" when only claimed by the
    /// trailer, nil when unsigned.
    var shown: String? {
        if let verifiedBy { return "signed by \(verifiedBy)" }
        return signers.isEmpty ? nil : "signed by \(signers.joined(separator: ", ")) (not verified)"
    }
}
