import CofferFormat
import Foundation

/// Errors of trees, the archiver, the restorer and snapshot selection. Messages never name
/// command-line flags.
public enum TreeError: CategorizedError, Equatable {
    /// A tree blob does not follow the encoding of docs/REPOSITORY.md (integrity: trees are
    /// authenticated and id-checked by the blob store, so a malformed one was made by an attacker
    /// holding keys or by a bug).
    case malformedTree(String)
    /// A tree or the restore target would make the restorer write outside the target.
    case unsafePath(path: String, reason: String)
    /// A restored file's content does not add up to its recorded size.
    case contentMismatch(path: String, reason: String)
    case readFailed(path: String, reason: String)
    case writeFailed(path: String, reason: String)
    /// A stream backup's command failed: no snapshot was written.
    case commandFailed(String)
    /// Something asked for does not exist (a path in a snapshot, a snapshot id).
    case notFound(String)
    /// The request itself is not valid (overlapping paths, an empty policy, a bad pattern).
    case invalidRequest(String)
    /// A walk of a snapshot's trees went past its limits (``TreeWalkLimits``): more entries, or
    /// files claiming more bytes, than any real snapshot holds: refused as hostile before any work.
    case limitExceeded(String)
    /// A restore that went on past failing entries: everything else was restored, the failed
    /// entries (listed in the result) have nothing under their final names.
    case restoreIncomplete(RestoreResult)

    public var category: ErrorCategory {
        switch self {
        case .malformedTree, .unsafePath, .contentMismatch: return .integrity
        case .readFailed, .writeFailed, .commandFailed: return .io
        case .notFound, .invalidRequest: return .usage
        case .limitExceeded: return .integrity
        case .restoreIncomplete(let result):
            let categories = result.failures.map(\.category)
            for worst in [ErrorCategory.integrity, .key, .io, .format] where categories.contains(worst) { return worst }
            return categories.first ?? .io
        }
    }

    public var description: String {
        switch self {
        case .malformedTree(let reason): return "malformed tree: \(reason)"
        case .unsafePath(let path, let reason): return "\(path): refused: \(reason)"
        case .contentMismatch(let path, let reason): return "\(path): \(reason)"
        case .readFailed(let path, let reason): return "cannot read \(path): \(reason)"
        case .writeFailed(let path, let reason): return "cannot write \(path): \(reason)"
        case .commandFailed(let reason): return "stream command failed: \(reason); no snapshot was written"
        case .notFound(let what): return "not found: \(what)"
        case .invalidRequest(let reason): return reason
        case .limitExceeded(let reason): return "refused: \(reason)"
        case .restoreIncomplete(let result):
            let n = result.failures.count
            return "\(n) entr\(n == 1 ? "y" : "ies") could not be restored (nothing was written under \(n == 1 ? "its name" : "their names")); the first: \(result.failures.first.map { "\($0.path): \($0.reason)" } ?? "")"
        }
    }
}

/// One entry of a directory: a file, a directory or a symbolic link, with the metadata a backup
/// records. Names and link targets are bytes (a name need not be UTF-8).
public struct TreeNode: Sendable, Equatable {
    public enum Kind: UInt8, Sendable, Equatable { case file = 1, directory = 2, symlink = 3 }

    public var name: [UInt8]
    public var kind: Kind
    /// Permission bits as found (`st_mode & 0o7777`); the restorer decides what it applies.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Owner and group names (may be empty when the ids have no name).
    public var user: [UInt8]
    public var group: [UInt8]
    /// Modification and status-change times, nanoseconds since the Unix epoch.
    public var mtimeNanos: Int64
    public var ctimeNanos: Int64
    /// File size in bytes (0 for directories; the target's length for symbolic links).
    public var size: UInt64
    public var inode: UInt64
    public var device: UInt64
    /// The link's target (symbolic links only).
    public var linkTarget: [UInt8]
    /// The file's content blobs in order (files only).
    public var content: [BlobID]
    /// The directory's tree blob (directories only).
    public var subtree: BlobID?
    /// Extended attributes, sorted by name (empty when none were recorded).
    public var xattrs: [ExtendedAttribute] = []
    /// A file's link count when it had other hard links at backup time (≥ 2); 0 when not recorded.
    /// Files of one snapshot with equal (device, inode) and a link count are one file.
    public var links: UInt32 = 0

