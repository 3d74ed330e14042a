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

    public init(_ pattern: String) throws {
        guard !pattern.isEmpty, !pattern.utf8.contains(0) else { throw TreeError.invalidRequest("empty or invalid pattern") }
        var p = Array(pattern.utf8)
        while p.count > 1 && p.last == 0x2f { p.removeLast() }
        self.pattern = pattern
        bytes = p
        matchesName = !p.contains(0x2f)
    }

    /// Whether the entry at `path` (absolute, bytes) with last component `name` matches.
    public func matches(path: [UInt8], name: [UInt8]) -> Bool {
        withCName(bytes) { p in withCName(matchesName ? name : path) { fnmatch(p, $0, 0) == 0 } }
    }
}
