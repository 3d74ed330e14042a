import CofferFormat
import Foundation

/// Which packs `check` reads in full (decrypting every blob and checking it against its id).
public enum ReadDataSelection: Sendable, Equatable {
    case none
    case all
    /// A random share of the packs, 0 < fraction ≤ 1.
    case fraction(Double)
    /// Part `n` of `t` (1 ≤ n ≤ t): the packs whose position in id order is n-1 modulo t, so that
    /// running 1/t … t/t reads every pack once.
    case subset(n: Int, of: Int)
}

/// One problem `check` found, naming the object ("KIND/NAME") it concerns.
public struct CheckProblem: Codable, Sendable, Equatable, CustomStringConvertible {
    public var object: String
    public var message: String
    public init(object: String, message: String) { self.object = object; self.message = message }
    public var description: String { "\(object): \(message)" }
}

/// What `check` found.
public struct CheckReport: Codable, Sendable, Equatable {
    public var errors: [CheckProblem] = []
    /// Not damage: leftovers of interrupted backups (unreferenced packs), which prune removes.
    public var warnings: [CheckProblem] = []
    public var keyObjects = 0
    public var indexObjects = 0
    public var packs = 0
    public var blobs = 0
    public var snapshots = 0
    public var packsRead = 0
    public var blobsRead = 0
    public var ok: Bool { errors.isEmpty }
}

extension Repository {
    /// Checks the repository's structure: key objects parse, data-key objects authenticate, every
    /// index object authenticates and parses, every pack it lists exists with the recorded size,
    /// every snapshot authenticates and its root tree is indexed; `trees` (from the tree layer) checks
    /// what each snapshot's trees need. With `readData`, the selected packs are read whole: every
    /// chunk authenticates, the pack trailer matches the index, every blob decompresses and matches
    /// its id. Reports problems instead of stopping at the first.
    public func check(readData: ReadDataSelection = .none,
                      trees: (@Sendable (Snapshot) async throws -> [CheckProblem])? = nil) async throws -> CheckReport {
        try requireFullAccess("the repository's data")
        var report = CheckReport()
        // Key objects (their payloads need their own keys: only the header's syntax is checkable).
        for item in try await storage.listAll(.keys) {
            if Self.isKeyObjectName(item.name.name) {
                report.keyObjects += 1
                do { _ = try CofferObject.parseHeader(try await storage.load(item.name), object: item.name.description) } catch {
                    report.errors.append(CheckProblem(object: item.name.description, message: "\(error)"))
                }
            }
        }
        if let secrets {
            do { _ = try await Self.readDataKeys(storage, secrets: secrets) } catch let e as RepositoryError {
                report.errors.append(problem(e, default: "keys/data"))
            }
            // The key history: the whole chain (gaps, edits, reordering).
            do { _ = try await keyHistory() } catch let e as RepositoryError {
                report.errors.append(problem(e, default: "keys/log"))
            }
        }
        // Index objects.
        var indexed: [String: (size: Int64, blobs: [PackedBlob], index: String)] = [:]
        let indexNames = try await storage.listAll(.index).map(\.name)
        report.indexObjects = indexNames.count
        try await forEachConcurrently(indexNames) { name in try await self.readIndexObject(name) } consume: { name, result in
            switch result {
            case .success(let packs):
                for p in packs {
                    if let known = indexed[p.name], known.size != p.size {
                        report.errors.append(CheckProblem(object: name.description,
                                                          message: "lists data/\(p.name) with size \(p.size), \(known.index) with \(known.size)"))
                    }
                    indexed[p.name] = (p.size, p.blobs, name.description)
                }
            case .failure(let error as RepositoryError):
                report.errors.append(problem(error, default: name.description))
            case .failure(let error):
                report.errors.append(CheckProblem(object: name.description, message: "\(error)"))
            }
        }
        // Packs: every indexed pack exists with its size; unindexed packs are leftovers.
        var stored: [String: Int64] = [:]
        for item in try await storage.listAll(.data) { stored[item.name.name] = item.size }
        report.packs = stored.count
        var blobIDs = Set<BlobKey>()
        for (name, entry) in indexed.sorted(by: { $0.key < $1.key }) {
            for b in entry.blobs { blobIDs.insert(BlobKey(b.kind, b.id)) }
            guard let size = stored[name] else {
                report.errors.append(CheckProblem(object: "data/\(name)",
                                                  message: "missing: \(entry.index) lists \(entry.blobs.count) blobs in it"))
                continue
            }
            if size != entry.size {
                report.errors.append(CheckProblem(object: "data/\(name)", message: "is \(size) bytes, \(entry.index) says \(entry.size)"))
            }
        }
        report.blobs = blobIDs.count
        for name in stored.keys.sorted() where indexed[name] == nil {
            report.warnings.append(CheckProblem(object: "data/\(name)",
                                                message: "not referenced by any index (left by an interrupted backup; prune removes it)"))
        }
        // Snapshots.
        let ids = try await snapshotIDs()
        report.snapshots = ids.count
        for id in ids {
            do {
                let info = try await loadSnapshot(id)
                if !blobIDs.contains(BlobKey(.tree, info.tree)) {
                    report.errors.append(CheckProblem(object: "snapshots/\(id)", message: "its root tree \(info.tree.hex) is not in the index"))
                }
                if let trees {
                    report.errors += try await trees(Snapshot(id: id, info: info))
                }
            } catch let e as RepositoryError {
                report.errors.append(problem(e, default: "snapshots/\(id)"))
            }
        }
        // Restore-test results (RestoreTestResults.swift).
        let restoreTests = try await checkRestoreTests()
        report.errors += restoreTests.errors
        report.warnings += restoreTests.warnings
        // Data.
        let packNames = indexed.keys.filter { stored[$0] != nil }.sorted()
        let selected: [String]
        switch readData {
        case .none: selected = []
        case .all: selected = packNames
        case .fraction(let f):
            let count = Int((Double(packNames.count) * min(1, max(0, f))).rounded(.up))
            selected = Array(packNames.shuffled().prefix(count)).sorted()
        case .subset(let n, let t):
            selected = packNames.enumerated().filter { $0.offset % t == n - 1 }.map(\.element)
        }
        // One pack per core at a time (a pack is read whole: its stored bytes and plaintext are in
        // memory while it is checked); problems are reported in pack-name order.
        var dataProblems: [(String, CheckProblem)] = []
        let work = selected.map { ($0, stored[$0]!, indexed[$0]!.blobs) }
        try await forEachConcurrently(work, width: ProcessInfo.processInfo.activeProcessorCount) { item in
            try await self.checkPack(item.0, size: item.1, indexed: item.2)
        } consume: { item, result in
            switch result {
            case .success(let blobs):
                report.blobsRead += blobs
                report.packsRead += 1
            case .failure(let e as RepositoryError):
                dataProblems.append((item.0, problem(e, default: "data/\(item.0)")))
            case .failure(let e):
                throw e
            }
        }
        report.errors += dataProblems.sorted { $0.0 < $1.0 }.map(\.1)
        return report
    }

