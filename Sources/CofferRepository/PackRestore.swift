import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One regular file of a restore with content: written under a temporary name in its directory
/// (created by the structure pass), its blobs written where they belong as their packs are read,
/// completed (metadata, rename over its final name) as soon as its last blob is written.
final class PendingFile {
    enum State { case writing, failed, done }
    let number: Int
    let node: TreeNode
    /// The path as shown (the target, then the entry's path in the snapshot).
    let shown: String
    /// The directory's components below the target.
    let directory: [[UInt8]]
    let temporary: [UInt8]
    /// What the structure pass created: a reopened temporary must be this very file.
    let device: UInt64
    let inode: UInt64
    /// Blob uses (blob, offset) not yet written; the file is complete at zero.
    var remaining = 0
    var state = State.writing
    /// Open descriptor (or -1), tasks using it, and the last use for the least-recently-used cache.
    var fd: Int32 = -1
    var users = 0
    var lastUse = 0

    init(number: Int, node: TreeNode, shown: String, directory: [[UInt8]], temporary: [UInt8], device: UInt64, inode: UInt64) {
        self.number = number; self.node = node; self.shown = shown; self.directory = directory
        self.temporary = temporary; self.device = device; self.inode = inode
    }
}

/// One use of a blob: the file (by number) and the offset in it where its plaintext goes.
struct BlobUse: Sendable { let file: Int; let offset: UInt64 }

/// The blobs a restore needs from one pack, and where each goes.
final class PackWork: @unchecked Sendable {
    let name: String
    let size: Int64
    var blobs: [BlobID: (blob: PackedBlob, uses: [BlobUse])] = [:]
    init(name: String, size: Int64) { self.name = name; self.size = size }
}

/// The state of one ``Restorer/restore(root:target:)`` run (docs/REPOSITORY.md, "Restore"):
/// structure pass (directories, temporary files, links), content pass by pack, hard links, then
/// directory metadata deepest first.
final class RestoreRun: @unchecked Sendable {
    let restorer: Restorer
    let options: RestoreOptions
    let lock = NSLock()
    /// Files with content, by number (filled by the structure pass, read-only afterwards).
    private(set) var files: [Int: PendingFile] = [:]
    /// Directories created, in creation order (parents first): (node, components, shown path).
    private var directories: [(node: TreeNode, components: [[UInt8]], shown: String)] = []
    /// Hard links to files restored before them, made after the content pass (with the shown
    /// path of their directory).
    private var links: [(node: TreeNode, components: [[UInt8]], parent: String)] = []
    /// Open temporary files (numbers), bounded by ``RestoreOptions/openFiles``.
    private var open: Set<Int> = []
    private var clock = 0
    /// Recently used directory descriptors below the target (by components).
    private var directoryCache: [[[UInt8]]: Descriptor] = [:]
    private let emptyFeed: ContentFeed

    init(restorer: Restorer, options: RestoreOptions) {
        self.restorer = restorer
        self.options = options
        emptyFeed = ContentFeed(store: restorer.store, files: [], options: options)
    }

    // MARK: Structure pass

