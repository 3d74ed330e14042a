import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Something that writes one stream of a multi-stream backup (a database dump tool, usually a child
/// process): ``start(writingTo:)`` begins writing to a pipe's write end, the archiver reads the other
/// end to its end, then ``RunningStream/finish()`` says whether the stream is complete.
public protocol StreamProducer: Sendable {
    /// Starts producing into `fd`. The producer may keep `fd` open only in what it starts (a child
    /// process's standard output); the archiver closes its own copy right after this returns.
    func start(writingTo fd: Int32) async throws -> any RunningStream
}

/// A stream being produced.
public protocol RunningStream: Sendable {
    /// Called after the archiver read the stream to its end: waits for the producer and throws when
    /// it failed (exit status, signal), with the producer's own error text.
    func finish() async throws
    /// Stops the producer (the backup failed elsewhere); `finish` is not called afterwards.
    func cancel()
}

/// One file of a multi-stream snapshot: its absolute path in the snapshot ("/postgres/shop.dump")
/// and what writes its content.
public struct StreamSpec: Sendable {
    public var path: String
    public var producer: any StreamProducer

    public init(path: String, producer: any StreamProducer) {
        self.path = path
        self.producer = producer
    }
}

extension Archiver {
    /// Backs up several streams as files of one snapshot, one after the other, each at its path
    /// and each through the archiver's parallel chunk pipeline (``chunkAndSave``)
    /// (directories on the way are created in the snapshot with mode 0700). Nothing is flushed and no
    /// snapshot is returned unless every producer finished successfully: a failing stream fails the
    /// whole backup (the chunks already saved stay unreferenced until `prune`).
    /// The snapshot's `paths` are the specs' top-level directories (or files).
    public func backup(streams: [StreamSpec]) async throws -> ArchiveResult {
        guard !streams.isEmpty else { throw TreeError.invalidRequest("no stream to back up") }
        // Validate every path before starting anything.
        var seen = Set<[[UInt8]]>()
        var parsed: [[[UInt8]]] = []
        for spec in streams {
            guard spec.path.hasPrefix("/") else { throw TreeError.invalidRequest("stream path \(spec.path) is not absolute") }
            let components = spec.path.split(separator: "/", omittingEmptySubsequences: true).map { Array($0.utf8) }
            guard !components.isEmpty else { throw TreeError.invalidRequest("stream path \(spec.path) names no file") }
            for c in components {
                if let reason = TreeNode.invalidNameReason(c) { throw TreeError.invalidRequest("stream path \(spec.path) refused: \(reason)") }
            }
            guard seen.insert(components).inserted else { throw TreeError.invalidRequest("stream path \(spec.path) given twice") }
            parsed.append(components)
        }
        for a in parsed {
            for b in parsed where b.count > a.count && Array(b.prefix(a.count)) == a {
                throw TreeError.invalidRequest("stream paths overlap: /\(a.map { TreeNode.display($0) }.joined(separator: "/")) is a file and a directory")
            }
        }
        let owners = OwnerNames()
        let now = Int64(options.time.timeIntervalSince1970 * 1e9)
        let uid = getuid(), gid = getgid()
        let root = VirtualDirectory(node: nil)
        var done: Int64 = 0  // bytes of the streams already finished, for the progress callback
        for (spec, components) in zip(streams, parsed) {
            var fds: [Int32] = [-1, -1]
            guard pipe(&fds) == 0 else { throw TreeError.commandFailed("cannot create a pipe: \(FS.errorText())") }
            _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
            let readEnd = Descriptor(fds[0])
            let running: any RunningStream
            do {
                running = try await spec.producer.start(writingTo: fds[1])
            } catch {
                Glibc.close(fds[1])
                throw error
            }
            Glibc.close(fds[1])
            let content: [BlobID]
            let size: UInt64
            do {
                // The same parallel pipeline as files: hashing, compression and packing on every core.
                let progress = options.progress.map { report in
                    { (bytes: UInt64) in report(self.processedFiles, done + Int64(bytes)) }
                }
                (content, size) = try await chunkAndSave(DescriptorSource(fd: readEnd.fd, path: spec.path), progress: progress)
            } catch {
                running.cancel()
                throw error
            }
            try await running.finish()
            done += Int64(size)
            count {
                $0.filesNew += 1
                $0.totalFilesProcessed += 1
                $0.totalBytesProcessed += Int64(size)
            }
            var directory = root
            for c in components.dropLast() {
                if let existing = directory.children[c] {
                    directory = existing
                } else {
                    let node = TreeNode(name: c, kind: .directory, mode: 0o700, uid: uid, gid: gid,
                                        user: owners.user(uid), group: owners.group(gid), mtimeNanos: now, ctimeNanos: now)
                    let child = VirtualDirectory(node: node)
                    directory.children[c] = child
                    directory = child
                }
            }
            directory.leaves[components.last!] = TreeNode(name: components.last!, kind: .file, mode: 0o600, uid: uid, gid: gid,
                                                           user: owners.user(uid), group: owners.group(gid),
                                                           mtimeNanos: now, ctimeNanos: now, size: size, content: content)
        }
        let tree = try await saveVirtual(root)
        var tops: [String] = []
        for c in parsed where !tops.contains("/" + TreeNode.display(c[0])) { tops.append("/" + TreeNode.display(c[0])) }
        return try await commit(tree: tree, paths: tops.sorted())
    }

    private func saveVirtual(_ directory: VirtualDirectory) async throws -> BlobID {
        var nodes = Array(directory.leaves.values)
        for (_, child) in directory.children {
            var node = child.node!
            node.subtree = try await saveVirtual(child)
            count { $0.dirsNew += 1 }
            nodes.append(node)
        }
        let saved = try await store.saveTree(try Tree(nodes: nodes))
        if saved.added { count { $0.treeBlobs += 1 } }
        return saved.id
    }
}
