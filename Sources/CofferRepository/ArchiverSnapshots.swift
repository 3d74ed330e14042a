import Foundation

/// A snapshot object's id (lowercase hex) and content.
public struct SnapshotRecord: Sendable, Equatable {
    public let id: String
    public let info: SnapshotInfo
    public init(id: String, info: SnapshotInfo) { self.id = id; self.info = info }
    /// The first 8 hex digits (restic's `short_id`).
    public var shortID: String { String(id.prefix(8)) }
}

/// Where snapshot objects are written, listed and removed. `Repository` provides it (its snapshot
/// objects are the commit points of backups); the archiver's callers, `forget` and the snapshot
/// selection use only this.
public protocol SnapshotCatalog: Sendable {
    /// Writes a snapshot object (after the blob store's `flush`); returns its id.
    func saveSnapshot(_ info: SnapshotInfo) async throws -> String
    /// Every snapshot, authenticated and decrypted (refused by a write-only host).
    func listSnapshots() async throws -> [SnapshotRecord]
    func removeSnapshot(id: String) async throws
}

public enum SnapshotSelection {
    /// The snapshot named by `reference`: `latest` (the newest, optionally only among those of
    /// `host`), a full id, or a unique prefix of at least 4 hex digits.
    public static func resolve(_ reference: String, in records: [SnapshotRecord], host: String? = nil) throws -> SnapshotRecord {
        if reference == "latest" {
            let candidates = records.filter { host == nil || $0.info.hostname == host }
            guard let newest = candidates.max(by: { ($0.info.time, $0.id) < ($1.info.time, $1.id) }) else {
                throw TreeError.notFound("no snapshot\(host.map { " of host \($0)" } ?? "") in the repository")
            }
            return newest
        }
        let lower = reference.lowercased()
        guard lower.count >= 4, lower.allSatisfy({ $0.isHexDigit }) else {
            throw TreeError.invalidRequest("snapshot \"\(reference)\" is not an id, a prefix of at least 4 hex digits, or \"latest\"")
        }
        let matches = records.filter { $0.id.hasPrefix(lower) }
        guard let first = matches.first else { throw TreeError.notFound("snapshot \(reference)") }
        guard matches.count == 1 else { throw TreeError.invalidRequest("snapshot prefix \(reference) is ambiguous (\(matches.count) snapshots)") }
        return first
    }

    /// The parent for a new backup: the newest snapshot of the same host with the same paths (as
    /// restic chooses), nil when there is none.
    public static func parent(for paths: [String], host: String, in records: [SnapshotRecord]) -> SnapshotRecord? {
        let wanted = paths.sorted()
        return records.filter { $0.info.hostname == host && $0.info.paths.sorted() == wanted }
            .max { ($0.info.time, $0.id) < ($1.info.time, $1.id) }
    }
}