    /// Creates the directories of `plan` below `directory`, a temporary file for every file with
    /// content, and completes empty files and symbolic links at once.
    func structure(_ plan: Restorer.PlanDirectory, in directory: Descriptor, path: String, at components: [[UInt8]]) async {
        for entry in plan.entries {
            switch entry {
            case .directory(let sub):
                let node = sub.node!
                let childPath = path + "/" + node.displayName
                do {
                    let child = try makeDirectory(node, in: directory, path: childPath)
                    directories.append((node, components + [node.name], childPath))
                    await structure(sub, in: child, path: childPath, at: components + [node.name])
                } catch {
                    restorer.fail(childPath, error)
                }
            case .leaf(let node, let number):
                let childPath = path + "/" + node.displayName
                do {
                    if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.unsafePath(path: childPath, reason: reason) }
                    if node.kind == .file && number == Restorer.hardLink {
                        links.append((node, components, path))
                    } else if node.kind == .file && number >= 0 && !node.content.isEmpty {
                        try makeTemporary(node, number: number, in: directory, path: childPath, at: components)
                    } else {
                        try await restorer.restoreLeaf(node, number: number, in: directory, path: path, at: components, feed: emptyFeed)
                    }
                } catch {
                    restorer.fail(childPath, error)
                }
            }
        }
    }

    private func makeDirectory(_ node: TreeNode, in parent: Descriptor, path: String) throws -> Descriptor {
        // Names come from a validated tree; checked again here, as the last line before the disk.
        if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.unsafePath(path: path, reason: reason) }
        if withCName(node.name, { mkdirat(parent.fd, $0, 0o700) }) != 0 && errno != EEXIST {
            throw TreeError.writeFailed(path: path, reason: FS.errorText())
        }
        let fd = FS.openAt(parent.fd, node.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        guard fd >= 0 else {
            let code = errno
            if code == ELOOP || code == ENOTDIR {
                throw TreeError.unsafePath(path: path, reason: "a symbolic link or file is in the way of a directory")
            }
            throw TreeError.writeFailed(path: path, reason: FS.errorText(code))
        }
        return Descriptor(fd)
    }

    private func makeTemporary(_ node: TreeNode, number: Int, in directory: Descriptor, path: String, at components: [[UInt8]]) throws {
        let temporary = Restorer.temporaryName()
        let fd = FS.openAt(directory.fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw TreeError.writeFailed(path: path, reason: FS.errorText()) }
        defer { Glibc.close(fd) }
        guard let st = FS.status(fd: fd) else {
            let reason = FS.errorText()
            _ = withCName(temporary) { unlinkat(directory.fd, $0, 0) }
            throw TreeError.writeFailed(path: path, reason: reason)
        }
        files[number] = PendingFile(number: number, node: node, shown: path, directory: components, temporary: temporary,
                                    device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    // MARK: Content pass

    /// Reads the packs the files need, each once, `packsAtOnce` at a time, in the order the files
    /// first need them; files whose blobs are not all in stored packs (or a store that is not a
    /// repository) are written in order from ``BlobStore/loadBatch(_:_:reads:)`` afterwards.
    func content() async {
        let numbers = files.keys.sorted()
        var sequential: [PendingFile] = []
        var packs: [PackWork] = []
        var byName: [String: PackWork] = [:]
        let repository = restorer.store as? Repository
        for number in numbers {
            let f = files[number]!
            guard let repository else { sequential.append(f); continue }
            var placements: [BlobPlacement] = []
            for id in f.node.content {
                guard let p = repository.placement(.data, id) else { break }
                placements.append(p)
            }
            guard placements.count == f.node.content.count else { sequential.append(f); continue }
            let total = placements.reduce(UInt64(0)) { $0 + UInt64($1.blob.rawLength) }
            guard total == f.node.size else {
                failFile(f, TreeError.contentMismatch(path: f.shown, reason: "content is \(total) bytes, the tree records \(f.node.size)"))
                continue
            }
            var offset: UInt64 = 0
            for p in placements {
                let work: PackWork
                if let w = byName[p.pack] { work = w } else {
                    work = PackWork(name: p.pack, size: p.packSize)
                    byName[p.pack] = work
                    packs.append(work)
                }
                work.blobs[p.blob.id, default: (p.blob, [])].uses.append(BlobUse(file: number, offset: offset))
                offset += UInt64(p.blob.rawLength)
                f.remaining += 1
            }
        }
        byName = [:]
        if let repository, !packs.isEmpty {
            let properties = repository.storage.properties
            let width = max(1, min(properties.remote ? options.remotePacksAtOnce : options.packsAtOnce, properties.connections))
            await withTaskGroup(of: Void.self) { group in
                var next = 0
                func start() {
                    guard next < packs.count else { return }
                    let work = packs[next]
                    next += 1
                    group.addTask { await self.restorePack(work, from: repository) }
                }
                for _ in 0..<width { start() }
                while await group.next() != nil { start() }
            }
        }
        if !sequential.isEmpty { await writeInOrder(sequential) }
    }

    private func restorePack(_ work: PackWork, from repository: Repository) async {
        await repository.readPackBlobs(pack: work.name, size: work.size, blobs: work.blobs.values.map(\.blob)) { blob, result in
            guard let uses = work.blobs[blob.id]?.uses else { return }
            deliver(result, to: uses)
        }
    }

    /// Writes one blob's plaintext at each of its uses; a failed blob fails every file using it.
    func deliver(_ result: Result<[UInt8], Error>, to uses: [BlobUse]) {
        switch result {
        case .failure(let error):
            for use in uses { if let f = files[use.file] { failFile(f, error) } }
        case .success(let bytes):
            for use in uses {
                guard let f = files[use.file] else { continue }
                do {
                    guard let fd = try acquire(f) else { continue }
                    defer { release(f) }
                    try bytes.withUnsafeBytes { try RestoreRun.writeAll(fd, $0, at: use.offset, path: f.shown) }
                } catch {
                    failFile(f, error)
                    continue
                }
                let last = lock.withLock { () -> Bool in
                    f.remaining -= 1
                    return f.remaining == 0 && f.state == .writing
                }
                if last { complete(f) }
            }
        }
    }

    /// Files read in order, each from its start (the store has no pack placement for them).
    private func writeInOrder(_ list: [PendingFile]) async {
        let feed = ContentFeed(store: restorer.store, files: list.map(\.node), options: options)
        defer { feed.cancel() }
        for (index, f) in list.enumerated() {
            do {
                guard let fd = try acquire(f) else { continue }
                let written: UInt64
                do {
                    defer { release(f) }
                    _ = lseek(fd, 0, SEEK_SET)
                    written = try await Restorer.writeContent(f.node, number: index, feed: feed, to: fd, path: f.shown)
                }
                guard written == f.node.size else {
                    throw TreeError.contentMismatch(path: f.shown, reason: "content is \(written) bytes, the tree records \(f.node.size)")
                }
                complete(f)
            } catch {
                failFile(f, error)
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw TreeError.writeFailed(path: path, reason: FS.errorText())
            }
            done += n
        }
    }

    // MARK: Descriptors

    /// The directory at `components` below the target (each component opened with `O_NOFOLLOW`),
    /// from a small cache.
    func directory(_ components: [[UInt8]]) -> Descriptor? {
        if let cached = lock.withLock({ directoryCache[components] }) { return cached }
        guard let opened = restorer.openBelowTarget(components) else { return nil }
        lock.withLock {
            if directoryCache.count >= 64 { directoryCache.removeAll() }
            directoryCache[components] = opened
        }
        return opened
    }

    /// Reopens a file's temporary: its directory by components, the name with `O_NOFOLLOW`, and it
    /// must still be the regular file the structure pass created (same device and inode).
    private func openTemporary(_ f: PendingFile) throws -> Int32 {
        guard let dir = directory(f.directory) else {
            throw TreeError.unsafePath(path: f.shown, reason: "its directory was replaced or removed during the restore")
        }
        let fd = FS.openAt(dir.fd, f.temporary, O_WRONLY | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ELOOP || code == ENXIO || code == EISDIR {
                throw TreeError.unsafePath(path: f.shown, reason: "its temporary file was replaced during the restore")
            }
            throw TreeError.writeFailed(path: f.shown, reason: FS.errorText(code))
        }
        guard let st = FS.status(fd: fd), st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_dev) == f.device, UInt64(st.st_ino) == f.inode else {
            Glibc.close(fd)
            throw TreeError.unsafePath(path: f.shown, reason: "its temporary file was replaced during the restore")
        }
        return fd
    }

    /// The file's descriptor, opened (closing the least recently used idle one past
    /// ``RestoreOptions/openFiles``); nil once the file failed or is done.
    func acquire(_ f: PendingFile) throws -> Int32? {
        let cached: Int32?? = lock.withLock {
            guard f.state == .writing else { return .some(nil) }
            clock += 1
            f.lastUse = clock
            if f.fd >= 0 { f.users += 1; return .some(f.fd) }
            return nil
        }
        if let cached { return cached }
        let fd = try openTemporary(f)  // outside the lock: it opens directories through the cache
        return lock.withLock {
            guard f.state == .writing else { Glibc.close(fd); return nil }
            if f.fd >= 0 { Glibc.close(fd); f.users += 1; return f.fd }  // another task opened it meanwhile
            if open.count >= max(1, options.openFiles) {
                var victim: PendingFile?
                for n in open { if let g = files[n], g.users == 0, victim == nil || g.lastUse < victim!.lastUse { victim = g } }
                if let victim { Glibc.close(victim.fd); victim.fd = -1; open.remove(victim.number) }
            }
            f.fd = fd
            f.users = 1
            open.insert(f.number)
            return fd
        }
    }

    func release(_ f: PendingFile) {
        lock.withLock {
            f.users -= 1
            if f.users == 0 && f.state != .writing && f.fd >= 0 { Glibc.close(f.fd); f.fd = -1; open.remove(f.number) }
        }
    }

    var openCount: Int { lock.withLock { open.count } }

    // MARK: Completion

    /// Metadata, size check and rename over the final name (nothing is renamed unless complete).
    func complete(_ f: PendingFile) {
        do {
            guard let fd = try acquire(f) else { return }
            defer { release(f) }
            let node = f.node
            guard let dir = directory(f.directory) else {
                throw TreeError.unsafePath(path: f.shown, reason: "its directory was replaced or removed during the restore")
            }
            guard let st = FS.status(fd: fd) else { throw TreeError.writeFailed(path: f.shown, reason: FS.errorText()) }
            guard UInt64(st.st_size) == node.size else {
                throw TreeError.contentMismatch(path: f.shown, reason: "content is \(st.st_size) bytes, the tree records \(node.size)")
            }
            restorer.setMetadata(node, fd: fd, directory: dir.fd, name: f.temporary, path: f.shown, permissions: 0o777)
            if let existing = FS.status(dir.fd, node.name), existing.st_mode & S_IFMT == S_IFDIR {
                throw TreeError.unsafePath(path: f.shown, reason: "a directory is in the way")
            }
            let rc = withCName(f.temporary) { from in withCName(node.name) { renameat(dir.fd, from, dir.fd, $0) } }
            guard rc == 0 else { throw TreeError.writeFailed(path: f.shown, reason: FS.errorText()) }
            lock.withLock { f.state = .done }
            restorer.lock.withLock {
                restorer.result.files += 1
                restorer.result.bytes += Int64(node.size)
                if let key = Restorer.LinkKey(node), restorer.linkedFirsts[key] == nil { restorer.linkedFirsts[key] = f.directory + [node.name] }
            }
        } catch {
            failFile(f, error)
        }
    }

    /// Records the file's failure (once) and removes its temporary: nothing under its final name.
    func failFile(_ f: PendingFile, _ error: Error) {
        let first = lock.withLock { () -> Bool in
            guard f.state == .writing else { return false }
            f.state = .failed
            if f.users == 0 && f.fd >= 0 { Glibc.close(f.fd); f.fd = -1; open.remove(f.number) }
            return true
        }
        guard first else { return }
        restorer.fail(f.shown, error)
        removeTemporary(f)
    }

    private func removeTemporary(_ f: PendingFile) {
        if let dir = directory(f.directory) { _ = withCName(f.temporary) { unlinkat(dir.fd, $0, 0) } }
    }

    // MARK: Last steps

    /// Hard links to files restored before them (or, when that file was not restored, written
    /// from the repository), in tree order.
    func hardLinks() async {
        for link in links {
            let shown = link.parent + "/" + link.node.displayName
            do {
                guard let dir = directory(link.components) else {
                    throw TreeError.unsafePath(path: shown, reason: "its directory was replaced or removed during the restore")
                }
                try await restorer.restoreLeaf(link.node, number: Restorer.hardLink, in: dir, path: link.parent, at: link.components, feed: emptyFeed)
            } catch {
                restorer.fail(shown, error)
            }
        }
    }

    /// Owner, attributes, mode and times of every directory created, deepest first (after all
    /// their entries).
    func finishDirectories() {
        lock.withLock { directoryCache = [:] }
        for entry in directories.reversed() {
            let node = entry.node
            guard let parent = restorer.openBelowTarget(Array(entry.components.dropLast())) else {
                restorer.fail(entry.shown, TreeError.unsafePath(path: entry.shown, reason: "its parent was replaced during the restore"))
                continue
            }
            let fd = FS.openAt(parent.fd, node.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            guard fd >= 0 else {
                restorer.fail(entry.shown, TreeError.unsafePath(path: entry.shown, reason: "it was replaced during the restore"))
                continue
            }
            defer { Glibc.close(fd) }
            restorer.setMetadata(node, fd: fd, directory: parent.fd, name: node.name, path: entry.shown, permissions: 0o1777)
            restorer.lock.withLock { restorer.result.directories += 1 }
        }
    }

    /// Temporaries of files neither completed nor failed (none after a full run): removed.
    func removeLeftovers() {
        for f in files.values {
            let left = lock.withLock { () -> Bool in
                if f.fd >= 0 { Glibc.close(f.fd); f.fd = -1; open.remove(f.number) }
                return f.state == .writing
            }
            if left {
                restorer.fail(f.shown, TreeError.writeFailed(path: f.shown, reason: "its content was not written"))
                removeTemporary(f)
            }
        }
        lock.withLock { directoryCache = [:] }
    }
}
