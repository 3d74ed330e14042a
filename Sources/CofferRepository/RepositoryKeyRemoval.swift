import CofferFormat
import Foundation

/// What `key remove` would do to a key object, decided before anything is removed
/// (``Repository/planKeyRemoval(_:)``).
///
/// On a storage with object lock (docs/S3.md, "Object lock") removing an object cannot destroy it:
/// the bucket is versioned, so a DELETE only hides the key object behind a delete marker, and its
/// locked version stays, undeletable until its retain-until date. Every key object holds the
/// repository's secrets, the ring key among them, which opens every data-key generation. So until
/// that version is gone, whoever holds a key that opens the removed key object and may read old
/// object versions still opens the whole repository: the data written before the removal, and
/// after it too, a data-key rotation included. A removal that revokes nothing must not look like
/// one: ``Repository/removeKey(_:evenIfRetained:)`` refuses a retained key object unless asked.
public struct KeyRemoval: Sendable, Equatable {
    /// The key object's full id.
    public let id: String
    /// Which keys open it (as `key list` shows them).
    public let keys: [String]
    /// On a storage with object lock: the key object's retain-until date when it is still in the
    /// future (the DELETE would leave this locked version behind); nil otherwise.
    public let retainedUntil: Date?
    /// The repository's object lock mode, when it has one.
    public let lockMode: ObjectLock.Mode?

    /// What removing it does while it is retained, for the user (empty when it is not retained).
    public var consequence: String {
        guard let until = retainedUntil else { return "" }
        let date = RepositoryJSON.formatDate(until)
        return "key object \(id) is under object lock (\(lockMode?.rawValue ?? "compliance")) until \(date): "
            + "removing it only hides it behind a delete marker, and its locked version stays in the bucket until then "
            + "(and after that until the noncurrent version is deleted, by the bucket's lifecycle rule or by hand). "
            + "Until it is gone, whoever holds a key that opens it (\(keys.isEmpty ? "its key" : keys.joined(separator: ", "))) "
            + "and may read old object versions can still open the repository with it: all of its data, "
            + "including data written after the removal and after a data-key rotation (every key object holds the ring key, "
            + "which opens every data-key generation). Against a key that leaked, back up into a new repository (new secrets)."
    }
}

extension Repository {
    /// Resolves `reference` (a key object's full id or a unique prefix) and applies every refusal
    /// of ``removeKey(_:evenIfRetained:)`` but the retention one, removing nothing: the key that
    /// opened the repository, the last key object, the last one the recovery key opens when the
    /// config requires recovery. With object lock (``objectLockActive``), asks the storage how long
    /// the key object is retained (one HEAD on S3).
    public func planKeyRemoval(_ reference: String) async throws -> KeyRemoval {
        try requireFullAccess("key objects")
        let keys = try await listKeys()
        let matches = keys.filter { $0.id.hasPrefix(reference) }
        guard !reference.isEmpty, let target = matches.first else { throw RepositoryError.notFound("no key object \(reference)") }
        guard matches.count == 1 else { throw RepositoryError.refused("key prefix \(reference) is ambiguous") }
        guard !target.current else {
            throw RepositoryError.refused("refusing to remove the key object that opened the repository; open it with another key first")
        }
        let rest = keys.filter { $0.id != target.id }
        guard !rest.isEmpty else { throw RepositoryError.refused("refusing to remove the repository's last key object") }
        if config.requireRecovery && target.recovery && !rest.contains(where: \.recovery) {
            throw RepositoryError.refused("refusing to remove the last key object the recovery key opens (the repository requires recovery)")
        }
        var retainedUntil: Date? = nil
        if objectLockActive, let until = try await storage.retainUntil(try ObjectName(.keys, target.id)), until > Date() {
            retainedUntil = until
        }
        return KeyRemoval(id: target.id, keys: target.keys, retainedUntil: retainedUntil, lockMode: config.objectLock?.mode)
    }
}
