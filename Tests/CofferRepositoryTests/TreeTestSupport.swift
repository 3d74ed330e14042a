import CofferFormat
@testable import CofferRepository
import Crypto
import Foundation

/// Test scaffolding only: a blob store in memory (small chunker parameters so small files make
/// several chunks), and a snapshot catalog in memory. The real `Repository` is tested with the
/// same suites where it is available (see TreeRepositoryTests).
final class MemoryBlobStore: BlobStore, @unchecked Sendable {
    private let lock = NSLock()
    private var blobs: [UInt8: [BlobID: [UInt8]]] = [:]
    private(set) var loads: [BlobID] = []
    let idKey = try! ChunkIDKey(key: SymmetricKey(data: [UInt8](repeating: 7, count: 32)))
    let parameters: ChunkerParameters
    var refuseLoads = false

    init(averageChunk: Int = 4096) {
        parameters = try! ChunkerParameters(minSize: averageChunk / 4, averageSize: averageChunk, maxSize: averageChunk * 4)
    }

    func blobID(of plaintext: UnsafeRawBufferPointer) -> BlobID { idKey.id(of: plaintext) }
    func makeChunker() -> FastCDC { FastCDC(parameters: parameters, gear: .fixedForTesting) }
    func contains(_ kind: BlobKind, _ id: BlobID) -> Bool {
        lock.withLock { blobs[kind.rawValue]?[id] != nil }
    }
    func save(_ kind: BlobKind, id: BlobID, plaintext: [UInt8]) async throws -> Bool {
        precondition(idKey.id(of: plaintext) == id, "saved blob under a wrong id")
        return lock.withLock {
            if blobs[kind.rawValue]?[id] != nil { return false }
            blobs[kind.rawValue, default: [:]][id] = plaintext
            return true
        }
    }
    func load(_ kind: BlobKind, _ id: BlobID) async throws -> [UInt8] {
        try lock.withLock {
            if refuseLoads { throw TreeError.readFailed(path: "blob", reason: "write-only") }
            loads.append(id)
            guard let b = blobs[kind.rawValue]?[id] else { throw TreeError.notFound("blob \(id)") }
            return b
        }
    }
    func flush() async throws {}

    var count: Int { lock.withLock { blobs.values.reduce(0) { $0 + $1.count } } }
    func resetLoads() { lock.withLock { loads = [] } }
    var loadCount: Int { lock.withLock { loads.count } }

    /// Stores a tree as given (even one the encoder would refuse), for malicious-tree tests.
    func putRaw(_ kind: BlobKind, _ bytes: [UInt8]) -> BlobID {
        let id = idKey.id(of: bytes)
        lock.withLock { blobs[kind.rawValue, default: [:]][id] = bytes }
        return id
    }
}

final class MemorySnapshotCatalog: SnapshotCatalog, @unchecked Sendable {
    private let lock = NSLock()
    private var snapshots: [String: SnapshotInfo] = [:]
    private var counter = 0

    func saveSnapshot(_ info: SnapshotInfo) async throws -> String {
        lock.withLock {
            counter += 1
            let id = String(format: "%064x", counter)
            snapshots[id] = info
            return id
        }
    }
    func listSnapshots() async throws -> [SnapshotRecord] {
        lock.withLock { snapshots.map { SnapshotRecord(id: $0.key, info: $0.value) } }
    }
    func removeSnapshot(id: String) async throws {
        _ = lock.withLock { snapshots.removeValue(forKey: id) }
    }
    var count: Int { lock.withLock { snapshots.count } }
}

/// Writes a file with given bytes (creating directories), returns its path.
@discardableResult
func writeFile(_ bytes: [UInt8], _ path: String, mode: mode_t = 0o644) -> String {
    let dir = (path as NSString).deletingLastPathComponent
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    chmod(path, mode)
    return path
}

func readBytes(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

func lstatOf(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

/// Runs `body` with a path made of raw bytes (for non-UTF-8 names).
func withBytePath<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    (bytes + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) } }
}

extension TemporaryDirectory {
    /// `file(name)` cleaned as the archiver cleans paths ("/tmp//x" → "/tmp/x"), so it can be
    /// compared with snapshot paths.
    func p(_ name: String) -> String { Archiver.absolute(file(name)) }
}
