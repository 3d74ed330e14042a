import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a backup is told besides its paths.
public struct ArchiveOptions: Sendable {
    public var hostname: String
    public var username: String
    public var tags: [String] = []
    public var excludes: [PathPattern] = []
    /// The snapshot whose trees give the metadata of unchanged files (needs a full-access store).
    public var parent: SnapshotRecord?
    public var time = Date()
    public var programVersion = "coffer"
    /// Files read at once (default: every core).
    public var concurrency = ProcessInfo.processInfo.activeProcessorCount
    /// Called after each file with the running file count and bytes (for a progress line).
    public var progress: (@Sendable (Int, Int64) -> Void)?
    /// Record extended attributes (ArchiverFileSystem.swift, `Xattr`).
    public var xattrs = true
    /// Told about attributes not recorded (outside the known namespaces, or too large); the
    /// entries themselves are backed up.
    public var xattrNotice: (@Sendable (String) -> Void)?

    public init(hostname: String, username: String) {
        self.hostname = hostname
        self.username = username
    }

    public static func current() -> ArchiveOptions {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0 ? String(cString: name) : "localhost"
        let user = String(decoding: OwnerNames().user(getuid()), as: UTF8.self)
        return ArchiveOptions(hostname: host, username: user)
    }
}

/// A backup's outcome: the snapshot to write (after the store was flushed) and what could not be
/// read (those entries are left out of the snapshot).
public struct ArchiveResult: Sendable {
    public var info: SnapshotInfo
    public var warnings: [String]
}

/// Backs paths (or a stream) up into a ``BlobStore``: reads files through directory descriptors,
/// cuts them with the store's chunker, saves the chunks, builds one tree per directory bottom-up
/// and returns the snapshot to write. Files are read in parallel (at most `concurrency` at once,
/// each with one chunker buffer: memory stays bounded whatever the tree). A file whose size,
/// mtime, ctime and inode equal the parent snapshot's is not read again.
public final class Archiver: @unchecked Sendable {
    let store: any BlobStore
    let options: ArchiveOptions
    private let owners = OwnerNames()
    private let lock = NSLock()
    private var summary = SnapshotInfo.Summary()
    private var warnings: [String] = []
    private let limiter: Limiter
    /// Chunks read and not yet saved, over every file and stream at once (each holds a chunk of at
    /// most the chunker's maximum size and, while it is compressed, its compressed copy).
    private let chunkSlots: Limiter
    /// Files whose content was read (not taken from the parent snapshot), for tests.
    var filesRead: Int { lock.withLock { readCount } }
    private var readCount = 0

    public init(store: any BlobStore, options: ArchiveOptions) {
        self.store = store
        self.options = options
        limiter = Limiter(options.concurrency)
        chunkSlots = Limiter(2 * max(1, options.concurrency))
    }

    private func warn(_ message: String) { lock.withLock { warnings.append(message) } }
    func count(_ update: (inout SnapshotInfo.Summary) -> Void) { lock.withLock { update(&summary) } }
    var processedFiles: Int { lock.withLock { summary.totalFilesProcessed } }

    // MARK: Paths

    /// Backs up `paths` (made absolute and cleaned; nested or repeated paths are refused). The
    /// snapshot's root tree holds each path under its full absolute path, as restic does.
    public func backup(paths: [String]) async throws -> ArchiveResult {
        guard !paths.isEmpty else { throw TreeError.invalidRequest("no path to back up") }
        let cleaned = paths.map(Archiver.absolute).sorted()
        for (a, b) in zip(cleaned, cleaned.dropFirst()) where b == a || b.hasPrefix(a == "/" ? "/" : a + "/") {
            throw TreeError.invalidRequest("paths \(a) and \(b) overlap")
        }
        let parentRoot = options.parent?.info.tree
        let root = VirtualDirectory(node: nil)
        var rootReplacement: BlobID? = nil
        for path in cleaned {
            let components = pathComponents(path)
            let parentNode = try await parentRoot.asyncMap { try await store.lookup(path: components, root: $0) } ?? nil
            guard let node = try await archiveNamedPath(path, parentNode: parentNode) else { continue }
            if components.isEmpty {
                rootReplacement = node.subtree
                continue
            }
            var directory = root
            var prefix = ""
            for component in components.dropLast() {
                prefix += "/" + String(decoding: component, as: UTF8.self)
                if let existing = directory.children[component] {
                    directory = existing
                } else {
                    var st = stat()
                    guard fstatat(AT_FDCWD, prefix, &st, 0) == 0 else {
                        throw TreeError.readFailed(path: prefix, reason: FS.errorText())
                    }
                    var meta = metadata(st, name: component)
                    meta.kind = .directory
                    meta.size = 0
                    let child = VirtualDirectory(node: meta)
                    directory.children[component] = child
                    directory = child
                }
            }
            directory.leaves[components.last!] = node
        }
        let tree: BlobID
        if let replacement = rootReplacement { tree = replacement } else { tree = try await finish(root) }
        return try await commit(tree: tree, paths: cleaned)
    }

