import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `coffer backup --mariadb`: a physical backup by mariabackup (`--backup --stream=xbstream`)
/// streamed straight into the repository as `/mariadb/backup.xbstream` (no plaintext file), with
/// the LSNs of `xtrabackup_checkpoints` (read from `--extra-lsndir`, outside the stream), the
/// server's version, and its databases with exact per-table row counts in the snapshot's
/// ``DatabaseInfo``.
///
/// Row counts: they are taken with `SELECT COUNT(*)` right after mariabackup finished, not under
/// its backup lock (mariabackup offers no hook inside its BLOCK_COMMIT stage). The physical copy
/// is consistent as of the end of the backup, so counts taken just after it agree with it unless
/// rows were written in the seconds between: a restore test of a backup of a busy server can then
/// report a difference that is not damage.
public enum MariaDBBackup {
    /// The directory and file of the stream in the snapshot.
    public static let directory = "mariadb"
    public static let fileName = "backup.xbstream"
    public static let filePath = "/mariadb/backup.xbstream"

    public struct Request: Sendable {
        public var connection: MariaDBConnection
        /// For an incremental backup: the snapshot it applies to (see ``incrementalBase(in:host:)``).
        public var base: SnapshotRecord?

        public init(connection: MariaDBConnection, base: SnapshotRecord? = nil) {
            self.connection = connection; self.base = base
        }
    }

    /// The newest physical MariaDB snapshot of `host`: the base of an incremental backup.
    public static func incrementalBase(in records: [SnapshotRecord], host: String) throws -> SnapshotRecord {
        let candidates = records.filter {
            $0.info.hostname == host && $0.info.database?.engine == .mariadb && $0.info.database?.physical != nil
        }
        guard let newest = candidates.max(by: { ($0.info.time, $0.id) < ($1.info.time, $1.id) }) else {
            throw MariaDBError.refused("no physical MariaDB snapshot of host \(host) to base an incremental backup on: take a full backup first")
        }
        return newest
    }

    /// Runs mariabackup, streams its output through `archiver`, and returns the result with
    /// ``SnapshotInfo/database`` filled in; the caller saves the snapshot. A mariabackup that fails
    /// (server down, refused login, killed) fails this with the end of its output before anything
    /// is flushed, and no snapshot is returned (chunks already packed stay unreferenced until
    /// `prune`). Works with a writer key (nothing is read back), except for an incremental backup,
    /// whose base snapshot the caller reads.
    public static func run(_ request: Request, archiver: Archiver) async throws -> ArchiveResult {
        let tool = try MariaDBTools.backupTool()
        let toolName = (tool as NSString).lastPathComponent
        let method = toolName == "xtrabackup" ? "xtrabackup" : "mariabackup"
        let client = MariaDBClient(connection: request.connection)
        let version = try client.serverVersion()

        var baseLSN: UInt64?
        if let base = request.base {
            guard let physical = base.info.database?.physical, base.info.database?.engine == .mariadb else {
                throw MariaDBError.refused("snapshot \(base.shortID) is not a physical MariaDB backup")
            }
            baseLSN = physical.toLSN
        }

        let work = try MariaDBTools.temporaryDirectory("coffer-mariabackup")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let lsnDir = work + "/lsn"
        guard mkdir(lsnDir, 0o700) == 0 else { throw MariaDBError.io(path: lsnDir, reason: MariaDBTools.errorText()) }
        var arguments = request.connection.toolArguments + [
            "--backup", "--stream=xbstream", "--target-dir=\(work)/target", "--extra-lsndir=\(lsnDir)",
        ]
        if let baseLSN { arguments.append("--incremental-lsn=\(baseLSN)") }

        // Archiver.backup(streams:) reads the stream to its end, then asks the producer whether it
        // succeeded before anything is flushed or a snapshot returned.
        let producer = MariaDBBackupProducer(tool: tool, arguments: arguments, step: "\(toolName) --backup")
        var result = try await archiver.backup(streams: [StreamSpec(path: filePath, producer: producer)])

        let checkpoints = try Checkpoints(path: lsnDir + "/xtrabackup_checkpoints")
        if let baseLSN {
            guard checkpoints.backupType == "incremental", checkpoints.fromLSN == baseLSN else {
                throw MariaDBError.unexpectedOutput("\(toolName) wrote a \(checkpoints.backupType) backup from LSN \(checkpoints.fromLSN), not an incremental one from \(baseLSN)")
            }
            guard checkpoints.toLSN >= baseLSN else {
                throw MariaDBError.refused("the server's checkpoint LSN \(checkpoints.toLSN) is behind the base snapshot's \(baseLSN) (a different or restored server?): take a full backup")
            }
        } else if checkpoints.backupType != "full-backuped" {
            throw MariaDBError.unexpectedOutput("\(toolName) wrote a \(checkpoints.backupType) backup, not a full one")
        }

        let databases = try client.rowCounts()
        result.info.database = DatabaseInfo(
            engine: .mariadb, method: method, serverVersion: version, databases: databases,
            physical: .init(backupType: checkpoints.backupType, fromLSN: checkpoints.fromLSN, toLSN: checkpoints.toLSN,
                            lastLSN: checkpoints.lastLSN, baseSnapshot: request.base?.id, file: filePath))
        return result
    }

    /// `xtrabackup_checkpoints`: `name = value` lines written by mariabackup into `--extra-lsndir`.
    struct Checkpoints: Equatable {
        var backupType: String
        var fromLSN: UInt64
        var toLSN: UInt64
        var lastLSN: UInt64

        init(path: String) throws {
            guard let data = FileManager.default.contents(atPath: path), data.count < 65536 else {
                throw MariaDBError.unexpectedOutput("mariabackup wrote no xtrabackup_checkpoints file")
            }
            try self.init(text: String(decoding: data, as: UTF8.self))
        }

        init(text: String) throws {
            var values: [String: String] = [:]
            for line in text.split(whereSeparator: \.isNewline) {
                let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2 { values[parts[0]] = parts[1] }
            }
            func lsn(_ name: String) throws -> UInt64 {
                guard let text = values[name], let value = UInt64(text) else {
                    throw MariaDBError.unexpectedOutput("xtrabackup_checkpoints has no valid \(name)")
                }
                return value
            }
            guard let type = values["backup_type"], ["full-backuped", "incremental", "log-applied", "full-prepared"].contains(type) else {
                throw MariaDBError.unexpectedOutput("xtrabackup_checkpoints has no known backup_type")
            }
            backupType = type
            fromLSN = try lsn("from_lsn")
            toLSN = try lsn("to_lsn")
            lastLSN = try lsn("last_lsn")
        }
    }
}

/// mariabackup as the producer of the snapshot's stream: started writing into the archiver's pipe,
/// checked (exit status, the end of its output) once the archiver read the stream to its end.
struct MariaDBBackupProducer: StreamProducer {
    let tool: String
    let arguments: [String]
    let step: String

    func start(writingTo fd: Int32) async throws -> any RunningStream {
        Running(child: try MariaDBChild(tool, arguments, stdin: .null, stdout: .fd(fd)), step: step)
    }

    struct Running: RunningStream {
        let child: MariaDBChild
        let step: String

        func finish() async throws {
            let status = child.wait()
            let output = child.outputTail()
            guard status == 0 else { throw MariaDBError.stepFailed(step: step, status: MariaDBTools.describe(status), output: output) }
        }

        func cancel() {
            child.signal(SIGTERM)
            child.wait()
        }
    }
}
