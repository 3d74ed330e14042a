import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `dump SNAPSHOT DIR`: a directory of a snapshot (or `/`) as a POSIX tar stream (pax interchange
/// format, POSIX.1-2001), as restic's `dump` writes one (docs/REPOSITORY.md, "Restore", the tar
/// paragraph). Entries come depth first in name order; names are the entries' absolute paths in
/// the snapshot without the leading "/", built only from tree names the tree reader validated and
/// checked again here. File content is read a window of blobs at a time (memory does not grow with
/// the file), each blob authenticated and checked against its id by the store before it is written.
/// Files that were one file (hard links, by the restore's rule: equal device and inode, a link
/// count of 2 or more, equal content and size) are one file in the archive: the first met is
/// written with its content, each later one as a hard link entry (typeflag '1') naming it.
public enum TarDump {
    public struct Summary: Sendable, Equatable {
        public var files = 0
        public var directories = 0
        public var symlinks = 0
        /// Files written as hard links to a file written before them (also counted in ``files``).
        public var hardLinks = 0
        /// Content bytes of the files written (not counting headers and padding).
        public var bytes: UInt64 = 0
        public init() {}
    }

    /// Content is loaded in windows of about this many plaintext bytes (``BlobStore/loadBatch(_:_:reads:)``).
    static let windowBytes = 4 << 20

    /// Writes the directory at `components` (empty: the snapshot's root) and everything below it to
    /// `fd` as a tar stream, ended by its two zero blocks. Refuses a path that is not a directory.
    /// A failure (a damaged blob, content not adding up to the recorded size, a write error)
    /// throws; what was written by then is an incomplete archive without its end blocks.
    public static func dump(store: any BlobStore, root: BlobID, path components: [[UInt8]], to fd: Int32,
                            limits: TreeWalkLimits = TreeWalkLimits(), reads: RangeReads = RangeReads()) async throws -> Summary {
        let shown = "/" + components.map { TreeNode.display($0) }.joined(separator: "/")
        for component in components {
            if let reason = TreeNode.invalidNameReason(component) { throw TreeError.invalidRequest("\(shown): \(reason)") }
        }
        guard let node = try await store.lookup(path: components, root: root) else { throw TreeError.notFound("\(shown) in the snapshot") }
        guard node.kind == .directory, let subtree = node.subtree else { throw TreeError.invalidRequest("\(shown) is not a directory") }
        var run = Run(store: store, writer: TarWriter(fd: fd), counter: TreeWalkLimits.Counter(limits), reads: reads)
        var name: [UInt8] = []
        for component in components { name += (name.isEmpty ? [] : [0x2f]) + component }
        if !components.isEmpty { try await run.entry(node, name: name) }
        try await run.walk(subtree, name: name, depth: 0)
        try run.writer.finish()
        return run.summary
    }

    private struct Run {
        let store: any BlobStore
        var writer: TarWriter
        var counter: TreeWalkLimits.Counter
        let reads: RangeReads
        var summary = Summary()
        /// The first file of each hard-link group met so far: its name in the archive, content, size.
        var linkFirsts: [Restorer.LinkKey: (name: [UInt8], content: [BlobID], size: UInt64)] = [:]

        mutating func walk(_ id: BlobID, name: [UInt8], depth: Int) async throws {
            guard depth < Restorer.maxDepth else { throw TreeError.malformedTree("trees nested deeper than \(Restorer.maxDepth)") }
            for node in try await store.loadTree(id).nodes {
                try counter.add(node)
                let childName = name.isEmpty ? node.name : name + [0x2f] + node.name
                try await entry(node, name: childName)
                if node.kind == .directory, let sub = node.subtree {
                    try await walk(sub, name: childName, depth: depth + 1)
                }
            }
        }

        mutating func entry(_ node: TreeNode, name: [UInt8]) async throws {
            // Names come from validated trees; checked again as the last line before the stream.
            if let reason = TreeNode.invalidNameReason(node.name) {
                throw TreeError.unsafePath(path: "/" + TreeNode.display(name), reason: reason)
            }
            switch node.kind {
            case .directory:
                try writer.header(for: node, name: name + [0x2f], type: .directory, size: 0)
                summary.directories += 1
            case .symlink:
                try writer.header(for: node, name: name, type: .symlink, size: 0)
                summary.symlinks += 1
            case .file:
                summary.files += 1
                if let key = Restorer.LinkKey(node) {
                    // A forged tree cannot make two different files one: a "link" whose content or
                    // size differs from the first's is written as a file of its own.
                    if let first = linkFirsts[key], first.content == node.content, first.size == node.size {
                        try writer.header(for: node, name: name, type: .hardLink, size: 0, linkName: first.name)
                        summary.hardLinks += 1
                        return
                    }
                    if linkFirsts[key] == nil { linkFirsts[key] = (name, node.content, node.size) }
                }
                try await file(node, name: name)
                summary.bytes += node.size
            }
        }

        mutating func file(_ node: TreeNode, name: [UInt8]) async throws {
            let shown = "/" + TreeNode.display(name)
            // When the index knows every blob's length, a file whose blobs cannot add up to its size
            // is refused before its header is written.
            let lengths = node.content.map { store.indexedLength(.data, $0) }
            if !lengths.contains(nil), lengths.reduce(UInt64(0), { $0 + UInt64($1!) }) != node.size {
                throw TreeError.contentMismatch(path: shown, reason: "its blobs hold \(lengths.reduce(0) { $0 + $1! }) bytes, the tree records \(node.size)")
            }
            try writer.header(for: node, name: name, type: .file, size: node.size)
            var written: UInt64 = 0
            var next = 0
            while next < node.content.count {
                var window: [BlobID] = []
                var planned = 0
                while next < node.content.count && (window.isEmpty || planned < TarDump.windowBytes) {
                    window.append(node.content[next])
                    planned += lengths[next] ?? (512 << 10)
                    next += 1
                }
                let loaded = await store.loadBatch(.data, window, reads: reads)
                for id in window {
                    guard let result = loaded[id] else { throw TreeError.readFailed(path: shown, reason: "blob \(id) was not loaded") }
                    let bytes = try result.get()
                    written += UInt64(bytes.count)
                    guard written <= node.size else {
                        throw TreeError.contentMismatch(path: shown, reason: "content is longer than the \(node.size) bytes the tree records")
                    }
                    try writer.write(bytes)
                }
            }
            guard written == node.size else {
                throw TreeError.contentMismatch(path: shown, reason: "content is \(written) bytes, the tree records \(node.size)")
            }
            try writer.pad()
        }
    }
}

/// The tar encoder: ustar headers (POSIX.1-1988) with pax extended headers (typeflag `x`) for what
/// ustar cannot hold: names over 100 bytes, link targets over 100 bytes, sizes of 8 GiB and more,
/// uid/gid over 0o7777777, owner names over 32 bytes, times before 1970 or past 0o77777777777 s,
/// and user extended attributes (`SCHILY.xattr.NAME`, as GNU tar and bsdtar write them).
struct TarWriter {
    enum EntryType: UInt8 {
        case file = 0x30       // '0'
        case hardLink = 0x31   // '1'
        case symlink = 0x32    // '2'
        case directory = 0x35  // '5'
        case pax = 0x78        // 'x'
    }

    static let block = 512
    let fd: Int32
    private var buffer: [UInt8] = []
    /// Bytes of the current file's content written since its header (for the padding).
    private var contentBytes: UInt64 = 0

    init(fd: Int32) {
        self.fd = fd
        buffer.reserveCapacity(1 << 16)
    }

    /// Octal digits, zero-padded, NUL-terminated, in a field of `width` bytes; nil when `value` does not fit.
    static func octal(_ value: UInt64, width: Int) -> [UInt8]? {
        let digits = Array(String(value, radix: 8).utf8)
        guard digits.count <= width - 1 else { return nil }
        return [UInt8](repeating: 0x30, count: width - 1 - digits.count) + digits + [0]
    }

    /// One pax record: "LENGTH KEY=VALUE\n", LENGTH counting the whole record in decimal.
    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [0x0a]
        var length = body.count + 1
        while String(length).utf8.count + body.count != length { length = String(length).utf8.count + body.count }
        return Array(String(length).utf8) + body
    }

    /// A 512-byte ustar header.
    static func ustar(name: [UInt8], mode: UInt32, uid: UInt64, gid: UInt64, size: UInt64, mtime: UInt64, type: EntryType,
                      linkName: [UInt8], user: [UInt8], group: [UInt8]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: block)
        func put(_ bytes: [UInt8], at offset: Int, max: Int) {
            for (i, b) in bytes.prefix(max).enumerated() { h[offset + i] = b }
        }
        put(name, at: 0, max: 100)
        put(octal(UInt64(mode), width: 8)!, at: 100, max: 8)
        put(octal(uid, width: 8) ?? octal(0, width: 8)!, at: 108, max: 8)
        put(octal(gid, width: 8) ?? octal(0, width: 8)!, at: 116, max: 8)
        put(octal(size, width: 12) ?? octal(0, width: 12)!, at: 124, max: 12)
        put(octal(mtime, width: 12) ?? octal(0, width: 12)!, at: 136, max: 12)
        put([UInt8](repeating: 0x20, count: 8), at: 148, max: 8)  // checksum: spaces while summing
        h[156] = type.rawValue
        put(linkName, at: 157, max: 100)
        put(Array("ustar".utf8) + [0], at: 257, max: 6)
        put(Array("00".utf8), at: 263, max: 2)
        put(user, at: 265, max: 32)
        put(group, at: 297, max: 32)
        put(octal(0, width: 8)!, at: 329, max: 8)  // devmajor
        put(octal(0, width: 8)!, at: 337, max: 8)  // devminor
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(UInt64(sum), width: 7)! + [0x20], at: 148, max: 8)
        return h
    }

    /// Writes the header of one entry (a pax header first when needed). `linkName`: a hard link's
    /// target, the name of the entry written before it (a symbolic link's comes from `node`).
    mutating func header(for node: TreeNode, name: [UInt8], type: EntryType, size: UInt64, linkName: [UInt8] = []) throws {
        var pax: [UInt8] = []
        var binary = false
        func text(_ key: String, _ value: [UInt8]) {
            if String(validating: value, as: UTF8.self) == nil { binary = true }
            pax += TarWriter.paxRecord(key, value)
        }
        if name.count > 100 { text("path", name) }
        let target = type == .symlink ? node.linkTarget : type == .hardLink ? linkName : []
        if target.count > 100 { text("linkpath", target) }
        if TarWriter.octal(size, width: 12) == nil { pax += TarWriter.paxRecord("size", Array(String(size).utf8)) }
        let uid = UInt64(node.uid), gid = UInt64(node.gid)
        if TarWriter.octal(uid, width: 8) == nil { pax += TarWriter.paxRecord("uid", Array(String(uid).utf8)) }
        if TarWriter.octal(gid, width: 8) == nil { pax += TarWriter.paxRecord("gid", Array(String(gid).utf8)) }
        if node.user.count > 32 { text("uname", node.user) }
        if node.group.count > 32 { text("gname", node.group) }
        // Whole seconds (rounded down); outside ustar's range, the pax `mtime` record.
        let seconds = node.mtimeNanos >= 0 ? node.mtimeNanos / 1_000_000_000 : -((-node.mtimeNanos + 999_999_999) / 1_000_000_000)
        let ustarTime = seconds >= 0 ? TarWriter.octal(UInt64(seconds), width: 12).map { _ in UInt64(seconds) } : nil
        if ustarTime == nil { pax += TarWriter.paxRecord("mtime", Array(String(seconds).utf8)) }
        for x in node.xattrs where type != .hardLink && x.namespace == "user" && ExtendedAttribute.invalidNameReason(x.name) == nil {
            pax += TarWriter.paxRecord("SCHILY.xattr." + String(decoding: x.name, as: UTF8.self), x.value)
        }
        if binary { pax = TarWriter.paxRecord("hdrcharset", Array("BINARY".utf8)) + pax }
        if !pax.isEmpty {
            let last = name.split(separator: 0x2f).last.map(Array.init) ?? name
            let paxName = Array("PaxHeader/".utf8) + last
            append(TarWriter.ustar(name: Array(paxName.prefix(100)), mode: 0o644, uid: 0, gid: 0, size: UInt64(pax.count), mtime: 0,
                                   type: .pax, linkName: [], user: [], group: []))
            append(pax)
            appendPadding(UInt64(pax.count))
        }
        // Set-user-id and set-group-id are never passed on (as restore never restores them).
        let mode = type == .symlink ? 0o777 : node.mode & 0o1777
        append(TarWriter.ustar(name: name, mode: mode, uid: TarWriter.octal(uid, width: 8) == nil ? 0 : uid,
                               gid: TarWriter.octal(gid, width: 8) == nil ? 0 : gid, size: type == .file ? size : 0,
                               mtime: ustarTime ?? 0, type: type, linkName: target,
                               user: node.user.count > 32 ? [] : node.user, group: node.group.count > 32 ? [] : node.group))
        contentBytes = 0
        try flushIfFull()
    }

    /// Writes file content (after its header).
    mutating func write(_ bytes: [UInt8]) throws {
        contentBytes += UInt64(bytes.count)
        if bytes.count >= 1 << 16 {
            try flush()
            try TarWriter.writeAll(fd, bytes)
        } else {
            append(bytes)
            try flushIfFull()
        }
    }

    /// Pads the current file's content to a whole block.
    mutating func pad() throws {
        appendPadding(contentBytes)
        contentBytes = 0
        try flushIfFull()
    }

    /// The end of the archive: two zero blocks.
    mutating func finish() throws {
        append([UInt8](repeating: 0, count: 2 * TarWriter.block))
        try flush()
    }

    private mutating func append(_ bytes: [UInt8]) { buffer += bytes }

    private mutating func appendPadding(_ length: UInt64) {
        let rest = Int(length % UInt64(TarWriter.block))
        if rest != 0 { buffer += [UInt8](repeating: 0, count: TarWriter.block - rest) }
    }

    private mutating func flushIfFull() throws { if buffer.count >= 1 << 16 { try flush() } }

    private mutating func flush() throws {
        guard !buffer.isEmpty else { return }
        try TarWriter.writeAll(fd, buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TreeError.writeFailed(path: "standard output", reason: String(cString: strerror(errno)))
            }
            offset += n
        }
    }
}