    final class VirtualDirectory {
        let node: TreeNode?
        var children: [[UInt8]: VirtualDirectory] = [:]
        var leaves: [[UInt8]: TreeNode] = [:]
        init(node: TreeNode?) { self.node = node }
    }

    private func finish(_ directory: VirtualDirectory) async throws -> BlobID {
        var nodes = Array(directory.leaves.values)
        for (_, child) in directory.children {
            var node = child.node!
            node.subtree = try await finish(child)
            nodes.append(node)
        }
        let saved = try await store.saveTree(try Tree(nodes: nodes))
        if saved.added { count { $0.treeBlobs += 1 } }
        return saved.id
    }

    func commit(tree: BlobID, paths: [String]) async throws -> ArchiveResult {
        // What the new data blobs take in their packs, taken before the flush clears the count.
        if let sizes = store as? UnflushedSizeReporting {
            let packed = sizes.unflushedStoredBytes(.data)
            count { $0.dataAddedPacked = packed }
        }
        try await store.flush()
        let info = SnapshotInfo(time: options.time, tree: tree, paths: paths, hostname: options.hostname,
                                username: options.username, tags: options.tags, parent: options.parent?.id,
                                programVersion: options.programVersion, summary: lock.withLock { summary })
        return ArchiveResult(info: info, warnings: lock.withLock { warnings })
    }

