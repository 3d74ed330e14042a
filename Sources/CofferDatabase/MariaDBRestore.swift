import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The running children of a restore, so that an interruption can stop them (a throwaway
/// server's ``ThrowawayMariaDB/tearDown()`` kills them before removing their directory).
final class MariaDBChildTracker: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [pid_t: MariaDBChild] = [:]
    private var stopped = false

    /// Starts a child and tracks it until it is reaped; refused once ``killAll()`` ran.
    func run(step: String, _ executable: String, _ arguments: [String], stdin: MariaDBChild.Input = .null) throws {
        let child = try start(executable, arguments, stdin: stdin)
        try finish(child, step: step)
    }

    func start(_ executable: String, _ arguments: [String], stdin: MariaDBChild.Input = .null) throws -> MariaDBChild {
        try lock.withLock {
            guard !stopped else { throw MariaDBError.refused("the restore was interrupted") }
            let child = try MariaDBChild(executable, arguments, stdin: stdin)
            children[child.pid] = child
            return child
        }
    }

    func finish(_ child: MariaDBChild, step: String) throws {
        let status = child.wait()
        _ = lock.withLock { children.removeValue(forKey: child.pid) }
        let output = child.outputTail()
        guard status == 0 else { throw MariaDBError.stepFailed(step: step, status: MariaDBTools.describe(status), output: output) }
    }

    /// Kills every tracked child and waits for it; later starts are refused.
    func killAll() {
        let running = lock.withLock { () -> [MariaDBChild] in
            stopped = true
            return Array(children.values)
        }
        for child in running { child.signal(SIGKILL); child.wait() }
    }
}

/// Restoring a physical MariaDB backup (a chain of snapshots: a full one and the incremental ones
/// on top, oldest first) into a data directory — seed 000's steps in one call: each snapshot's
/// `/mariadb/backup.xbstream` is read from the repository (authenticated chunk by chunk) through
/// a pipe into `mbstream -x`, the full backup is prepared with `mariabackup --prepare`, each
/// incremental applied in order (`--prepare --incremental-dir`), and the result moved (or copied)
/// into the data directory, whose files are then given to the server's user.
public enum MariaDBRestore {
    /// The snapshots `record` needs, oldest first: itself and, for an incremental backup, its
    /// bases (following ``DatabaseInfo/PhysicalBackup/baseSnapshot``) down to a full backup.
    public static func chain(ending record: SnapshotRecord, in records: [SnapshotRecord]) throws -> [(id: String, info: SnapshotInfo)] {
        var out: [(id: String, info: SnapshotInfo)] = [(record.id, record.info)]
        var seen: Set<String> = [record.id]
        var current = record
        while let baseID = current.info.database?.physical?.baseSnapshot {
            guard let base = records.first(where: { $0.id == baseID }) else {
                throw MariaDBError.refused("snapshot \(current.shortID) is incremental on snapshot \(baseID.prefix(8)), which is not in the repository (forgotten?)")
            }
            guard seen.insert(base.id).inserted, out.count < 10_000 else {
                throw MariaDBError.refused("the chain of snapshot \(record.shortID) loops")
            }
            out.insert((base.id, base.info), at: 0)
            current = base
        }
        try validate(out)
        return out
    }

    /// Checks a chain: every snapshot a physical MariaDB backup, the first a full one, each next an
    /// incremental one on the previous snapshot starting at its checkpoint LSN.
    static func validate(_ chain: [(id: String, info: SnapshotInfo)]) throws {
        guard let first = chain.first else { throw MariaDBError.refused("no snapshot to restore") }
        for (i, link) in chain.enumerated() {
            let short = String(link.id.prefix(8))
            guard let database = link.info.database, database.engine == .mariadb, let physical = database.physical else {
                throw MariaDBError.refused("snapshot \(short) is not a physical MariaDB backup")
            }
            if i == 0 {
                guard physical.backupType == "full-backuped", physical.baseSnapshot == nil else {
                    throw MariaDBError.refused("snapshot \(short) is an incremental backup whose base is missing from the chain")
                }
            } else {
                let previous = chain[i - 1]
                guard physical.backupType == "incremental", physical.baseSnapshot == previous.id,
                      physical.fromLSN == previous.info.database?.physical?.toLSN else {
                    throw MariaDBError.refused("snapshot \(short) does not continue snapshot \(previous.id.prefix(8)) (LSN \(physical.fromLSN) vs \(previous.info.database?.physical?.toLSN ?? 0))")
                }
            }
            _ = try streamPath(link)
        }
        _ = first
    }

    /// What a restore learnt from the prepared backup.
    public struct Prepared: Sendable, Equatable {
        /// `innodb_page_size` from the backup's `backup-my.cnf` (the server must start with it).
        public var pageSize: Int?
    }

