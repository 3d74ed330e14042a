import CofferFormat
import Foundation

/// A snapshot object's id (its object name, 64 hex digits), content and signature.
public struct Snapshot: Sendable, Equatable {
    public let id: String
    public let info: SnapshotInfo
    public var signature = ObjectSignature()
    public var shortID: String { String(id.prefix(8)) }
}

/// A signed repository object's producer signature: snapshots (docs/REPOSITORY.md, "Snapshot
/// signatures") and restore-test results ("Restore-test results") follow the same rules.
public struct ObjectSignature: Sendable, Equatable {
    /// The signers its trailer names ("ed25519 KEYID"), as the trailer claims them (checked only
    /// when verifiers are given); empty when the object is unsigned.
    public var signers: [String] = []
    /// With verifiers: the accepted signer whose signature verified.
    public var verifiedBy: String?
    /// With verifiers: why the object is refused (unsigned, other signers, invalid signature).
    public var refusal: ObjectSignatureError?
    public init() {}

    /// What the trailer of `stored` (the object's stored bytes, already authenticated as
    /// `object`) says and, with verifiers, whether it verifies. The trailer's structure is checked
    /// by ``CofferObject/signature(of:_:object:)`` for every reader (damage throws); the digest is
    /// recomputed and the slot of an accepted key verified only when verifiers are given.
    static func check(stored: [UInt8], object: String, subject: SignedObject, verifiers: [SignatureVerifier]) throws -> ObjectSignature {
        let parsed = try CofferObject.parseHeader(stored, object: object)
        let signed = try CofferObject.signature(of: stored, parsed, object: object)
        var out = ObjectSignature()
        out.signers = signed?.trailer.signerLabels ?? []
        guard !verifiers.isEmpty else { return out }
        let accepted = verifiers.map(\.label)
        guard let signed else {
            out.refusal = .notAccepted(subject, found: [], accepted: accepted)
            return out
        }
        do {
            out.verifiedBy = try signed.trailer.verify(signed.payload, parameters: signed.parameters, verifiers: verifiers).label
        } catch CofferError.signatureInvalid {
            let signer = verifiers.first { v in signed.trailer.entries.contains { $0.keyID == v.keyID } }?.label ?? "an accepted signer"
            out.refusal = .invalid(subject, signer: signer)
        } catch AccessError.signerNotAccepted(let found, _) {
            out.refusal = .notAccepted(subject, found: found, accepted: accepted)
        }
        return out
    }
}

/// The object a signature refusal is about, as messages name it.
public enum SignedObject: Sendable, Equatable, CustomStringConvertible {
    /// A snapshot, by its full id.
    case snapshot(String)
    /// A restore-test result, by its object name (`snapshots/ID-restoretest-R`).
    case restoreTest(String)

    public var description: String {
        switch self {
        case .snapshot(let id): return "snapshot \(id.prefix(8))"
        case .restoreTest(let object): return "restore-test result \(object)"
        }
    }
}

/// Why a signed object is refused when its signer is required.
public enum ObjectSignatureError: CategorizedError, Equatable {
    /// Unsigned (`found` empty), or signed only by keys not accepted.
    case notAccepted(SignedObject, found: [String], accepted: [String])
    /// A signature by an accepted signer that does not verify: the object was altered after signing.
    case invalid(SignedObject, signer: String)

    public var category: ErrorCategory {
        switch self {
        case .notAccepted: return .key
        case .invalid: return .integrity
        }
    }

    public var description: String {
        switch self {
        case .notAccepted(let subject, let found, let accepted):
            let want = accepted.joined(separator: ", ")
            if found.isEmpty { return "\(subject) is not signed; a signature by \(want) is required" }
            return "\(subject) is signed by \(found.joined(separator: ", ")), not by an accepted signer (\(want))"
        case .invalid(let subject, let signer):
            return "\(subject): the signature by \(signer) does not match the object: it was altered after signing"
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
        let signature = try ObjectSignature.check(stored: stored, object: name.description, subject: .snapshot(id), verifiers: verifiers)
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
