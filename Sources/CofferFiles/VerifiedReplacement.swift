import CofferFormat
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The length and SHA-256 of a plaintext, to prove that a new file holds exactly what an old one
/// decrypted to before the old one is removed.
public struct PlaintextDigest: Equatable, Sendable {
    public var bytes: UInt64
    public var sha256: [UInt8]

    public init(bytes: UInt64, sha256: [UInt8]) {
        self.bytes = bytes
        self.sha256 = sha256
    }

    /// The digest of everything `source` yields from where it stands.
    static func of(_ source: ByteSource) throws -> PlaintextDigest {
        let sink = HashingSink()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.readFully(into: $0) }
            try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            if n < buffer.count { return sink.digest }
        }
    }
}

/// Passes bytes on to another sink while hashing them.
final class HashingSink: ByteSink {
    private let next: ByteSink
    private var hash = SHA256()
    private var count: UInt64 = 0

    init(_ next: ByteSink = DiscardingSink()) { self.next = next }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        hash.update(bufferPointer: bytes)
        count += UInt64(bytes.count)
        try next.write(bytes)
    }

    var digest: PlaintextDigest { PlaintextDigest(bytes: count, sha256: Array(hash.finalize())) }
}

extension OpenedFile {
    /// Decrypts and authenticates all of `source`, returning the plaintext's length and digest.
    func digest(from source: ByteSource, threads: Int) throws -> PlaintextDigest {
        let sink = HashingSink()
        _ = try decrypt(from: source, to: sink, engine: StreamEngine(threads: threads))
        return sink.digest
    }
}

/// Verify-then-replace: the one way directory runs, migration and re-encryption write a Coffer
/// file that replaces (or stands in for) another one. The new file is written under a temporary
/// name, flushed, read back from disk and authenticated, and must hold exactly the plaintext it
/// was made from, before it gets its final name; only then may the caller remove the original.
/// And a run that was interrupted after the new file got its name finds it again: it is
/// compared with the original (``VerifiedReplacement/existingMatches(_:in:name:original:fileKeys:objectName:threads:)``)
/// and the original removed only when both hold the same plaintext.
enum VerifiedReplacement {
    /// Where the plaintext of a new file comes from.
    enum Plaintext {
        /// A regular file, read directly: it must yield exactly its size.
        case file(ByteSource)
        /// A decryption on its own thread that writes into a pipe and returns the digest of what
        /// it wrote (the plaintext never touches the disk).
        case decrypted(name: String, path: String, @Sendable (ByteSink) throws -> PlaintextDigest)
    }

    /// Encrypts `plaintext` into `output` with `encryptor`; when `verify`, the new file is read
    /// back and authenticated and must hold exactly that plaintext (length, and SHA-256 when it
    /// was computed) before it is committed under its final name. Returns the plaintext's digest
    /// (the SHA-256 empty when it was not computed).
    static func write(_ plaintext: Plaintext, into output: AtomicOutputFile, encryptor: CofferEncryptor,
                      parameters: HeaderParameters, engine: StreamEngine, verify: Bool = true) throws -> PlaintextDigest {
        try output.complete { sink in
            let written: UInt64
            let expected: PlaintextDigest
            switch plaintext {
            case .file(let source):
                written = try encryptor.encrypt(from: source, to: sink, parameters: parameters, engine: engine)
                expected = PlaintextDigest(bytes: written, sha256: [])
                guard written == source.regularFileSize else { throw FileError.changedWhileReading(path: source.path) }
            case .decrypted(let name, let path, let produce):
                let (pipe, finished) = try PipedProducer.start(name: name, for: path, produce)
                do {
                    written = try encryptor.encrypt(from: pipe, to: sink, parameters: parameters, engine: engine)
                } catch {
                    pipe.close()           // the decrypting side then fails with EPIPE,
                    _ = try? finished()    // and is waited for, so it never outlives its source
                    throw error
                }
                pipe.close()
                // A failure on the decrypting side ends the pipe early: what was encrypted is a prefix, never kept.
                expected = try finished()
                guard expected.bytes == written else {
                    throw FileError.notAsExpected(path: output.finalPath, reason: "encrypted \(written) of \(expected.bytes) bytes")
                }
            }
            if verify {
                try output.verifyWritten(fileKey: encryptor.fileKey, objectName: parameters.objectName,
                                         expectedBytes: written, expectedDigest: expected.sha256.isEmpty ? nil : expected,
                                         threads: engine.threads)
            }
            return expected
        }
    }