    /// Restores `chain` into `datadir` (missing, or an empty directory), working in `scratch` (an
    /// existing private directory, best on the same file system as `datadir` so that moving is a
    /// rename). `owner`: the files' owner afterwards (root only). `log`: one line per step.
    static func restore(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore, datadir: String,
                        scratch: String, move: Bool, owner: (uid: uid_t, gid: gid_t)?, tracker: MariaDBChildTracker,
                        log: (@Sendable (String) -> Void)?) async throws -> Prepared {
        try validate(chain)
        let backupTool = try MariaDBTools.backupTool()
        let streamTool = try MariaDBTools.streamTool()
        let percona = (backupTool as NSString).lastPathComponent == "xtrabackup"
        let toolName = (backupTool as NSString).lastPathComponent
        let base = scratch + "/base"
        var directories: [String] = []
        for (i, link) in chain.enumerated() {
            let directory = i == 0 ? base : "\(scratch)/inc\(i)"
            guard mkdir(directory, 0o700) == 0 else { throw MariaDBError.io(path: directory, reason: MariaDBTools.errorText()) }
            log?("extracting snapshot \(link.id.prefix(8)) (\(link.info.database?.physical?.backupType ?? "?")) with \((streamTool as NSString).lastPathComponent) -x")
            try await extract(link, from: store, into: directory, tool: streamTool, tracker: tracker)
            directories.append(directory)
        }
        for (i, directory) in directories.enumerated() {
            var arguments = ["--no-defaults", "--prepare", "--target-dir=\(base)"]
            if i > 0 { arguments.append("--incremental-dir=\(directory)") }
            if percona && i < directories.count - 1 { arguments.append("--apply-log-only") }
            log?(i == 0 ? "\(toolName) --prepare (full backup)" : "\(toolName) --prepare --incremental-dir (incremental \(i) of \(directories.count - 1))")
            try tracker.run(step: i == 0 ? "\(toolName) --prepare" : "\(toolName) --prepare --incremental-dir (snapshot \(chain[i].id.prefix(8)))",
                            backupTool, arguments)
            if i > 0 { try? FileManager.default.removeItem(atPath: directory) }
        }
        let prepared = Prepared(pageSize: pageSize(in: base))
        let mode = move ? "--move-back" : "--copy-back"
        log?("\(toolName) \(mode) into \(datadir)")
        try tracker.run(step: "\(toolName) \(mode)", backupTool, ["--no-defaults", mode, "--target-dir=\(base)", "--datadir=\(datadir)"])
        if let owner { try MariaDBTools.chownRecursive(datadir, uid: owner.uid, gid: owner.gid) }
        return prepared
    }

    /// The path in the snapshot of a link's xbstream file, as tree names: below /mariadb/ (where
    /// backups write it), every component a valid name. The snapshot is authenticated, but its
    /// writer (a writer key is enough) chooses this path.
    static func streamPath(_ link: (id: String, info: SnapshotInfo)) throws -> [[UInt8]] {
        let file = link.info.database?.physical?.file ?? MariaDBBackup.filePath
        let components = file.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { Array($0.utf8) }
        guard file.hasPrefix("/mariadb/"), components.count >= 2, components.allSatisfy({ TreeNode.invalidNameReason($0) == nil }) else {
            throw MariaDBError.refused("snapshot \(link.id.prefix(8)) names an invalid stream file")
        }
        return components
    }

    /// Streams one snapshot's xbstream file into `mbstream -x -C directory`.
    static func extract(_ link: (id: String, info: SnapshotInfo), from store: any BlobStore, into directory: String,
                        tool: String, tracker: MariaDBChildTracker) async throws {
        let components = try streamPath(link)
        let pipe = try MariaDBTools.pipe()
        let child: MariaDBChild
        do {
            child = try tracker.start(tool, ["-x", "-C", directory], stdin: .fd(pipe.read))
        } catch {
            close(pipe.read); close(pipe.write)
            throw error
        }
        close(pipe.read)
        let step = "\((tool as NSString).lastPathComponent) -x (snapshot \(link.id.prefix(8)))"
        do {
            _ = try await Restorer(store: store).dump(root: link.info.tree, path: components, to: pipe.write)
        } catch {
            close(pipe.write)
            // A write error because the extractor died is the extractor's failure: show its output.
            try tracker.finish(child, step: step)
            throw error
        }
        close(pipe.write)
        try tracker.finish(child, step: step)
    }

    /// `innodb_page_size` from `backup-my.cnf` in a prepared backup, if it is a valid page size.
    static func pageSize(in directory: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: directory + "/backup-my.cnf"), data.count < 65536 else { return nil }
        for line in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, parts[0] == "innodb_page_size", let value = Int(parts[1]),
               [4096, 8192, 16384, 32768, 65536].contains(value) {
                return value
            }
        }
        return nil
    }

    /// `restore-db` of a MariaDB snapshot chain into a data directory that is missing or empty
    /// (the server that will use it must be stopped). Work files live in a private directory
    /// beside `datadir` (so `--move-back` renames) and are removed in every case. The files are
    /// given to the owner of an existing `datadir`, or, when this process is root and created the
    /// directory, to the `mysql` user.
    public static func restoreDatadir(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore, datadir: String,
                                      move: Bool = true, log: (@Sendable (String) -> Void)? = nil) async throws {
        try validate(chain)
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        var owner: (uid: uid_t, gid: gid_t)?
        if fm.fileExists(atPath: datadir, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw MariaDBError.refused("\(datadir) exists and is not a directory") }
            guard (try fm.contentsOfDirectory(atPath: datadir)).isEmpty else {
                throw MariaDBError.refused("\(datadir) is not empty: restore into an empty or new data directory")
            }
            var st = stat()
            guard stat(datadir, &st) == 0 else { throw MariaDBError.io(path: datadir, reason: MariaDBTools.errorText()) }
            if geteuid() == 0 { owner = (st.st_uid, st.st_gid) }
        } else {
            guard mkdir(datadir, 0o750) == 0 else { throw MariaDBError.io(path: datadir, reason: "cannot create: \(MariaDBTools.errorText())") }
            if let user = MariaDBTools.serverUser() { owner = (user.uid, user.gid) }
        }
        let parent = (datadir as NSString).deletingLastPathComponent
        var template = Array("\(parent.isEmpty ? "." : parent)/.coffer-restore-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw MariaDBError.io(path: parent, reason: "cannot create a work directory: \(MariaDBTools.errorText())")
        }
        let scratch = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { try? fm.removeItem(atPath: scratch) }
        _ = try await restore(chain: chain, from: store, datadir: datadir, scratch: scratch, move: move, owner: owner,
                              tracker: MariaDBChildTracker(), log: log)
    }
}
