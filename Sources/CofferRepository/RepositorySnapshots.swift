import CofferFormat
import Foundation

/// A snapshot object's id (its object name, 64 hex digits) and content.
public struct Snapshot: Sendable, Equatable {
    public let id: String
    public let info: SnapshotInfo
    public var shortID: String { String(id.prefix(8)) }
}

extension Repository {
    /// Stores a snapshot: the commit point of a backup. Call ``flush()`` first, so that every blob
    /// it names is durable. Wrapped to the current data public key, so a writer key can save
    /// snapshots it cannot read back. Returns the snapshot id.
    @discardableResult
    public func saveSnapshot(_ info: SnapshotInfo) async throws -> String {
        let id = randomObjectName()
        let publicKey = currentDataPublicKey
        _ = try await writeObject(try ObjectName(.snapshots, id), try RepositoryJSON.encode(info)) { try publicKey.stanzas(for: $0) }
        return id
    }

    /// The ids of every snapshot object (names only: a writer key can list them, not read them).
    public func snapshotIDs() async throws -> [String] {
        try await storage.listAll(.snapshots).map(\.name.name).filter(Self.isKeyObjectName).sorted()
    }

    /// One snapshot's content, authenticated and bound to its id.
    public func loadSnapshot(_ id: String) async throws -> SnapshotInfo {
        try requireFullAccess("snapshots")
        let name = try ObjectName(.snapshots, id)
        let ring = try dataKeyring
        let (plain, _, _) = try await Self.readObject(storage, name) { try ring.fileKey(for: $0, object: name.description) }
        return try RepositoryJSON.decode(SnapshotInfo.self, plain, object: name.description)
    }

    /// Every snapshot, oldest first (by time, then id). A damaged snapshot fails the listing.
    public func listSnapshots() async throws -> [Snapshot] {
        try requireFullAccess("snapshots")
        let ids = try await snapshotIDs()
        var out: [Snapshot] = []
        try await forEachConcurrently(ids) { id in try await self.loadSnapshot(id) } consume: { id, result in
            out.append(Snapshot(id: id, info: try result.get()))
        }
        return out.sorted { ($0.info.time, $0.id) < ($1.info.time, $1.id) }
    }

    /// Finds a snapshot by full id, unique id prefix (at least 4 hex digits), or `latest` (the
    /// newest by time).
    public func findSnapshot(_ reference: String) async throws -> Snapshot {
        try requireFullAccess("snapshots")
        if reference == "latest" {
            guard let last = try await listSnapshots().last else { throw RepositoryError.notFound("the repository has no snapshots") }
            return last
        }
        guard reference.utf8.count >= 4, reference.utf8.count <= 64,
              reference.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw RepositoryError.refused("a snapshot is named by 'latest' or by 4 to 64 lowercase hex digits of its id")
        }
        let matches = try await snapshotIDs().filter { $0.hasPrefix(reference) }
        guard let id = matches.first else { throw RepositoryError.notFound("no snapshot \(reference)") }
        guard matches.count == 1 else { throw RepositoryError.refused("snapshot prefix \(reference) is ambiguous (\(matches.count) snapshots)") }
        return Snapshot(id: id, info: try await loadSnapshot(id))
    }

    /// Removes a snapshot object and its restore-test results (the data it alone needs stays until `prune`).
    public func removeSnapshot(_ id: String) async throws {
        try requireFullAccess("snapshots")
        do { try await storage.remove(try ObjectName(.snapshots, id)) } catch StorageError.notFound {
            throw RepositoryError.notFound("no snapshot \(id)")
        }
        try await removeRestoreTests(of: id)  // its restore-test results go with it (RestoreTestResults.swift)
    }
}