    private func problem(_ error: RepositoryError, default object: String) -> CheckProblem {
        switch error {
        case .damaged(let o, let reason): return CheckProblem(object: o, message: "damaged: \(reason)")
        case .missing(let o, let reason): return CheckProblem(object: o, message: "missing: \(reason)")
        default: return CheckProblem(object: object, message: "\(error)")
        }
    }

    /// Reads a pack whole: decrypts it, parses its trailer, compares with the index, checks every blob.
    func checkPack(_ pack: String, size: Int64, indexed: [PackedBlob]) async throws -> Int {
        let name = try ObjectName(.data, pack)
        let ring = try dataKeyring
        let (plain, _, stored) = try await Self.readObject(storage, name) { try ring.fileKey(for: $0, object: name.description) }
        guard Int64(stored.count) == size else {
            throw RepositoryError.damaged(object: name.description, reason: "its size changed while being checked")
        }
        let blobs = try PackTrailer.decode(plain, object: name.description)
        let inPack = Dictionary(blobs.map { (BlobKey($0.kind, $0.id), $0) }, uniquingKeysWith: { a, _ in a })
        for b in indexed where inPack[BlobKey(b.kind, b.id)] != b {
            throw RepositoryError.damaged(object: name.description, reason: "its trailer does not hold \(b.kind) blob \(b.id.hex) as the index says")
        }
        for b in blobs {
            let bytes = Array(plain[Int(b.offset)..<Int(b.offset + b.length)])
            _ = try unpack(bytes, blob: b, object: name.description)
        }
        return blobs.count
    }
}
