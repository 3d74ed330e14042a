import CofferFormat
import Foundation

/// A snapshot object's id (its object name, 64 hex digits), content and signature.
public struct Snapshot: Sendable, Equatable {
    public let id: String
    public let info: SnapshotInfo
    public var signature = SnapshotSignature()
    public var shortID: String { String(id.prefix(8)) }
}

/// A snapshot object's producer signature (docs/REPOSITORY.md, "Snapshot signatures").
public struct SnapshotSignature: Sendable, Equatable {
    /// The signers its trailer names ("ed25519 KEYID"), as the trailer claims them (checked only
    /// when verifiers are given); empty when the snapshot is unsigned.
    public var signers: [String] = []
    /// With verifiers: the accepted signer whose signature verified.
    public var verifiedBy: String?
    /// With verifiers: why the snapshot is refused (unsigned, other signers, invalid signature).
    public var refusal: SnapshotSignatureError?
    public init() {}
}

/// Why a snapshot is refused when its signer is required.
public enum SnapshotSignatureError: CategorizedError, Equatable {
    /// Unsigned (`found` empty), or signed only by keys not accepted.
    case notAccepted(snapshot: String, found: [String], accepted: [String])
    /// A signature by an accepted signer that does not verify: the object was altered after signing.
    case invalid(snapshot: String, signer: String)

    public var category: ErrorCategory {
        switch self {
        case .notAccepted: return .key
        case .invalid: return .integrity
        }
    }

    public var description: String {
        switch self {
        case .notAccepted(let snapshot, let found, let accepted):
            let want = accepted.joined(separator: ", ")
            if found.isEmpty { return "snapshot \(snapshot.prefix(8)) is not signed; a signature by \(want) is required" }
            return "snapshot \(snapshot.prefix(8)) is signed by \(found.joined(separator: ", ")), not by an accepted signer (\(want))"
        case .invalid(let snapshot, let signer):
            return "snapshot \(snapshot.prefix(8)): the signature by \(signer) does not match the snapshot object: it was altered after signing"
        }
    }
}

/// What a signed repository object's trailer says and, with verifiers, whether it verifies: the
/// check of docs/REPOSITORY.md, "Snapshot signatures", for snapshots and restore-test results
/// (structure checked by ``CofferObject/signature(of:_:object:)`` for every reader; digest
/// recomputed and the slot of an accepted key verified only when verifiers are given).
enum SignedObjectCheck {
    enum Outcome: Equatable { case unchecked, verified(String), notAccepted(found: [String]), invalid(signer: String) }

    static func check(stored: [UInt8], object: String, verifiers: [SignatureVerifier]) throws -> (signers: [String], outcome: Outcome) {
        let parsed = try CofferObject.parseHeader(stored, object: object)
        let signed = try CofferObject.signature(of: stored, parsed, object: object)
        let signers = signed?.trailer.signerLabels ?? []
        guard !verifiers.isEmpty else { return (signers, .unchecked) }
        guard let signed else { return (signers, .notAccepted(found: [])) }
        do {
            return (signers, .verified(try signed.trailer.verify(signed.payload, parameters: signed.parameters, verifiers: verifiers).label))
        } catch CofferError.signatureInvalid {
            let signer = verifiers.first { v in signed.trailer.entries.contains { $0.keyID == v.keyID } }?.label ?? "an accepted signer"
            return (signers, .invalid(signer: signer))
        } catch AccessError.signerNotAccepted(let found, _) {
            return (signers, .notAccepted(found: found))
        }
    }
}

extension Repository {
    /// Stores a snapshot: the commit point of a backup. Call ``flush()`` first, so that every blob
    /// it names is durable. Wrapped to the current data public key, so a writer key can save
    /// snapshots it cannot read back. With `signer`, the object carries a producer signature over
    /// its name, header parameters and every stored payload byte. Returns the snapshot id.
    @discardableResult
    public func saveSnapshot(_ info: SnapshotInfo, signer: PayloadSigner? = nil) async throws -> String {
        let id = randomObjectName()
        let publicKey = currentDataPublicKey
        let name = try ObjectName(.snapshots, id)
        let fileKey = FileKey.random()
        let sealed = try CofferObject.seal(try RepositoryJSON.encode(info), objectName: name.description, fileKey: fileKey,
                                           stanzas: try publicKey.stanzas(for: fileKey), signer: signer)
        try await storage.save(name, contents: sealed, overwrite: false)
        return id
    }

    /// The ids of every snapshot object (names only: a writer key can list them, not read them).
    public func snapshotIDs() async throws -> [String] {
        try await storage.listAll(.snapshots).map(\.name.name).filter(Self.isKeyObjectName).sorted()
    }

    /// One snapshot's content, authenticated and bound to its id.
    public func loadSnapshot(_ id: String) async throws -> SnapshotInfo {
        try await loadSnapshot(id, verifiers: []).info
    }

    /// One snapshot with its signature. With `verifiers`, the signature is checked: the result's
    /// `signature.verifiedBy` or `signature.refusal` says how it went (a refused snapshot is still
    /// returned, so a listing can name it).
    public func loadSnapshot(_ id: String, verifiers: [SignatureVerifier]) async throws -> Snapshot {
        try requireFullAccess("snapshots")
        let name = try ObjectName(.snapshots, id)
        let ring = try dataKeyring
        let (plain, _, stored) = try await Self.readObject(storage, name) { try ring.fileKey(for: $0, object: name.description) }
        let info = try RepositoryJSON.decode(SnapshotInfo.self, plain, object: name.description)
        var signature = SnapshotSignature()
        let (signers, outcome) = try SignedObjectCheck.check(stored: stored, object: name.description, verifiers: verifiers)
        signature.signers = signers
        let accepted = verifiers.map(\.label)
        switch outcome {
        case .unchecked: break
        case .verified(let signer): signature.verifiedBy = signer
        case .invalid(let signer): signature.refusal = .invalid(snapshot: id, signer: signer)
        case .notAccepted(let found): signature.refusal = .notAccepted(snapshot: id, found: found, accepted: accepted)
        }
        return Snapshot(id: id, info: info, signature: signature)
    }

    /// Every snapshot, oldest first (by time, then id). A damaged snapshot fails the listing.
    /// With `verifiers`, each snapshot's signature is checked (see ``loadSnapshot(_:verifiers:)``).
    public func listSnapshots(verifiers: [SignatureVerifier] = []) async throws -> [Snapshot] {
        try requireFullAccess("snapshots")
        let ids = try await snapshotIDs()
        var out: [Snapshot] = []
        try await forEachConcurrently(ids) { id in try await self.loadSnapshot(id, verifiers: verifiers) } consume: { _, result in
            out.append(try result.get())
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
        return try await loadSnapshot(id, verifiers: [])
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
