import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct RestoreOptions: Sendable {
    /// Only entries matching one of these (or below a matching directory) are restored; all when empty.
    public var includes: [PathPattern] = []
    /// Packs read and written at once by a restore (further bounded by the storage's
    /// connections). Each holds the span of its pack that is needed (ciphertext) and one blob's
    /// plaintext while its blobs are written: memory is about `packsAtOnce` × (the pack size + a
    /// few blobs). 4 measured 80 MiB peak RSS on the benchmark's restore (2 cores), over the 64 MiB
    /// bound; 2 keeps both cores busy.
    public var packsAtOnce = 2
    /// The same on remote storage (``StorageProperties/remote``), where each pack read waits for a
    /// round trip and the transfer: 4 measured 0.49× restic's wall time from S3 (moto), 2 measured
    /// 0.55–0.63×.
    public var remotePacksAtOnce = 4
    /// Temporary files a restore keeps open while their blobs arrive (pack by pack); the least
    /// recently used idle one is closed past this, and reopened (and checked) when needed again.
    public var openFiles = 64
    /// `dump`, and files whose blobs are not in stored packs: segments (below) read or held at
    /// once: the one being written and the next ones read ahead. Parallelism comes from the
    /// ranges of a segment (``RangeReads/parallel``).
    public var concurrency = 2
    /// The files' content is read in segments of about this many plaintext bytes, in the order the
    /// files are written (their blobs, de-duplicated, read with ``RangeReads`` by ``BlobStore/loadBatch(_:_:reads:)``).
    /// Bounds memory: at most `concurrency` segments are held at once. Larger segments let more
    /// neighbouring blobs share a read: files backed up together interleave their chunks in packs.
    public var segmentBytes = 2 << 20
    /// How the blobs of one segment are grouped into ranged reads of their packs.
    public var reads = RangeReads()
    /// Which recorded extended attributes are set: none, the `user.` namespace (default), or
    /// every namespace the system allows (`trusted.`, `security.`, `system.` need privileges and
    /// change what the system enforces: only when the user asks).
    public var xattrs: XattrSelection = .user
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

public enum XattrSelection: String, Sendable, Equatable { case none, user, all }

public struct RestoreResult: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var bytes: Int64 = 0
    /// Entries whose setuid or setgid bit was recorded but not restored.
    public var droppedSpecialBits = 0
    /// Files restored as hard links to a file restored before them (counted in `files` too).
    public var hardLinks = 0
    /// Extended attributes set, and recorded ones left out because their namespace was not selected.
    public var xattrsSet = 0
    public var xattrsSkipped = 0
    /// Metadata that could not be restored (extended attributes); the entries themselves were.
    /// At most ``maxWarnings`` are kept, `warningCount` counts them all.
    public var warnings: [RestoreFailure] = []
    public var warningCount = 0
    public static let maxWarnings = 1000
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
    let lock = NSLock()
    var result = RestoreResult()
    /// The target as written in paths below it: failures are reported by their path in the snapshot.
    var targetPrefix = ""
    /// The target while a restore runs, and where the first file of each hard-link group was
    /// published (components below the target).
    var rootDirectory: Descriptor?
    var linkedFirsts: [LinkKey: [[UInt8]]] = [:]

    /// Called between the structure pass and the content pass (tests: something swapped in between).
    var afterStructurePass: (@Sendable () -> Void)?

    public init(store: any BlobStore, options: RestoreOptions = RestoreOptions()) {
        self.store = store
        self.options = options
    }

    static let maxDepth = 1024

    final class PlanDirectory {
        let node: TreeNode?
        var entries: [PlanEntry] = []
        init(node: TreeNode?) { self.node = node }
    }

    enum PlanEntry {
        case directory(PlanDirectory)
        /// A file (with its number in the order files are written), a symbolic link (``notAFile``),
        /// or a file that is a hard link to one planned before it (``hardLink``).
        case leaf(TreeNode, Int)
    }
    static let notAFile = -1
    static let hardLink = -2

    /// Files of one snapshot that were one file (hard links): equal device and inode, a recorded
    /// link count, and (so that a forged tree cannot make two different files one) equal content.
    struct LinkKey: Hashable {
        let device: UInt64, inode: UInt64
        init?(_ node: TreeNode) {
            guard node.kind == .file, node.links >= 2 else { return nil }
            device = node.device; inode = node.inode
        }
    }

    /// The plan's files in the order the writer meets them (depth first, by name); numbers them.
    /// A file that is a hard link to one numbered before it gets ``hardLink`` and is not read.
    static func numberFiles(_ plan: PlanDirectory) -> [TreeNode] {
        var files: [TreeNode] = []
        var firsts: [LinkKey: TreeNode] = [:]
        func walk(_ directory: PlanDirectory) {
            for i in directory.entries.indices {
                switch directory.entries[i] {
                case .directory(let sub): walk(sub)
                case .leaf(let node, _):
                    guard node.kind == .file else { continue }
                    if let key = LinkKey(node) {
                        if let first = firsts[key], first.content == node.content, first.size == node.size {
                            directory.entries[i] = .leaf(node, hardLink)
                            continue
                        }
                        if firsts[key] == nil { firsts[key] = node }
                    }
                    directory.entries[i] = .leaf(node, files.count)
                    files.append(node)
                }
            }
        }
        walk(plan)
        return files
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
        _ = Restorer.numberFiles(plan)
        let root = Descriptor(fd)
        lock.withLock { rootDirectory = root; linkedFirsts = [:] }
        let run = RestoreRun(restorer: self, options: options)
        await run.structure(plan, in: root, path: target, at: [])
        afterStructurePass?()
        await run.content()
        await run.hardLinks()
        run.finishDirectories()
        run.removeLeftovers()
        lock.withLock { rootDirectory = nil }
        var final = lock.withLock { result }
        final.failures.sort { $0.path < $1.path }
        if !final.failures.isEmpty { throw TreeError.restoreIncomplete(final) }
        return final
    }

    /// The path of an entry in the snapshot, from its path below the target as shown.
    func snapshotPath(_ shownPath: String) -> String {
        let prefix = lock.withLock { targetPrefix }
        return !prefix.isEmpty && shownPath.hasPrefix(prefix + "/") ? String(shownPath.dropFirst(prefix.count)) : shownPath
    }

    func warn(_ shownPath: String, _ reason: String) {
        let warning = RestoreFailure(path: snapshotPath(shownPath), reason: reason, category: .io)
        lock.withLock {
            result.warningCount += 1
            if result.warnings.count < RestoreResult.maxWarnings { result.warnings.append(warning) }
        }
    }

    /// Sets the node's selected extended attributes on `fd` (a file or directory), or on `name`
    /// in `directory` (a symbolic link). A failure is a warning: the entry itself is restored.
    func setXattrs(_ node: TreeNode, fd: Int32?, directory: Int32, name: [UInt8], path: String) {
        guard !node.xattrs.isEmpty, options.xattrs != .none else { return }
        var set = 0, skipped = 0
        for x in node.xattrs {
            guard options.xattrs == .all || x.namespace == "user" else { skipped += 1; continue }
            // Validated by the tree reader; checked again as the last line before the disk.
            if let reason = ExtendedAttribute.invalidNameReason(x.name) { warn(path, reason); continue }
            guard x.value.count <= ExtendedAttribute.maxValueLength else { warn(path, "attribute value too large"); continue }
            if let code = Xattr.set(x, directory: directory, name: name, fd: fd) {
                warn(path, "extended attribute \(TreeNode.display(x.name)) not restored: \(FS.errorText(code))")
            } else {
                set += 1
            }
        }
        lock.withLock { result.xattrsSet += set; result.xattrsSkipped += skipped }
    }

    /// Owner (root only), selected extended attributes, mode (`permissions`: 0o777 for files,
    /// 0o1777 for directories; set-id bits never, counted) and times of the entry open as `fd`
    /// (`name` in `directory`), after its content or entries.
    func setMetadata(_ node: TreeNode, fd: Int32, directory: Int32, name: [UInt8], path: String, permissions: UInt32) {
        if options.restoreOwnership { _ = fchown(fd, node.uid, node.gid) }
        setXattrs(node, fd: fd, directory: directory, name: name, path: path)
        if node.mode & 0o6000 != 0 { lock.withLock { result.droppedSpecialBits += 1 } }
        fchmod(fd, mode_t(node.mode & permissions))
        var times = [FS.timespecOf(node.mtimeNanos), FS.timespecOf(node.mtimeNanos)]
        futimens(fd, &times)
    }

    func fail(_ shownPath: String, _ error: Error) {
        let path = snapshotPath(shownPath)
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
    /// Subtrees of one directory loaded together (in parallel, neighbours in one ranged read).
    static let subtreeBatch = 32

    private func plan(_ id: BlobID, preloaded: Result<[UInt8], Error>? = nil, path: [UInt8], matched: Bool, depth: Int,
                      counter: inout TreeWalkLimits.Counter) async throws -> PlanDirectory? {
        guard depth < Restorer.maxDepth else { throw TreeError.malformedTree("trees nested deeper than \(Restorer.maxDepth)") }
        let tree: Tree
        do {
            if let preloaded { tree = try Tree(decoding: try preloaded.get()) } else { tree = try await store.loadTree(id) }
        } catch {
            guard depth > 0 else { throw error }
            fail(TreeNode.display(path), error)
            return nil
        }
        let directory = PlanDirectory(node: nil)
        let subtrees = tree.nodes.compactMap { $0.kind == .directory && options.enters($0, below: path, matched: matched) ? $0.subtree : nil }
        var loaded: [BlobID: Result<[UInt8], Error>] = [:]
        var entered = 0
        for node in tree.nodes {
            let childPath = path + [0x2f] + node.name
            let selected = matched || options.includes.contains { $0.matches(path: childPath, name: node.name) }
            if selected || node.kind == .directory { try counter.add(node) }
            if node.kind == .directory, options.enters(node, below: path, matched: matched) {
                if entered % Restorer.subtreeBatch == 0 && subtrees.count > 1 {
                    let batch = Array(subtrees[entered..<min(entered + Restorer.subtreeBatch, subtrees.count)])
                    loaded = await store.loadBatch(.tree, batch, reads: options.reads)
                }
                entered += 1
                if let sub = try await plan(node.subtree!, preloaded: loaded[node.subtree!], path: childPath, matched: selected,
                                            depth: depth + 1, counter: &counter) {
                    let child = PlanDirectory(node: node)
                    child.entries = sub.entries
                    directory.entries.append(.directory(child))
                }
            } else if selected {
                directory.entries.append(.leaf(node, -1))
            }
        }
        return matched || !directory.entries.isEmpty ? directory : nil
    }

    static func temporaryName() -> [UInt8] {
        var random = SystemRandomNumberGenerator()
        return Array(".coffer-restore-\(String(random.next() as UInt64, radix: 16))".utf8)
    }

    /// Opens the directory at `components` below the target, each component with `O_NOFOLLOW`.
    func openBelowTarget(_ components: [[UInt8]]) -> Descriptor? {
        guard var current = lock.withLock({ rootDirectory }) else { return nil }
        for c in components {
            let fd = FS.openAt(current.fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            guard fd >= 0 else { return nil }
            current = Descriptor(fd)
        }
        return current
    }

    /// Makes `temporary` in `directory` a hard link to the published first file of the node's
    /// group; false when there is none (it failed, or was not restored), or the link fails.
    func linkToFirst(_ node: TreeNode, in directory: Descriptor, temporary: [UInt8]) -> Bool {
        guard let key = LinkKey(node), let first = lock.withLock({ linkedFirsts[key] }), let name = first.last,
              let firstDirectory = openBelowTarget(Array(first.dropLast())) else { return false }
        let rc = withCName(name) { from in withCName(temporary) { linkat(firstDirectory.fd, from, directory.fd, $0, 0) } }
        guard rc == 0 else { return false }
        // What was linked must be the regular file written before (not something put in its place).
        guard let st = FS.status(directory.fd, temporary), st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_size) == node.size else {
            _ = withCName(temporary) { unlinkat(directory.fd, $0, 0) }
            return false
        }
        return true
    }

    func restoreLeaf(_ node: TreeNode, number: Int, in directory: Descriptor, path: String, at components: [[UInt8]], feed: ContentFeed) async throws {
        let childPath = path + "/" + node.displayName
        if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.unsafePath(path: childPath, reason: reason) }
        let temporary = Restorer.temporaryName()
        var published = false
        defer { if !published { _ = withCName(temporary) { unlinkat(directory.fd, $0, 0) } } }
        var times = [FS.timespecOf(node.mtimeNanos), FS.timespecOf(node.mtimeNanos)]
        switch node.kind {
        case .file where number == Restorer.hardLink && linkToFirst(node, in: directory, temporary: temporary):
            lock.withLock { result.files += 1; result.hardLinks += 1 }
        case .file:
            let fd = FS.openAt(directory.fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
            let file = Descriptor(fd)
            let written: UInt64
            if number == Restorer.hardLink {
                // Its group's first file was not restored: this one is written from the repository.
                let own = ContentFeed(store: store, files: [node], options: options)
                written = try await Restorer.writeContent(node, number: 0, feed: own, to: file.fd, path: childPath)
            } else {
                written = try await Restorer.writeContent(node, number: number, feed: feed, to: file.fd, path: childPath)
            }
            guard written == node.size else {
                throw TreeError.contentMismatch(path: childPath, reason: "content is \(written) bytes, the tree records \(node.size)")
            }
            setMetadata(node, fd: fd, directory: directory.fd, name: temporary, path: childPath, permissions: 0o777)
            lock.withLock { result.files += 1; result.bytes += Int64(written) }
        case .symlink:
            let rc = withCName(node.linkTarget) { target in withCName(temporary) { symlinkat(target, directory.fd, $0) } }
            guard rc == 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
            _ = withCName(temporary) { name in
                if options.restoreOwnership { _ = fchownat(directory.fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                return utimensat(directory.fd, name, &times, AT_SYMLINK_NOFOLLOW)
            }
            setXattrs(node, fd: nil, directory: directory.fd, name: temporary, path: childPath)
            lock.withLock { result.symlinks += 1 }
        case .directory:
            preconditionFailure("directories are made by the structure pass (RestoreRun)")
        }
        if let existing = FS.status(directory.fd, node.name), existing.st_mode & S_IFMT == S_IFDIR {
            throw TreeError.unsafePath(path: childPath, reason: "a directory is in the way")
        }
        let rc = withCName(temporary) { from in withCName(node.name) { renameat(directory.fd, from, directory.fd, $0) } }
        guard rc == 0 else { throw TreeError.writeFailed(path: childPath, reason: FS.errorText()) }
        published = true
        if let key = LinkKey(node), number >= 0 { lock.withLock { if linkedFirsts[key] == nil { linkedFirsts[key] = components + [node.name] } } }
    }

    /// Writes file number `number`'s chunks to `fd` in order and returns the bytes written,
    /// stopping once they exceed the recorded size. The feed has read them ahead (in parallel, in
    /// ranged reads of several blobs, bounded memory); a blob that failed fails this file only.
    static func writeContent(_ node: TreeNode, number: Int, feed: ContentFeed, to fd: Int32, path: String) async throws -> UInt64 {
        var written: UInt64 = 0
        for index in node.content.indices {
            let bytes = try await feed.blob(file: number, chunk: index).get()
            written += UInt64(bytes.count)
            guard written <= node.size else { break }
            try bytes.withUnsafeBytes { try FS.writeAll(fd, $0, path: path) }
        }
        return written
    }

    /// Writes the file at `components` of the tree `root` to `fd` (the `dump` command).
    public func dump(root: BlobID, path components: [[UInt8]], to fd: Int32) async throws -> UInt64 {
        let shown = "/" + components.map { TreeNode.display($0) }.joined(separator: "/")
        guard let node = try await store.lookup(path: components, root: root) else { throw TreeError.notFound("\(shown) in the snapshot") }
        guard node.kind == .file else { throw TreeError.invalidRequest("\(shown) is not a file") }
        let feed = ContentFeed(store: store, files: [node], options: options)
        defer { feed.cancel() }
        let written = try await Restorer.writeContent(node, number: 0, feed: feed, to: fd, path: "standard output")
        guard written == node.size else {
            throw TreeError.contentMismatch(path: shown, reason: "content is \(written) bytes, the tree records \(node.size)")
        }
        return written
    }
}

/// Reads the content of files ahead of a writer that writes them in order (`dump`, and a restore's
/// files whose blobs are not in stored packs; a restore otherwise reads by pack, PackRestore.swift): the blobs of consecutive files are cut into segments of about
/// ``RestoreOptions/segmentBytes`` plaintext bytes; each segment's distinct blobs are loaded with
/// one ``BlobStore/loadBatch(_:_:reads:)`` (neighbours in a pack in one ranged read, ranges in
/// parallel), and up to `concurrency` (at least 2) segments are loaded or held at once. Used by one writer
/// task at a time, which asks for chunks in increasing (file, chunk) order; files it skips (failed
/// before their content) are simply passed over.
final class ContentFeed: @unchecked Sendable {
    struct Position: Comparable {
        var file: Int
        var chunk: Int
        static func < (a: Position, b: Position) -> Bool { (a.file, a.chunk) < (b.file, b.chunk) }
    }
    typealias Loaded = [BlobID: Result<[UInt8], Error>]

    let store: any BlobStore
    let files: [TreeNode]
    let options: RestoreOptions
    private let ahead: Int
    /// The next chunk not yet in a segment.
    private var cursor = Position(file: 0, chunk: 0)
    /// Segments being loaded or held, in order; each ends (exclusive) at `end`.
    private var queue: [(end: Position, task: Task<Loaded, Never>)] = []

    init(store: any BlobStore, files: [TreeNode], options: RestoreOptions) {
        self.store = store
        self.files = files
        self.options = options
        ahead = max(2, options.concurrency)
        cursor = normalized(cursor)
    }

    deinit { cancel() }

    func cancel() { for segment in queue { segment.task.cancel() } }

    private func normalized(_ p: Position) -> Position {
        var p = p
        while p.file < files.count && p.chunk >= files[p.file].content.count { p = Position(file: p.file + 1, chunk: 0) }
        return p
    }

    private func fill() {
        while queue.count < ahead && cursor.file < files.count {
            var ids: [BlobID] = []
            var bytes = 0
            while cursor.file < files.count && (ids.isEmpty || bytes < options.segmentBytes) {
                let node = files[cursor.file]
                let id = node.content[cursor.chunk]
                ids.append(id)
                bytes += store.indexedLength(.data, id) ?? Int(min(node.size / UInt64(node.content.count), 1 << 30))
                cursor = normalized(Position(file: cursor.file, chunk: cursor.chunk + 1))
            }
            let (store, reads) = (self.store, options.reads)
            queue.append((cursor, Task { await store.loadBatch(.data, ids, reads: reads) }))
        }
    }

    /// Chunk `chunk` of file `file`: its plaintext, or why it could not be loaded.
    func blob(file: Int, chunk: Int) async -> Result<[UInt8], Error> {
        let position = Position(file: file, chunk: chunk)
        while let first = queue.first, first.end <= position { queue.removeFirst() }
        if queue.isEmpty && cursor < position { cursor = normalized(position) }
        fill()
        guard let segment = queue.first else {
            return .failure(TreeError.invalidRequest("chunk \(chunk) of file \(file) is not in the restore's plan"))
        }
        let loaded = await segment.task.value
        let id = files[file].content[chunk]
        return loaded[id] ?? .failure(TreeError.invalidRequest("blob \(id.hex) was not loaded"))
    }
}