    public init(name: [UInt8], kind: Kind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0,
                user: [UInt8] = [], group: [UInt8] = [], mtimeNanos: Int64 = 0, ctimeNanos: Int64 = 0,
                size: UInt64 = 0, inode: UInt64 = 0, device: UInt64 = 0, linkTarget: [UInt8] = [],
                content: [BlobID] = [], subtree: BlobID? = nil, xattrs: [ExtendedAttribute] = [], links: UInt32 = 0) {
        self.name = name; self.kind = kind; self.mode = mode; self.uid = uid; self.gid = gid
        self.user = user; self.group = group; self.mtimeNanos = mtimeNanos; self.ctimeNanos = ctimeNanos
        self.size = size; self.inode = inode; self.device = device; self.linkTarget = linkTarget
        self.content = content; self.subtree = subtree; self.xattrs = xattrs; self.links = links
    }

    /// The name for messages (invalid UTF-8 and control characters escaped).
    public var displayName: String { TreeNode.display(name) }

    public static func display(_ bytes: [UInt8]) -> String {
        // Fast path (nearly every name): valid UTF-8 with nothing to escape is shown as it is.
        if let whole = String(validating: bytes, as: UTF8.self),
           !whole.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\\" }) {
            return whole
        }
        var out = ""
        var rest = bytes[...]
        while !rest.isEmpty {
            // Decode the longest valid UTF-8 prefix, escape one byte otherwise.
            var decoded = false
            for length in (1...min(4, rest.count)).reversed() {
                let piece = Array(rest.prefix(length))
                if let s = String(validating: piece, as: UTF8.self), s.unicodeScalars.count == 1 {
                    let scalar = s.unicodeScalars.first!
                    if scalar.value < 0x20 || scalar.value == 0x7f || scalar == "\\" {
                        out += scalar == "\\" ? "\\\\" : String(format: "\\x%02x", scalar.value)
                    } else {
                        out += s
                    }
                    rest = rest.dropFirst(length)
                    decoded = true
                    break
                }
            }
            if !decoded {
                out += String(format: "\\x%02x", rest.first!)
                rest = rest.dropFirst()
            }
        }
        return out
    }

    /// Why `name` cannot be an entry's name, or nil when it can: 1–255 bytes, no "/" and no NUL,
    /// not "." or "..".
    public static func invalidNameReason(_ name: [UInt8]) -> String? {
        if name.isEmpty { return "empty name" }
        if name.count > TreeLimits.maxNameLength { return "name longer than \(TreeLimits.maxNameLength) bytes" }
        if name == [0x2e] || name == [0x2e, 0x2e] { return "name \"\(display(name))\"" }
        if name.contains(0x2f) { return "name \"\(display(name))\" contains \"/\"" }
        if name.contains(0) { return "name \"\(display(name))\" contains NUL" }
        return nil
    }
}

/// One extended attribute: its full name ("user.comment") and value.
public struct ExtendedAttribute: Sendable, Equatable {
    public var name: [UInt8]
    public var value: [UInt8]
    public init(name: [UInt8], value: [UInt8]) { self.name = name; self.value = value }

    /// The namespaces a tree may name, and of them the one restore sets unless asked for more.
    public static let namespaces = ["user.", "trusted.", "security.", "system."]
    public static let maxNameLength = 255
    public static let maxValueLength = 65_536
    public static let maxCount = 1024
    /// Names and values of one entry together.
    public static let maxTotalBytes = 1 << 20

    /// Why `name` cannot be an attribute's name, or nil: 1–255 bytes, no NUL, in one of the
    /// ``namespaces`` with at least one byte after the prefix.
    public static func invalidNameReason(_ name: [UInt8]) -> String? {
        if name.isEmpty || name.count > maxNameLength { return "attribute name of \(name.count) bytes" }
        if name.contains(0) { return "attribute name contains NUL" }
        guard namespaces.contains(where: { name.count > $0.utf8.count && name.starts(with: Array($0.utf8)) }) else {
            return "attribute \"\(TreeNode.display(name))\" is not in the user, trusted, security or system namespace"
        }
        return nil
    }

    /// The attribute's namespace ("user", "trusted", "security", "system").
    public var namespace: String {
        String(decoding: name.prefix { $0 != 0x2e }, as: UTF8.self)
    }
}

public enum TreeLimits {
    public static let maxNameLength = 255
    public static let maxOwnerNameLength = 255
    public static let maxLinkTargetLength = 4096
    /// More entries than this in one directory is refused (a tree blob must fit a chunk anyway).
    public static let maxEntries = 1 << 20
}

/// One directory's listing: nodes sorted by name (byte order), names unique. Encoded as one tree
/// blob (docs/REPOSITORY.md).
public struct Tree: Sendable, Equatable {
    public var nodes: [TreeNode]

