import Foundation

/// Walking a snapshot's trees: listing (`ls`) and comparing two snapshots (`diff`).
public enum TreeWalk {
    /// Calls `visit` for every node at or below `start` (path components below `root`), depth
    /// first in name order, with the node's absolute path in the snapshot.
    /// Past `limits` (entries visited, bytes the files claim) the walk stops with ``TreeError/limitExceeded(_:)``.
    public static func list(store: any BlobStore, root: BlobID, start: [[UInt8]] = [], limits: TreeWalkLimits = TreeWalkLimits(),
                            visit: (_ path: [UInt8], _ node: TreeNode) throws -> Void) async throws {
        let startPath = start.isEmpty ? [] : start.reduce(into: [UInt8]()) { $0 += [0x2f] + $1 }
        guard let node = try await store.lookup(path: start, root: root) else {
            throw TreeError.notFound("\(TreeNode.display(startPath)) in the snapshot")
        }
        if !start.isEmpty { try visit(startPath, node) }
        guard node.kind == .directory, let sub = node.subtree else { return }
        var counter = TreeWalkLimits.Counter(limits)
        try await walk(store: store, tree: sub, path: startPath, depth: 0, counter: &counter, visit: visit)
    }

    private static func walk(store: any BlobStore, tree id: BlobID, path: [UInt8], depth: Int, counter: inout TreeWalkLimits.Counter,
                             visit: (_ path: [UInt8], _ node: TreeNode) throws -> Void) async throws {
        guard depth < Restorer.maxDepth else { throw TreeError.malformedTree("trees nested deeper than \(Restorer.maxDepth)") }
        for node in try await store.loadTree(id).nodes {
            try counter.add(node)
            let childPath = path + [0x2f] + node.name
            try visit(childPath, node)
            if node.kind == .directory, let sub = node.subtree {
                try await walk(store: store, tree: sub, path: childPath, depth: depth + 1, counter: &counter, visit: visit)
            }
        }
    }

    public enum Change: Equatable, Sendable {
        case added, removed
        /// Content changed (files: content blobs or size; links: target; or the kind).
        case modified
        /// Only metadata changed (mode, owner, times).
        case metadata
        public var symbol: String {
            switch self {
            case .added: return "+"
            case .removed: return "-"
            case .modified: return "M"
            case .metadata: return "U"
            }
        }
    }

    /// The differences between two trees, as restic's `diff` reports them: subtrees with equal
    /// ids are skipped without being read.
    public static func diff(store: any BlobStore, from a: BlobID, to b: BlobID,
                            limits: TreeWalkLimits = TreeWalkLimits()) async throws -> [(path: [UInt8], change: Change)] {
        var out: [(path: [UInt8], change: Change)] = []
        var counter = TreeWalkLimits.Counter(limits)
        try await diff(store: store, a, b, path: [], depth: 0, counter: &counter, into: &out)
        return out
    }

    private static func diff(store: any BlobStore, _ a: BlobID?, _ b: BlobID?, path: [UInt8], depth: Int,
                             counter: inout TreeWalkLimits.Counter,
                             into out: inout [(path: [UInt8], change: Change)]) async throws {
        guard a != b else { return }
        guard depth < Restorer.maxDepth else { throw TreeError.malformedTree("trees nested deeper than \(Restorer.maxDepth)") }
        let left = try await a.asyncMap { try await store.loadTree($0).nodes } ?? []
        let right = try await b.asyncMap { try await store.loadTree($0).nodes } ?? []
        for node in left + right { try counter.add(node) }
        var i = 0, j = 0
        while i < left.count || j < right.count {
            let l = i < left.count ? left[i] : nil, r = j < right.count ? right[j] : nil
            if let l, r == nil || l.name.lexicographicallyPrecedes(r!.name) {
                try await report(store: store, l, path: path, change: .removed, depth: depth, counter: &counter, into: &out)
                i += 1
            } else if let r, l == nil || r.name.lexicographicallyPrecedes(l!.name) {
                try await report(store: store, r, path: path, change: .added, depth: depth, counter: &counter, into: &out)
                j += 1
            } else {
                let l = l!, r = r!
                let childPath = path + [0x2f] + l.name
                if l.kind != r.kind {
                    try await report(store: store, l, path: path, change: .removed, depth: depth, counter: &counter, into: &out)
                    try await report(store: store, r, path: path, change: .added, depth: depth, counter: &counter, into: &out)
                } else if l.kind == .directory {
                    if l.mode != r.mode || l.uid != r.uid || l.gid != r.gid { out.append((childPath + [0x2f], .metadata)) }
                    try await diff(store: store, l.subtree, r.subtree, path: childPath, depth: depth + 1, counter: &counter, into: &out)
                } else if l.content != r.content || l.size != r.size || l.linkTarget != r.linkTarget {
                    out.append((childPath, .modified))
                } else if l.mode != r.mode || l.uid != r.uid || l.gid != r.gid || l.mtimeNanos != r.mtimeNanos {
                    out.append((childPath, .metadata))
                }
                i += 1; j += 1
            }
        }
    }

    /// An added or removed node, and everything below it.
    private static func report(store: any BlobStore, _ node: TreeNode, path: [UInt8], change: Change, depth: Int,
                               counter: inout TreeWalkLimits.Counter, into out: inout [(path: [UInt8], change: Change)]) async throws {
        let childPath = path + [0x2f] + node.name
        out.append((node.kind == .directory ? childPath + [0x2f] : childPath, change))
        if node.kind == .directory {
            try await diff(store: store, change == .removed ? node.subtree : nil, change == .added ? node.subtree : nil,
                           path: childPath, depth: depth + 1, counter: &counter, into: &out)
        }
    }
}
