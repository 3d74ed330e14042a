import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct RestoreOptions: Sendable {
    /// Only entries matching one of these (or below a matching directory) are restored; all when empty.
    public var includes: [PathPattern] = []
    /// Files written at once.
    public var concurrency = ProcessInfo.processInfo.activeProcessorCount
    /// Restore numeric owner and group (only possible, and only done by default, as root).
    public var restoreOwnership = geteuid() == 0
    /// Bounds on the trees read (a hostile tree that claims huge sizes or entry counts is refused).
    public var limits = TreeWalkLimits()
    public init() {}
}

/// Bounds on one walk of a snapshot's trees. Trees are content-addressed, so a hostile tree can
/// name the same subtree many times (a few kilobytes of trees that expand to billions of entries)
/// or claim files of exabytes; a walk counts as it goes and refuses past these bounds.
public struct TreeWalkLimits: Sendable, Equatable {
    /// Entries (files, directories, links) visited in one walk.
    public var maxEntries: Int = 20_000_000
    /// Sum of the sizes the visited files claim.
    public var maxTotalBytes: UInt64 = 1 << 56
    public init() {}

    /// Counts what a walk has visited so far.
    public struct Counter: Sendable {
        public let limits: TreeWalkLimits
        public private(set) var entries = 0
        public private(set) var bytes: UInt64 = 0
        public init(_ limits: TreeWalkLimits) { self.limits = limits }

        public mutating func add(_ node: TreeNode) throws {
            entries += 1
            if entries > limits.maxEntries {
                throw TreeError.limitExceeded("the snapshot's trees hold more than \(limits.maxEntries) entries")
            }
            if node.kind == .file {
                let (sum, overflow) = bytes.addingReportingOverflow(node.size)
                if overflow || sum > limits.maxTotalBytes {
                    throw TreeError.limitExceeded("the snapshot's files claim more than \(limits.maxTotalBytes) bytes in all")
                }
                bytes = sum
            }
        }
    }
}

public struct RestoreResult: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var bytes: Int64 = 0
    /// Entries whose setuid or setgid bit was recorded but not restored.
    public var droppedSpecialBits = 0
    /// Entries that could not be restored (the restore went on with the others); nothing was
    /// written under their final names. A restore with failures throws ``TreeError/restoreIncomplete(_:)``.
    public var failures: [RestoreFailure] = []
    public init() {}
}

/// An entry a restore could not write, and why.
public struct RestoreFailure: Sendable, Equatable {
    /// The entry's path in the snapshot (below the target), as shown to users.
    public var path: String
    public var reason: String
    public var category: ErrorCategory
    public init(path: String, reason: String, category: ErrorCategory) {
        self.path = path; self.reason = reason; self.category = category
    }
}

/// Restores a snapshot's tree below a target directory. Rules (docs/REPOSITORY.md, "Restore"):
/// nothing is written outside the target: every entry is created with `*at` calls relative to its
/// directory's descriptor, directories are opened with `O_NOFOLLOW` (a symbolic link or file in the
/// way of a directory is refused), names come only from validated trees (no "/", no "." or "..");
/// a file or link is written under a temporary name and renamed over its final name only once
/// complete (the rename replaces a link itself, never what it points to); modes keep permission
/// bits only (setuid and setgid are never restored, sticky only on directories); mtimes are set
/// after content; directories get their mode and times after their entries.
public final class Restorer: @unchecked Sendable {
    let store: any BlobStore
    let options: RestoreOptions
    private let limiter: Limiter
    private let lock = NSLock()
    private var result = RestoreResult()
    /// The target as written in paths below it: failures are reported by their path in the snapshot.
    private var targetPrefix = ""

    public init(store: any BlobStore, options: RestoreOptions = RestoreOptions()) {
        self.store = store
        self.options = options
        limiter = Limiter(options.concurrency)
    }

    static let maxDepth = 1024

    final class PlanDirectory {
        let node: TreeNode?
        var entries: [PlanEntry] = []
        init(node: TreeNode?) { self.node = node }
    }

    enum PlanEntry {
        case directory(PlanDirectory)
        case leaf(TreeNode)
    }