    public static let magic: [UInt8] = Array("CFTREE01".utf8)

    /// Sorts the nodes; refuses invalid or duplicate names.
    public init(nodes: [TreeNode]) throws {
        let sorted = nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }
        try Tree.validate(sorted)
        self.nodes = sorted
    }

    public func node(named name: [UInt8]) -> TreeNode? {
        var low = 0, high = nodes.count
        while low < high {
            let mid = (low + high) / 2
            if nodes[mid].name == name { return nodes[mid] }
            if nodes[mid].name.lexicographicallyPrecedes(name) { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    static func validate(_ nodes: [TreeNode]) throws {
        guard nodes.count <= TreeLimits.maxEntries else { throw TreeError.malformedTree("too many entries") }
        for (i, node) in nodes.enumerated() {
            if let reason = TreeNode.invalidNameReason(node.name) { throw TreeError.malformedTree(reason) }
            if i > 0 && !nodes[i - 1].name.lexicographicallyPrecedes(node.name) {
                throw TreeError.malformedTree(nodes[i - 1].name == node.name
                    ? "duplicate name \"\(node.displayName)\"" : "entries not sorted by name")
            }
            guard node.mode & ~0o7777 == 0 else { throw TreeError.malformedTree("mode of \"\(node.displayName)\" has bits beyond 0o7777") }
            guard node.user.count <= TreeLimits.maxOwnerNameLength, node.group.count <= TreeLimits.maxOwnerNameLength,
                  !node.user.contains(0), !node.group.contains(0) else {
                throw TreeError.malformedTree("owner or group name of \"\(node.displayName)\" is invalid")
            }
            if !node.xattrs.isEmpty {
                guard node.xattrs.count <= ExtendedAttribute.maxCount else {
                    throw TreeError.malformedTree("\"\(node.displayName)\" has more than \(ExtendedAttribute.maxCount) extended attributes")
                }
                var total = 0
                for (j, x) in node.xattrs.enumerated() {
                    if let reason = ExtendedAttribute.invalidNameReason(x.name) {
                        throw TreeError.malformedTree("\"\(node.displayName)\": \(reason)")
                    }
                    guard x.value.count <= ExtendedAttribute.maxValueLength else {
                        throw TreeError.malformedTree("\"\(node.displayName)\": attribute value longer than \(ExtendedAttribute.maxValueLength) bytes")
                    }
                    guard j == 0 || node.xattrs[j - 1].name.lexicographicallyPrecedes(x.name) else {
                        throw TreeError.malformedTree("\"\(node.displayName)\": extended attributes not sorted or repeated")
                    }
                    total += x.name.count + x.value.count
                }
                guard total <= ExtendedAttribute.maxTotalBytes else {
                    throw TreeError.malformedTree("\"\(node.displayName)\": extended attributes of more than \(ExtendedAttribute.maxTotalBytes) bytes")
                }
            }
            guard node.links == 0 || (node.kind == .file && node.links >= 2) else {
                throw TreeError.malformedTree("\"\(node.displayName)\": link count \(node.links) on a \(node.kind == .file ? "file" : "non-file")")
            }
            switch node.kind {
            case .file:
                guard node.subtree == nil, node.linkTarget.isEmpty else {
                    throw TreeError.malformedTree("file \"\(node.displayName)\" has a subtree or link target")
                }
                guard (node.size == 0) == node.content.isEmpty else {
                    throw TreeError.malformedTree("file \"\(node.displayName)\": size and content disagree")
                }
                // Every blob holds at least one byte.
                guard UInt64(node.content.count) <= node.size else {
                    throw TreeError.malformedTree("file \"\(node.displayName)\": more blobs than bytes")
                }
            case .directory:
                guard node.subtree != nil, node.content.isEmpty, node.linkTarget.isEmpty, node.size == 0 else {
                    throw TreeError.malformedTree("directory \"\(node.displayName)\" must have a subtree and nothing else")
                }
            case .symlink:
                guard node.subtree == nil, node.content.isEmpty, !node.linkTarget.isEmpty,
                      node.linkTarget.count <= TreeLimits.maxLinkTargetLength, !node.linkTarget.contains(0) else {
                    throw TreeError.malformedTree("symbolic link \"\(node.displayName)\" has an invalid target")
                }
            }
        }
    }

    /// The tree blob's bytes (docs/REPOSITORY.md, "Tree encoding").
    public func encoded() -> [UInt8] {
        var out = Tree.magic
        out.reserveCapacity(16 + nodes.count * 128)
        func u16(_ v: Int) { out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xff)) }
        func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
        func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
        u32(UInt32(nodes.count))
        for n in nodes {
            u16(n.name.count); out += n.name
            let flags: UInt8 = (n.xattrs.isEmpty ? 0 : Tree.hasXattrs) | (n.links == 0 ? 0 : Tree.hasLinks)
            out.append(n.kind.rawValue | (flags == 0 ? 0 : Tree.extended))
            u32(n.mode); u32(n.uid); u32(n.gid)
            u16(n.user.count); out += n.user
            u16(n.group.count); out += n.group
            u64(UInt64(bitPattern: n.mtimeNanos)); u64(UInt64(bitPattern: n.ctimeNanos))
            u64(n.size); u64(n.inode); u64(n.device)
            switch n.kind {
            case .file:
                u32(UInt32(n.content.count))
                for id in n.content { out += id.bytes }
            case .directory:
                out += n.subtree!.bytes
            case .symlink:
                u16(n.linkTarget.count); out += n.linkTarget
            }
            if flags != 0 {
                out.append(flags)
                if n.links != 0 { u32(n.links) }
                if !n.xattrs.isEmpty {
                    u16(n.xattrs.count)
                    for x in n.xattrs {
                        out.append(UInt8(x.name.count)); out += x.name
                        u32(UInt32(x.value.count)); out += x.value
                    }
                }
            }
        }
        return out
    }

    /// Kind byte bit: the entry has an extension block after its kind-specific tail.
    static let extended: UInt8 = 0x80
    /// Extension flags: a link count follows; extended attributes follow.
    static let hasLinks: UInt8 = 0x01
    static let hasXattrs: UInt8 = 0x02

    /// Parses a tree blob, refusing anything that does not follow the encoding exactly: wrong
    /// magic, truncation, trailing bytes, unknown kinds, invalid or duplicate or unsorted names,
    /// fields that do not fit the kind. Counts are checked against the bytes left before anything
    /// is allocated.
    public init(decoding bytes: [UInt8]) throws {
        var reader = TreeReader(bytes: bytes)
        guard try reader.take(Tree.magic.count) == Tree.magic else { throw TreeError.malformedTree("not a tree (bad magic)") }
        let count = Int(try reader.u32())
        // The smallest node is 1+1+1+12+2+2+40+4 bytes.
        guard count <= TreeLimits.maxEntries, count <= reader.remaining / 60 else {
            throw TreeError.malformedTree("entry count \(count) does not fit the blob")
        }
        var nodes: [TreeNode] = []
        nodes.reserveCapacity(count)
        for _ in 0..<count {
            let nameLength = Int(try reader.u16())
            guard nameLength >= 1, nameLength <= TreeLimits.maxNameLength else { throw TreeError.malformedTree("name length \(nameLength)") }
            let name = try reader.take(nameLength)
            let kindByte = try reader.u8()
            guard let kind = TreeNode.Kind(rawValue: kindByte & ~Tree.extended) else { throw TreeError.malformedTree("unknown entry kind") }
            let mode = try reader.u32(), uid = try reader.u32(), gid = try reader.u32()
            let userLength = Int(try reader.u16())
            guard userLength <= TreeLimits.maxOwnerNameLength else { throw TreeError.malformedTree("owner name too long") }
            let user = try reader.take(userLength)
            let groupLength = Int(try reader.u16())
            guard groupLength <= TreeLimits.maxOwnerNameLength else { throw TreeError.malformedTree("group name too long") }
            let group = try reader.take(groupLength)
            let mtime = Int64(bitPattern: try reader.u64()), ctime = Int64(bitPattern: try reader.u64())
            let size = try reader.u64(), inode = try reader.u64(), device = try reader.u64()
            var node = TreeNode(name: name, kind: kind, mode: mode, uid: uid, gid: gid, user: user, group: group,
                                mtimeNanos: mtime, ctimeNanos: ctime, size: size, inode: inode, device: device)
            switch kind {
            case .file:
                let blobs = Int(try reader.u32())
                guard blobs <= reader.remaining / 32 else { throw TreeError.malformedTree("blob count \(blobs) does not fit the blob") }
                node.content.reserveCapacity(blobs)
                for _ in 0..<blobs { node.content.append(BlobID(bytes: try reader.take(32))) }
            case .directory:
                node.subtree = BlobID(bytes: try reader.take(32))
            case .symlink:
                let length = Int(try reader.u16())
                guard length >= 1, length <= TreeLimits.maxLinkTargetLength else { throw TreeError.malformedTree("link target length \(length)") }
                node.linkTarget = try reader.take(length)
            }
            if kindByte & Tree.extended != 0 {
                let flags = try reader.u8()
                guard flags != 0, flags & ~(Tree.hasLinks | Tree.hasXattrs) == 0 else {
                    throw TreeError.malformedTree("unknown extension flags \(flags)")
                }
                if flags & Tree.hasLinks != 0 {
                    node.links = try reader.u32()
                    guard node.links >= 2 else { throw TreeError.malformedTree("link count \(node.links)") }
                }
                if flags & Tree.hasXattrs != 0 {
                    let count = Int(try reader.u16())
                    // The smallest attribute is 1 + 6 + 4 bytes ("user.x", empty value).
                    guard count >= 1, count <= ExtendedAttribute.maxCount, count <= reader.remaining / 11 else {
                        throw TreeError.malformedTree("extended attribute count \(count) does not fit the blob")
                    }
                    var total = 0
                    node.xattrs.reserveCapacity(count)
                    for _ in 0..<count {
                        let nameLength = Int(try reader.u8())
                        let name = try reader.take(nameLength)
                        let valueLength = Int(try reader.u32())
                        guard valueLength <= ExtendedAttribute.maxValueLength else {
                            throw TreeError.malformedTree("extended attribute value of \(valueLength) bytes")
                        }
                        total += nameLength + valueLength
                        guard total <= ExtendedAttribute.maxTotalBytes else {
                            throw TreeError.malformedTree("extended attributes of more than \(ExtendedAttribute.maxTotalBytes) bytes")
                        }
                        node.xattrs.append(ExtendedAttribute(name: name, value: try reader.take(valueLength)))
                    }
                }
            }
            nodes.append(node)
        }
        guard reader.remaining == 0 else { throw TreeError.malformedTree("\(reader.remaining) bytes after the last entry") }
        try Tree.validate(nodes)
        self.nodes = nodes
    }
}

