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
    /// (server down, refused login, killed) fails this with the end of its output, and no snapshot
    /// is returned (chunks it already stored are unreferenced; `prune` removes them).
    public static func run(_ request: Request, archiver: Archiver, store: any BlobStore) async throws -> ArchiveResult {
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

        let pipe = try MariaDBTools.pipe()
        let child: MariaDBChild
        do {
            child = try MariaDBChild(tool, arguments, stdin: .null, stdout: .fd(pipe.write))
        } catch {
            close(pipe.read); close(pipe.write)
            throw error
        }
        close(pipe.write)
        var result: ArchiveResult
        do {
            result = try await archiver.backup(stream: pipe.read, name: fileName)
        } catch {
            child.signal(SIGTERM)
            child.wait()
            close(pipe.read)
            throw error
        }
        close(pipe.read)
        let status = child.wait()
        let output = child.outputTail()
        guard status == 0 else {
            throw MariaDBError.stepFailed(step: "\(toolName) --backup", status: MariaDBTools.describe(status), output: output)
        }

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
        result.info = try await nest(result.info, store: store)
        result.info.database = DatabaseInfo(
            engine: .mariadb, method: method, serverVersion: version, databases: databases,
            physical: .init(backupType: checkpoints.backupType, fromLSN: checkpoints.fromLSN, toLSN: checkpoints.toLSN,
                            lastLSN: checkpoints.lastLSN, baseSnapshot: request.base?.id, file: filePath))
        return result
    }

    /// Moves the stream file of a one-file snapshot (in its root tree) into `/mariadb/`.
    static func nest(_ info: SnapshotInfo, store: any BlobStore) async throws -> SnapshotInfo {
        let root = try await store.loadTree(info.tree)
        guard root.nodes.count == 1, var file = root.nodes.first else {
            throw MariaDBError.unexpectedOutput("the stream backup's tree has \(root.nodes.count) entries")
        }
        file.name = Array(fileName.utf8)
        let inner = try await store.saveTree(try Tree(nodes: [file]))
        let directoryNode = TreeNode(name: Array(directory.utf8), kind: .directory, mode: 0o700, uid: file.uid, gid: file.gid,
                                     user: file.user, group: file.group, mtimeNanos: file.mtimeNanos, ctimeNanos: file.ctimeNanos,
                                     subtree: inner.id)
        let outer = try await store.saveTree(try Tree(nodes: [directoryNode]))
        try await store.flush()
        var out = info
        out.tree = outer.id
        out.paths = [filePath]
        out.summary.treeBlobs += (inner.added ? 1 : 0) + (outer.added ? 1 : 0)
        out.summary.dirsNew += 1
        return out
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