    /// Restores the tree `root` into `target` (created if missing). Reads only the trees on the way
    /// and the content of the files selected. An entry that fails (a damaged blob or subtree, a
    /// write error, something in the way) is recorded and the restore goes on with the others;
    /// at the end, failures throw ``TreeError/restoreIncomplete(_:)`` with the whole result.
    /// The root tree failing to load, the target failing, or the limits being exceeded stop it at once.
    public func restore(root: BlobID, target: String) async throws -> RestoreResult {
        lock.withLock { targetPrefix = target }
        var counter = TreeWalkLimits.Counter(options.limits)
        let plan = try await self.plan(root, path: [], matched: options.includes.isEmpty, depth: 0, counter: &counter)
            ?? PlanDirectory(node: nil)
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw TreeError.writeFailed(path: target, reason: "cannot create the directory")
        }
        let fd = Glibc.open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw TreeError.writeFailed(path: target, reason: FS.errorText()) }
        await restoreEntries(plan, in: Descriptor(fd), path: target)
        var final = lock.withLock { result }
        final.failures.sort { $0.path < $1.path }
        if !final.failures.isEmpty { throw TreeError.restoreIncomplete(final) }
        return final
    }

    private func fail(_ shownPath: String, _ error: Error) {
        let prefix = lock.withLock { targetPrefix }
        let path = !prefix.isEmpty && shownPath.hasPrefix(prefix + "/") ? String(shownPath.dropFirst(prefix.count)) : shownPath
        let failure: RestoreFailure
        if let e = error as? TreeError, case .restoreIncomplete = e {
            return
        } else if let e = error as? CategorizedError {
            failure = RestoreFailure(path: path, reason: "\(e)", category: e.category)
        } else {
            failure = RestoreFailure(path: path, reason: "\(error)", category: .io)
        }
        lock.withLock { result.failures.append(failure) }
    }

    /// The selected part of a tree, or nil when nothing below it is selected.
    /// A subtree that cannot be loaded is recorded as a failure of its directory (below the root).
    private func plan(_ id: BlobID, path: [UInt8], matched: Bool, depth: Int, counter: inout TreeWalkLimits.Counter) async throws -> PlanDirectory? {
        guard depth < Restorer.maxDepth else { throw TreeError.malformedTree("trees nested deeper than \(Restorer.maxDepth)") }
        let tree: Tree
        do { tree = try await store.loadTree(id) } catch {
            guard depth > 0 else { throw error }
            fail(TreeNode.display(path), error)
            return nil
        }
        let directory = PlanDirectory(node: nil)
        for node in tree.nodes {
            let childPath = path + [0x2f] + node.name
            let selected = matched || options.includes.contains { $0.matches(path: childPath, name: node.name) }
            if selected || node.kind == .directory { try counter.add(node) }
            if node.kind == .directory {
                if let sub = try await plan(node.subtree!, path: childPath, matched: selected, depth: depth + 1, counter: &counter) {
                    let child = PlanDirectory(node: node)
                    child.entries = sub.entries
                    directory.entries.append(.directory(child))
                }
            } else if selected {
                directory.entries.append(.leaf(node))
            }
        }
        return matched || !directory.entries.isEmpty ? directory : nil
    }

    /// Restores every entry of `plan`; a failing entry is recorded and the others go on.
    private func restoreEntries(_ plan: PlanDirectory, in directory: Descriptor, path: String) async {
        await withTaskGroup(of: Void.self) { group in
            for entry in plan.entries {
                switch entry {
                case .directory(let sub):
                    do { try await restoreDirectory(sub, in: directory, path: path) } catch {
                        fail(path + "/" + sub.node!.displayName, error)
                    }
                case .leaf(let node):
                    await limiter.acquire()
                    group.addTask {
                        defer { Task { await self.limiter.release() } }
                        do { try await self.restoreLeaf(node, in: directory, path: path) } catch {
                            self.fail(path + "/" + node.displayName, error)
                        }
                    }
                }
            }
            await group.waitForAll()
        }
    }

    private func restoreDirectory(_ plan: PlanDirectory, in parent: Descriptor, path: String) async throws {
        let node = plan.node!
        let childPath = path + "/" + node.displayName
        // Names come from a validated tree; checked again here, as the last line before the disk.
        if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.unsafePath(path: childPath, reason: reason) }
        if withCName(node.name, { mkdirat(parent.fd, $0, 0o700) }) != 0 && errno != EEXIST {
            throw TreeError.writeFailed(path: childPath, reason: FS.errorText())
        }
        let fd = FS.openAt(parent.fd, node.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        guard fd >= 0 else {
            let code = errno
            if code == ELOOP || code == ENOTDIR {
                throw TreeError.unsafePath(path: childPath, reason: "a symbolic link or file is in the way of a directory")
            }
            throw TreeError.writeFailed(path: childPath, reason: FS.errorText(code))
        }
        let directory = Descriptor(fd)
        await restoreEntries(plan, in: directory, path: childPath)
        if options.restoreOwnership { _ = fchown(fd, node.uid, node.gid) }
        if node.mode & 0o6000 != 0 { lock.withLock { result.droppedSpecialBits += 1 } }
        fchmod(fd, mode_t(node.mode & 0o1777))
        var times = [FS.timespecOf(node.mtimeNanos), FS.timespecOf(node.mtimeNanos)]
        futimens(fd, &times)
        lock.withLock { result.directories += 1 }
    }

    private static func temporaryName() -> [UInt8] {
        var random = SystemRandomNumberGenerator()
        return Array(".coffer-restore-\(String(random.next() as UInt64, radix: 16))".utf8)
    }

    private func restoreLeaf(_ node: TreeNode, in directory: Descriptor, path: String) async throws {
        let childPath = path + "/" + node.displayName
        if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.unsafePath(path: childPath, reason: reason) }
        let temporary = Restorer.temporaryName()
        var published = false
        defer { if !published { _ = withCName(temporary) { unlinkat(directory.fd, $0, 0) } } }
        var times = [FS.timespecOf(node.mtimeNanos), FS.timespecOf(node.mtimeNanos)]
        switch node.kind {
        case .file:
            let fd = FS.openAt(directory.fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
            let file = Descriptor(fd)
            let written = try await writeContent(node, to: file.fd, path: childPath)
            guard written == node.size else {
                throw TreeError.contentMismatch(path: childPath, reason: "content is \(written) bytes, the tree records \(node.size)")
            }
            if options.restoreOwnership { _ = fchown(fd, node.uid, node.gid) }
            if node.mode & 0o6000 != 0 { lock.withLock { result.droppedSpecialBits += 1 } }
            fchmod(fd, mode_t(node.mode & 0o777))
            futimens(fd, &times)
            lock.withLock { result.files += 1; result.bytes += Int64(written) }
        case .symlink:
            let rc = withCName(node.linkTarget) { target in withCName(temporary) { symlinkat(target, directory.fd, $0) } }
            guard rc == 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
            _ = withCName(temporary) { name in
                if options.restoreOwnership { _ = fchownat(directory.fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                return utimensat(directory.fd, name, &times, AT_SYMLINK_NOFOLLOW)
            }
            lock.withLock { result.symlinks += 1 }
        case .directory:
            preconditionFailure("directories are restored by restoreDirectory")
        }
        if let existing = FS.status(directory.fd, node.name), existing.st_mode & S_IFMT == S_IFDIR {
            throw TreeError.unsafePath(path: childPath, reason: "a directory is in the way")
        }
        let rc = withCName(temporary) { from in withCName(node.name) { renameat(directory.fd, from, directory.fd, $0) } }
        guard rc == 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
        published = true
    }

    /// Writes a file's chunks to `fd` in order and returns the bytes written, stopping once they
    /// exceed the recorded size. Chunks are loaded (read, decrypted, decompressed, checked against
    /// their ids) by concurrent tasks, at most `2 · concurrency` ahead of the one being written, so a
    /// large file uses every core with bounded memory.
    private func writeContent(_ node: TreeNode, to fd: Int32, path: String) async throws -> UInt64 {
        let content = node.content
        let window = max(2, 2 * options.concurrency)
        var written: UInt64 = 0
        if content.count <= 1 {
            for id in content {
                let bytes = try await store.load(.data, id)
                written += UInt64(bytes.count)
                guard written <= node.size else { break }
                try bytes.withUnsafeBytes { try FS.writeAll(fd, $0, path: path) }
            }
            return written
        }
        return try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var next = 0
            var ready: [Int: [UInt8]] = [:]
            var writing = 0
            func start() {
                guard next < content.count else { return }
                let (index, id) = (next, content[next])
                next += 1
                group.addTask { (index, try await self.store.load(.data, id)) }
            }
            for _ in 0..<window { start() }
            while let done = try await group.next() {
                ready[done.0] = done.1
                while let bytes = ready.removeValue(forKey: writing) {
                    written += UInt64(bytes.count)
                    guard written <= node.size else {
                        group.cancelAll()
                        return written
                    }
                    try bytes.withUnsafeBytes { try FS.writeAll(fd, $0, path: path) }
                    writing += 1
                    start()
                }
            }
            return written
        }
    }

    /// Writes the file at `components` of the tree `root` to `fd` (the `dump` command).
    public func dump(root: BlobID, path components: [[UInt8]], to fd: Int32) async throws -> UInt64 {
        let shown = "/" + components.map { TreeNode.display($0) }.joined(separator: "/")
        guard let node = try await store.lookup(path: components, root: root) else { throw TreeError.notFound("\(shown) in the snapshot") }
        guard node.kind == .file else { throw TreeError.invalidRequest("\(shown) is not a file") }
        let written = try await writeContent(node, to: fd, path: "standard output")
        guard written == node.size else {
            throw TreeError.contentMismatch(path: shown, reason: "content is \(written) bytes, the tree records \(node.size)")
        }
        return written
    }
}
