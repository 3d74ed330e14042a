import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Shell-style patterns (`fnmatch(3)`, `*` also matching "/") for `--exclude` and restore's
/// `--include`: a pattern without "/" matches an entry's name, a pattern with "/" its whole path
/// in the snapshot (absolute); a directory that matches stands for everything below it.
public struct PathPattern: Sendable {
    public let pattern: String
    let bytes: [UInt8]
    let matchesName: Bool
    /// What every path the pattern matches starts with (see ``mayMatchBelow(path:)``).
    let literalHead: (bytes: [UInt8], isWhole: Bool)

    public init(_ pattern: String) throws {
        guard !pattern.isEmpty, !pattern.utf8.contains(0) else { throw TreeError.invalidRequest("empty or invalid pattern") }
        var p = Array(pattern.utf8)
        while p.count > 1 && p.last == 0x2f { p.removeLast() }
        self.pattern = pattern
        bytes = p
        matchesName = !p.contains(0x2f)
        literalHead = PathPattern.literalHead(of: p)
    }

    /// Whether the entry at `path` (absolute, bytes) with last component `name` matches.
    public func matches(path: [UInt8], name: [UInt8]) -> Bool {
        withCName(bytes) { p in withCName(matchesName ? name : path) { fnmatch(p, $0, 0) == 0 } }
    }

    /// Whether an entry strictly below the directory at `path` (absolute, bytes, no trailing "/")
    /// can match, decided from the pattern alone, so a walk can skip loading subtrees no pattern
    /// reaches. Conservative: true unless no path below `path` can match.
    ///
    /// - A name pattern (no "/") can match an entry of any directory: true.
    /// - A path pattern matches whole absolute paths, and `*`, `?` and `[…]` also match "/" (no
    ///   FNM_PATHNAME), so only its literal head counts: the bytes before its first `*`, `?` or
    ///   `[` (a `\x` escape is the literal x). Every path it matches starts with that head. A
    ///   path below the directory starts with `path + "/"`, so one can match only when one of the
    ///   two is a prefix of the other (`/srv/**/x` reaches `/srv/a/b`, `/` and `/srv`, never `/home`).
    /// - A pattern with no wildcard at all matches exactly one path: true only when that path is
    ///   below `path`.
    public func mayMatchBelow(path: [UInt8]) -> Bool {
        if matchesName { return true }
        let below = path + [0x2f]
        if literalHead.isWhole { return literalHead.bytes.count > below.count && literalHead.bytes.starts(with: below) }
        return below.starts(with: literalHead.bytes) || literalHead.bytes.starts(with: below)
    }

    /// The literal bytes every match of the pattern starts with, and whether they are the whole
    /// pattern (no wildcard).
    static func literalHead(of pattern: [UInt8]) -> (bytes: [UInt8], isWhole: Bool) {
        var out: [UInt8] = []
        var i = 0
        while i < pattern.count {
            switch pattern[i] {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["): return (out, false)
            case UInt8(ascii: "\\"):
                // fnmatch: a backslash quotes the next byte; a trailing one is treated as unknown.
                guard i + 1 < pattern.count else { return (out, false) }
                out.append(pattern[i + 1])
                i += 2
            default:
                out.append(pattern[i])
                i += 1
            }
        }
        return (out, true)
    }
}

extension RestoreOptions {
    /// Whether a restore's plan enters directory `node` of the directory at `path` (loads its
    /// tree): when everything there is selected (`matched`), when an include pattern matches the
    /// directory itself, or when one can match something below it (``PathPattern/mayMatchBelow(path:)``).
    func enters(_ node: TreeNode, below path: [UInt8], matched: Bool) -> Bool {
        if matched || includes.isEmpty { return true }
        let childPath = path + [0x2f] + node.name
        return includes.contains { $0.matches(path: childPath, name: node.name) || $0.mayMatchBelow(path: childPath) }
    }
}