struct TreeReader {
    let bytes: [UInt8]
    var offset = 0
    var remaining: Int { bytes.count - offset }

    mutating func take(_ n: Int) throws -> [UInt8] {
        guard n >= 0, n <= remaining else { throw TreeError.malformedTree("truncated") }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u16() throws -> UInt16 { try take(2).reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32() throws -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
}

extension BlobStore {
    /// Saves a tree; returns its id and whether it was new.
    public func saveTree(_ tree: Tree) async throws -> (id: BlobID, added: Bool) {
        let bytes = tree.encoded()
        let id = bytes.withUnsafeBytes { blobID(of: $0) }
        let added = try await save(.tree, id: id, plaintext: bytes)
        return (id, added)
    }

    /// Loads and parses a tree (the store authenticates it and checks its id).
    public func loadTree(_ id: BlobID) async throws -> Tree {
        try Tree(decoding: try await load(.tree, id))
    }

    /// Every blob a snapshot's root tree reaches (trees and data), for prune: walks the trees,
    /// loading each distinct tree once.
    public func usedBlobs(root: BlobID, into used: inout Set<UsedBlob>) async throws {
        var pending = [root]
        while let id = pending.popLast() {
            guard used.insert(UsedBlob(kind: .tree, id: id)).inserted else { continue }
            let tree = try await loadTree(id)
            for node in tree.nodes {
                for blob in node.content { used.insert(UsedBlob(kind: .data, id: blob)) }
                if let sub = node.subtree { pending.append(sub) }
            }
        }
    }

    /// The node at `path` ("/"-separated components, bytes) below `root`, or nil; the root itself
    /// for an empty path (as a directory node named "/"... with the root tree as subtree).
    public func lookup(path components: [[UInt8]], root: BlobID) async throws -> TreeNode? {
        var node = TreeNode(name: [0x2f], kind: .directory, mode: 0o755, subtree: root)
        for component in components {
            guard node.kind == .directory, let sub = node.subtree else { return nil }
            guard let next = try await loadTree(sub).node(named: component) else { return nil }
            node = next
        }
        return node
    }
}

/// A blob a snapshot uses (for prune).
public struct UsedBlob: Hashable, Sendable {
    public let kind: BlobKind
    public let id: BlobID
    public init(kind: BlobKind, id: BlobID) { self.kind = kind; self.id = id }
}

/// Splits a "/"-separated path into byte components, dropping empty ones and ".".
public func pathComponents(_ path: String) -> [[UInt8]] {
    Array(path.utf8).split(separator: 0x2f).map(Array.init).filter { $0 != [0x2e] }
}