    /// Resuming an interrupted run: `name` exists in `directory` already. Returns its plaintext's
    /// digest when it is a Coffer file that opens with `fileKeys` (at `objectName` when given) and
    /// holds exactly `original` (the digest of the original's plaintext, computed only then); nil
    /// when no key given opens it. Throws ``FileError/existingOutputDiffers(path:original:)`` when
    /// it opens but holds anything else.
    static func existingMatches(_ originalPath: String, in directory: DirectoryHandle, name: String,
                                original: () throws -> PlaintextDigest, fileKeys: UnwrappedKeyCache,
                                objectName: [UInt8]?, threads: Int) throws -> PlaintextDigest? {
        let existing = try directory.openRegularFile(name)
        defer { existing.close() }
        let reading = try HeaderReading.read(from: existing)
        guard let (fileKey, _) = try? fileKeys.fileKey(for: reading.header),
              let opened = try? reading.open(fileKey: fileKey, expectedObjectName: objectName) else { return nil }
        let found = try opened.digest(from: existing, threads: threads)
        guard try original() == found else {
            throw FileError.existingOutputDiffers(path: directory.child(name), original: originalPath)
        }
        return found
    }

    /// Resuming an interrupted decryption: the plaintext `name` exists in `directory` already.
    /// Returns its length when it holds exactly what `opened` (the Coffer file it was decrypted
    /// from, read from `source`, with the signature required by `verifiers` if any) decrypts to;
    /// throws ``FileError/existingOutputDiffers(path:original:)`` otherwise.
    static func existingPlaintextMatches(_ opened: OpenedFile, source: ByteSource, in directory: DirectoryHandle,
                                         name: String, signedBy verifiers: [SignatureVerifier], threads: Int) throws -> UInt64 {
        let existing = try directory.openRegularFile(name)
        defer { existing.close() }
        let found = try PlaintextDigest.of(existing)
        let decrypted = HashingSink()
        _ = try opened.decrypt(from: source, to: decrypted, engine: StreamEngine(threads: threads), signedBy: verifiers)
        guard decrypted.digest == found else {
            throw FileError.existingOutputDiffers(path: directory.child(name), original: source.path)
        }
        return found.bytes
    }
}

extension AtomicOutputFile {
    /// The check before anything is replaced or removed: the new file, still under its temporary
    /// name and flushed, is read back from disk and every chunk authenticated under `fileKey`
    /// (and `objectName`); its plaintext must be exactly `expected` (length, and SHA-256 when
    /// known). Used by ``VerifiedReplacement`` and by rewrap.
    public func verifyWritten(fileKey: FileKey, objectName: [UInt8]?, expectedBytes: UInt64,
                              expectedDigest: PlaintextDigest? = nil, threads: Int) throws {
        guard fsync(sink.fd) == 0 else {
            let code = errno
            if code == ENOSPC || code == EDQUOT { throw CofferError.diskFull(path: finalPath) }
            throw CofferError.writeFailed(path: finalPath, reason: String(cString: strerror(code)))
        }
        if TestHooks.damageReadBack { damageForTest() }
        let check = try openTemporaryForReading()
        defer { check.close() }
        let opened = try HeaderReading.read(from: check).open(fileKey: fileKey, expectedObjectName: objectName)
        let found = try opened.digest(from: check, threads: threads)
        guard found.bytes == expectedBytes, expectedDigest.map({ $0 == found }) ?? true else {
            throw FileError.notAsExpected(path: finalPath, reason: "the new file read back does not hold the expected plaintext (\(found.bytes) of \(expectedBytes) bytes, or another digest)")
        }
    }
}
