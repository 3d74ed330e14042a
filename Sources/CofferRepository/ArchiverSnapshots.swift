import Foundation

/// A snapshot object's id (lowercase hex) and content.
public struct SnapshotRecord: Sendable, Equatable {
    public let id: String
    public let info: SnapshotInfo
    /// Its producer signature: who the trailer names and, when signers were required, the outcome.
    public var signature: ObjectSignature
    public init(id: String, info: SnapshotInfo, signature: ObjectSignature = ObjectSignature()) {
        self.id = id; self.info = info; self.signature = signature
    }
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
    /// Like ``resolve(_:in:host:)`` when signers are required (every record's signature was
    /// checked): a snapshot named by id or prefix must be accepted (else its refusal is thrown);
    /// `latest` is the newest **accepted** snapshot, so snapshots an attacker added without the
    /// signing key cannot take its place. `skipped` gets the refused snapshots newer than it.
    public static func resolveAccepted(_ reference: String, in records: [SnapshotRecord], host: String? = nil,
                                       skipped: inout [SnapshotRecord]) throws -> SnapshotRecord {
        if reference == "latest" {
            let accepted = records.filter { $0.signature.refusal == nil }
            if accepted.allSatisfy({ host != nil && $0.info.hostname != host }),
               let newest = records.filter({ host == nil || $0.info.hostname == host }).max(by: { ($0.info.time, $0.id) < ($1.info.time, $1.id) }),
               let refusal = newest.signature.refusal {
                throw refusal
            }
            let chosen = try resolve(reference, in: accepted, host: host)
            skipped = records.filter {
                $0.signature.refusal != nil && (host == nil || $0.info.hostname == host)
                    && ($0.info.time, $0.id) > (chosen.info.time, chosen.id)
            }
            return chosen
        }
        let record = try resolve(reference, in: records, host: host)
        if let refusal = record.signature.refusal { throw refusal }
        return record
    }

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

/// A blob store that can say how many bytes the blobs saved since its last flush take in storage
/// (the snapshot summary's `data_added_packed`). `Repository` answers it.
public protocol UnflushedSizeReporting {
    /// Stored size of the blobs of `kind` saved since the last flush: their length in their packs
    /// (after compression) plus their share of the packs' AEAD tags (16 bytes per 64 KiB).
    func unflushedStoredBytes(_ kind: BlobKind) -> Int64
}

extension Repository: UnflushedSizeReporting {
    public func unflushedStoredBytes(_ kind: BlobKind) -> Int64 {
        let stored: Int64 = stateLock.withLock {
            pending.reduce(0) { sum, entry in entry.key.kind == kind.rawValue ? sum + Int64(entry.value.blob?.length ?? 0) : sum }
        }
        let chunk = Int64(CofferObject.packChunkSize)
        return stored + (stored + chunk - 1) / chunk * 16
    }
}