    /// "/a/./b/../c" relative to the working directory → "/a/c".
    static func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var out: [Substring] = []
        for part in full.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { if !out.isEmpty { out.removeLast() }; continue }
            out.append(part)
        }
        return "/" + out.joined(separator: "/")
    }

    /// A path the user named (followed if it is a symbolic link, as any path on the command line).
    private func archiveNamedPath(_ path: String, parentNode: TreeNode?) async throws -> TreeNode? {
        let name = pathComponents(path).last ?? [0x2f]
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw TreeError.readFailed(path: path, reason: FS.errorText()) }
        let descriptor = Descriptor(fd)
        guard let st = FS.status(fd: fd) else { throw TreeError.readFailed(path: path, reason: FS.errorText()) }
        var node = metadata(st, name: name, xattrs: xattrs(of: fd, display: path))
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            let parentTree = try await parentTree(of: parentNode)
            let tree = try await archiveDirectory(descriptor, path: Array(path.utf8), parent: parentTree)
            node.subtree = tree
            countDirectory(tree, parent: parentNode)
            return node
        case S_IFREG:
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            await limiter.acquire()
            defer { Task { await limiter.release() } }
            return try await archiveFile(descriptor, node: node, path: path, parentNode: parentNode)
        default:
            throw TreeError.readFailed(path: path, reason: "not a regular file or directory")
        }
    }

    private func parentTree(of node: TreeNode?) async throws -> Tree? {
        guard let node, node.kind == .directory, let id = node.subtree else { return nil }
        return try await store.loadTree(id)
    }

    private func countDirectory(_ tree: BlobID, parent: TreeNode?) {
        count {
            if parent?.kind != .directory { $0.dirsNew += 1 }
            else if parent?.subtree == tree { $0.dirsUnmodified += 1 }
            else { $0.dirsChanged += 1 }
        }
    }

    func metadata(_ st: stat, name: [UInt8], xattrs: [ExtendedAttribute] = []) -> TreeNode {
        let kind: TreeNode.Kind
        switch st.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = .file
        }
        return TreeNode(name: name, kind: kind, mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                        user: owners.user(st.st_uid), group: owners.group(st.st_gid),
                        mtimeNanos: FS.nanos(st.st_mtim), ctimeNanos: FS.nanos(st.st_ctim),
                        size: kind == .directory ? 0 : UInt64(st.st_size), inode: UInt64(st.st_ino), device: UInt64(st.st_dev),
                        xattrs: xattrs, links: kind == .file && st.st_nlink > 1 ? UInt32(clamping: st.st_nlink) : 0)
    }

    /// One directory: its entries in name order, files read by concurrent tasks, subdirectories
    /// walked in turn; returns the saved tree's id.
    private func archiveDirectory(_ directory: Descriptor, path: [UInt8], parent: Tree?) async throws -> BlobID {
        let display = TreeNode.display(path)
        let names: [[UInt8]]
        do {
            names = try FS.names(in: directory.fd, path: display)
        } catch {
            warn("\(error)")
            names = []
        }
        let nodes: [TreeNode] = try await withThrowingTaskGroup(of: (Int, TreeNode).self) { group in
            var results: [Int: TreeNode] = [:]
            for (index, name) in names.enumerated() {
                let childPath = path == [0x2f] ? path + name : path + [0x2f] + name
                let childDisplay = TreeNode.display(childPath)
                if options.excludes.contains(where: { $0.matches(path: childPath, name: name) }) { continue }
                guard let st = FS.status(directory.fd, name) else {
                    warn("cannot read \(childDisplay): \(FS.errorText())")
                    continue
                }
                let parentNode = parent?.node(named: name)
                var node = metadata(st, name: name, xattrs: xattrs(of: name, in: directory.fd, display: childDisplay))
                switch st.st_mode & S_IFMT {
                case S_IFREG:
                    if let old = parentNode, old.kind == .file, old.size == node.size, old.mtimeNanos == node.mtimeNanos,
                       old.ctimeNanos == node.ctimeNanos, old.inode == node.inode,
                       old.content.allSatisfy({ store.contains(.data, $0) }) {
                        node.content = old.content
                        count {
                            $0.filesUnmodified += 1
                            $0.totalFilesProcessed += 1
                            $0.totalBytesProcessed += Int64(node.size)
                        }
                        results[index] = node
                        report()
                        continue
                    }
                    await limiter.acquire()
                    let fd = FS.openAt(directory.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
                    guard fd >= 0, let fst = FS.status(fd: fd), fst.st_mode & S_IFMT == S_IFREG else {
                        let reason = fd < 0 ? FS.errorText() : "no longer a regular file"
                        if fd >= 0 { Glibc.close(fd) }
                        await limiter.release()
                        warn("cannot read \(childDisplay): \(reason)")
                        continue
                    }
                    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
                    let descriptor = Descriptor(fd)
                    let fileNode = metadata(fst, name: name, xattrs: node.xattrs)
                    group.addTask {
                        defer { Task { await self.limiter.release() } }
                        do {
                            return (index, try await self.archiveFile(descriptor, node: fileNode, path: childDisplay, parentNode: parentNode))
                        } catch let error as TreeError {
                            if case .readFailed = error {
                                self.warn("\(error)")
                                return (-1, fileNode)
                            }
                            throw error
                        }
                    }
                case S_IFDIR:
                    let fd = FS.openAt(directory.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                    guard fd >= 0, let dst = FS.status(fd: fd) else {
                        let reason = FS.errorText()
                        if fd >= 0 { Glibc.close(fd) }
                        warn("cannot read \(childDisplay): \(reason)")
                        continue
                    }
                    let descriptor = Descriptor(fd)
                    node = metadata(dst, name: name, xattrs: node.xattrs)
                    let tree = try await archiveDirectory(descriptor, path: childPath, parent: try await parentTree(of: parentNode))
                    node.subtree = tree
                    countDirectory(tree, parent: parentNode)
                    results[index] = node
                case S_IFLNK:
                    guard let target = FS.readLink(directory.fd, name) else {
                        warn("cannot read the symbolic link \(childDisplay): \(FS.errorText())")
                        continue
                    }
                    node.linkTarget = target
                    node.size = UInt64(target.count)
                    results[index] = node
                default:
                    warn("\(childDisplay): not a regular file, directory or symbolic link: skipped")
                }
            }
            for try await (index, node) in group where index >= 0 { results[index] = node }
            return results.keys.sorted().map { results[$0]! }
        }
        let saved = try await store.saveTree(try Tree(nodes: nodes))
        if saved.added { count { $0.treeBlobs += 1 } }
        return saved.id
    }

    private func report() {
        guard let progress = options.progress else { return }
        let (files, bytes) = lock.withLock { (summary.totalFilesProcessed, summary.totalBytesProcessed) }
        progress(files, bytes)
    }

    /// Reads an open file to its end, saving the chunks not stored yet. The node's size is the
    /// number of bytes read (the file may have changed since it was listed).
    private func archiveFile(_ file: Descriptor, node: TreeNode, path: String, parentNode: TreeNode?) async throws -> TreeNode {
        var node = node
        node.kind = .file
        let (content, size) = try await chunkAndSave(DescriptorSource(fd: file.fd, path: path), sizeHint: Int(node.size))
        node.content = content
        node.size = size
        lock.withLock { readCount += 1 }
        count {
            if parentNode?.kind != .file { $0.filesNew += 1 }
            else if parentNode?.content == content { $0.filesUnmodified += 1 }
            else { $0.filesChanged += 1 }
            $0.totalFilesProcessed += 1
            $0.totalBytesProcessed += Int64(size)
        }
        report()
        return node
    }

    /// Cuts `source` into chunks and saves the ones the store does not have. The chunking task reads
    /// and cuts; each chunk's id (keyed hash), compression and packing run on concurrent tasks. Every
    /// chunk read holds one of the archiver's `2 · concurrency` chunk slots until it is saved, over
    /// all files and streams at once, so a large file, a stream or many files use every core with
    /// bounded memory. An input of one chunk (a small file) is saved on the calling task.
    /// `sizeHint`: the file's size, to size the chunker's buffer; `progress`: called with the bytes
    /// read so far after each chunk (streams).
    func chunkAndSave(_ source: some ChunkSource, sizeHint: Int? = nil,
                      progress: ((UInt64) -> Void)? = nil) async throws -> ([BlobID], UInt64) {
        let chunker = StreamChunker(source: source, cdc: store.makeChunker(), sizeHint: sizeHint)
        let slots = chunkSlots
        await slots.acquire()
        var held = true  // a slot this task holds for the chunk it reads next
        defer { if held { Task { await slots.release() } } }
        guard let first = try chunker.nextChunk() else { return ([], 0) }
        if chunker.isFinished {
            let id = try await saveChunk(first)
            progress?(UInt64(first.count))
            return ([id], UInt64(first.count))
        }
        let window = max(2, 2 * options.concurrency)
        return try await withThrowingTaskGroup(of: (Int, BlobID).self) { group in
            var content: [BlobID?] = []
            var size: UInt64 = 0
            var inFlight = 0
            var chunk: [UInt8]? = first
            while let bytes = chunk {
                if inFlight >= window, let done = try await group.next() {
                    content[done.0] = done.1
                    inFlight -= 1
                }
                let index = content.count
                content.append(nil)
                size += UInt64(bytes.count)
                held = false  // the saving task releases it
                group.addTask {
                    defer { Task { await slots.release() } }
                    return (index, try await self.saveChunk(bytes))
                }
                inFlight += 1
                progress?(size)
                await slots.acquire()
                held = true
                chunk = try chunker.nextChunk()
            }
            for try await (index, id) in group { content[index] = id }
            return (content.map { $0! }, size)
        }
    }

    /// Computes a chunk's id and saves it unless the store has it.
    private func saveChunk(_ bytes: [UInt8]) async throws -> BlobID {
        let id = bytes.withUnsafeBytes { store.blobID(of: $0) }
        if !store.contains(.data, id), try await store.save(.data, id: id, plaintext: bytes) {
            count { $0.dataBlobs += 1; $0.dataAdded += Int64(bytes.count) }
        }
        return id
    }

    // MARK: Streams

    /// Backs up a stream read from `fd` as one file named `name` in the snapshot's root tree.
    public func backup(stream fd: Int32, name: String) async throws -> ArchiveResult {
        let nameBytes = Array(name.utf8)
        if let reason = TreeNode.invalidNameReason(nameBytes) { throw TreeError.invalidRequest("stream name refused: \(reason)") }
        let now = Int64(options.time.timeIntervalSince1970 * 1e9)
        var node = TreeNode(name: nameBytes, kind: .file, mode: 0o600, uid: getuid(), gid: getgid(),
                            user: owners.user(getuid()), group: owners.group(getgid()), mtimeNanos: now, ctimeNanos: now)
        let (content, size) = try await chunkAndSave(DescriptorSource(fd: fd, path: name))
        node.content = content
        node.size = size
        count { $0.filesNew += 1; $0.totalFilesProcessed += 1; $0.totalBytesProcessed += Int64(size) }
        let saved = try await store.saveTree(try Tree(nodes: [node]))
        if saved.added { count { $0.treeBlobs += 1 } }
        return try await commit(tree: saved.id, paths: ["/" + name])
    }

    /// Runs `command` (no shell; the environment less every variable that may hold a secret, as
    /// for decompressors; no descriptor but 0-2) and backs up its standard output as `name`: a
    /// one-stream ``backup(streams:)``. A command that cannot start or exits with a failure status
    /// fails the backup before anything is flushed, so no snapshot can be written for it.
    public func backup(command: [String], name: String) async throws -> ArchiveResult {
        guard let tool = command.first else { throw TreeError.invalidRequest("no command given") }
        let executable = try StreamCommand.executable(tool)
        let nameBytes = Array(name.utf8)
        if let reason = TreeNode.invalidNameReason(nameBytes) { throw TreeError.invalidRequest("stream name refused: \(reason)") }
        let producer = StreamCommand.Producer(tool: tool, executable: executable, arguments: Array(command.dropFirst()))
        return try await backup(streams: [StreamSpec(path: "/" + name, producer: producer)])
    }
}

enum StreamCommand {
    static func executable(_ tool: String) throws -> String {
        if tool.contains("/") {
            guard access(tool, X_OK) == 0 else { throw TreeError.commandFailed("cannot run \(tool): \(FS.errorText())") }
            return tool
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(tool)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw TreeError.commandFailed("command \(tool) not found")
    }

    /// A command whose standard output is a stream of ``Archiver/backup(streams:)``.
    struct Producer: StreamProducer {
        let tool: String
        let executable: String
        let arguments: [String]

        func start(writingTo fd: Int32) async throws -> any RunningStream {
            Running(tool: tool, pid: try StreamCommand.spawn(executable, arguments: arguments, stdout: fd))
        }
    }

    struct Running: RunningStream {
        let tool: String
        let pid: pid_t

        func finish() async throws {
            let status = StreamCommand.wait(pid)
            guard status == 0 else { throw TreeError.commandFailed("\(tool) exited with status \(StreamCommand.describe(status))") }
        }

        func cancel() {
            kill(pid, SIGTERM)
            _ = StreamCommand.wait(pid)
        }
    }

    /// Starts the command through ``ChildSpawn`` (no shell, descriptors 3 and up closed, signal
    /// defaults, Coffer's secrets removed from the environment); standard input stays the caller's.
    static func spawn(_ executable: String, arguments: [String], stdout: Int32) throws -> pid_t {
        do {
            return try ChildSpawn.start([executable] + arguments, stdin: .inherit, stdout: .fd(stdout), stderr: .inherit).pid
        } catch let failure as ChildSpawn.Failure {
            throw TreeError.commandFailed("cannot start \(executable): \(FS.errorText(failure.code))")
        }
    }

    static func wait(_ pid: pid_t) -> Int32 { ChildSpawn.wait(pid) }

    static func describe(_ status: Int32) -> String {
        if status >= 0 && status & 0x7f == 0 { return "\((status >> 8) & 0xff)" }
        return ChildSpawn.describe(status)
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
