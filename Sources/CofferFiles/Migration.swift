import CofferFormat
import CofferInterop
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The formats a migration converts from, with the key that opens them.
public enum MigrationSource: Sendable {
    /// XtraBackup's `NAME.xbcrypt`, with its raw AES key.
    case xbcrypt(key: SymmetricKey)
    /// Standard age files, `NAME.age` (binary or armored), with age identities.
    case age(identities: [AgeIdentity])

    public var suffix: String {
        switch self {
        case .xbcrypt: return DirectoryRun.xbcryptSuffix
        case .age: return DirectoryRun.ageSuffix
        }
    }

    /// Why an original is kept although the run removes originals.
    var keptReason: String {
        switch self {
        case .xbcrypt: return "XBCRYP01/02 chunks cannot be checked (or an earlier run's .cof cannot be opened with the keys given)"
        case .age: return "an earlier run's .cof cannot be opened with the keys given"
        }
    }

    /// True when decrypting the original checks it, so that a successful decryption proves the
    /// plaintext (age: always; .xbcrypt: only when every chunk is XBCRYP03, with its SHA-256).
    func isVerifiable(_ path: String) throws -> Bool {
        switch self {
        case .xbcrypt: return try Migration.isXbcryptVerifiable(path)
        case .age: return true
        }
    }

    /// Starts decrypting `source` on a thread into a pipe; returns the pipe's read end and a
    /// function that waits for the decryption and returns (plaintext bytes, whether it was checked).
    func pipeDecrypted(source: ByteSource) throws -> (ByteSource, () throws -> (bytes: UInt64, checked: Bool)) {
        let box = UncheckedBox(source)
        switch self {
        case .xbcrypt(let key):
            return try PipedProducer.start(name: "decrypted xbcrypt stream", for: source.path) { sink in
                let summary = try Xbcrypt.decrypt(from: box.value, to: sink, key: key, threads: 2)
                return (summary.plaintextBytes, summary.everyChunkHashed)
            }
        case .age(let identities):
            guard let kind = AgeFile.kind(of: try source.peek(AgeFile.sniffLength)) else {
                throw CofferError.notCofferFile(hint: "\(source.path) is not an age file")
            }
            return try PipedProducer.start(name: "decrypted age stream", for: source.path) { sink in
                (try AgeFile.decrypt(from: box.value, kind: kind, identities: identities, to: sink, threads: 2), true)
            }
        }
    }
}

/// Converts files of another format (XtraBackup .xbcrypt, age) to Coffer files in one pass: the
/// old file's plaintext flows through a pipe straight into the Coffer encryptor and never touches
/// the disk.
///
/// `NAME.xbcrypt` or `NAME.age` becomes `NAME.cof`. The new file is read back and authenticated,
/// and must hold exactly the bytes the old one decrypted to, before the old one is removed; and it
/// is removed only when its own decryption was checked (age files are authenticated; .xbcrypt only
/// by XBCRYP03's per-chunk SHA-256: XBCRYP01/02 decrypt without error under any key, so their
/// originals are always kept). A run that is interrupted can be started again: a file whose
/// `NAME.cof` exists and authenticates is not converted twice (its original is removed then, if
/// it would have been).
public struct Migration: Sendable {
    public var run: DirectoryRun

    public init(run: DirectoryRun) { self.run = run }

    /// Migrates every `NAME.xbcrypt` (or `NAME.age`) under `root`; files are bound to their relative paths.
    public func migrate(root: String, from source: MigrationSource, encryptor: CofferEncryptor, identities: [Identity],
                        parameters: HeaderParameters) throws -> RunReport {
        let keptUnverifiable = LockedValue<[String]>([])
        let alreadyDone = LockedValue<[String]>([])
        let migration = self
        var report = try run.forEachEncryptedFile(root: root, identities: [], suffix: source.suffix) {
            _, entry, _, threads in
            let name = String(entry.relative.dropLast(source.suffix.count))
            let outcome = try migration.migrateFile(
                "\(root)/\(entry.relative)", objectName: name, mode: entry.mode, from: source, encryptor: encryptor,
                identities: identities, parameters: parameters, threads: threads)
            if outcome.keptUnverifiable { keptUnverifiable.withValue { $0.append(entry.relative) } }
            if outcome.alreadyConverted { alreadyDone.withValue { $0.append(entry.relative) } }
            return outcome.bytes
        }
        for path in keptUnverifiable.withValue({ $0 }).sorted() {
            report.warnings.append((path, "the original was kept: \(source.keptReason); check the new file before removing it"))
        }
        for path in alreadyDone.withValue({ $0 }).sorted() {
            report.warnings.append((path, "already converted by an earlier run (its .cof authenticates)"))
        }
        return report
    }

    public struct Outcome: Sendable {
        public var bytes: UInt64 = 0
        public var keptUnverifiable = false
        public var alreadyConverted = false
    }

    /// Migrates one file, `PATH.xbcrypt` (or `PATH.age`) to `PATH.cof`.
    /// `identities` are the new keys that can open Coffer files (to authenticate an earlier run's output).
    public func migrateFile(_ path: String, objectName: String?, mode: mode_t, from format: MigrationSource,
                            encryptor: CofferEncryptor, identities: [Identity], parameters: HeaderParameters,
                            threads: Int) throws -> Outcome {
        guard path.hasSuffix(format.suffix) else {
            throw CofferError.invalidParameter("\(path): only NAME\(format.suffix) files are migrated from this format")
        }
        let target = String(path.dropLast(format.suffix.count)) + DirectoryRun.suffix
        var fileParameters = parameters
        fileParameters.objectName = objectName.map { Array($0.utf8) } ?? []
        var outcome = Outcome()

        if access(target, F_OK) == 0 {
            // Resuming: an earlier run (with another file key) finished this one. Authenticate it
            // with the keys given, then finish the removal; keys that cannot open it (public keys
            // only) leave the original in place.
            let check = try ByteSource.open(path: target)
            defer { check.close() }
            let reading = try HeaderReading.read(from: check)
            outcome.alreadyConverted = true
            guard let opened = try? reading.open(with: identities, expectedObjectName: fileParameters.objectName) else {
                outcome.keptUnverifiable = run.removeOriginal
                return outcome
            }
            outcome.bytes = try opened.decrypt(from: check, to: DiscardingSink(), engine: StreamEngine(threads: threads))
            return try finish(outcome, source: path, sourceIsVerifiable: try format.isVerifiable(path))
        }

        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let output = try AtomicOutputFile(path: target, mode: mode)
        var decrypted: (bytes: UInt64, checked: Bool) = (0, false)
        try output.complete { sink in
            let (plaintext, producerResult) = try format.pipeDecrypted(source: source)
            do {
                outcome.bytes = try encryptor.encrypt(from: plaintext, to: sink, parameters: fileParameters,
                                                      engine: StreamEngine(threads: threads, progress: run.progress?.engineCallback()))
            } catch {
                plaintext.close()          // the decrypting side then fails with EPIPE,
                _ = try? producerResult()  // and is waited for, so it never outlives `source`
                throw error
            }
            plaintext.close()
            // A failure on the decrypting side ends the pipe early: what was encrypted is a prefix, never kept.
            decrypted = try producerResult()
            guard decrypted.bytes == outcome.bytes else {
                throw CofferError.writeFailed(path: target, reason: "encrypted \(outcome.bytes) of \(decrypted.bytes) bytes")
            }
            // Read the new file back from disk and authenticate all of it before anything is removed.
            let check = try ByteSource.open(path: output.temporaryPath)
            defer { check.close() }
            let opened = try HeaderReading.read(from: check)
                .open(fileKey: encryptor.fileKey, expectedObjectName: fileParameters.objectName)
            let verified = try opened.decrypt(from: check, to: DiscardingSink(), engine: StreamEngine(threads: threads))
            guard verified == outcome.bytes else {
                throw CofferError.writeFailed(path: target, reason: "verification read back \(verified) of \(outcome.bytes) bytes")
            }
        }
        return try finish(outcome, source: path, sourceIsVerifiable: decrypted.checked)
    }

    private func finish(_ outcome: Outcome, source: String, sourceIsVerifiable: Bool) throws -> Outcome {
        var outcome = outcome
        guard run.removeOriginal else { return outcome }
        if sourceIsVerifiable {
            try DirectoryRun.remove(source)
        } else {
            outcome.keptUnverifiable = true
        }
        return outcome
    }

    /// True when every chunk of an .xbcrypt file is XBCRYP03 (checked by its SHA-256 on decryption).
    static func isXbcryptVerifiable(_ path: String) throws -> Bool {
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        var verifiable = true
        var header = [UInt8](repeating: 0, count: 44)
        var offset: UInt64 = 0
        while true {
            let got = try header.withUnsafeMutableBytes { try source.read(into: $0, at: offset) }
            if got == 0 {
                // The end must fall exactly after a chunk: a length pointing past it is not a chunk.
                guard offset == source.regularFileSize ?? offset else {
                    throw CofferError.truncated("\(path): the last xbcrypt chunk is cut short")
                }
                return verifiable
            }
            guard got >= 36, Xbcrypt.looksLikeXbcrypt(Array(header[0..<8])) else { return false }
            let ivPart: UInt64 = header[7] == 0x31 ? 0 : 8 + 16
            if header[7] != 0x33 { verifiable = false }
            let payload = header[24..<32].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard payload <= UInt64(Xbcrypt.maxChunkSize) else {
                throw CofferError.malformedHeader("\(path): an xbcrypt chunk claims \(payload) bytes")
            }
            // The length is the file's word: checked arithmetic, so a crafted chunk header is an
            // error and not a trap (an overflowing `+` kills the process).
            let (chunkEnd, overflow) = offset.addingReportingOverflow(36 + ivPart)
            let (next, overflow2) = chunkEnd.addingReportingOverflow(payload)
            guard !overflow, !overflow2 else {
                throw CofferError.malformedHeader("\(path): an xbcrypt chunk claims \(payload) bytes, beyond any file")
            }
            offset = next
        }
    }
}

/// Runs a producer on its own thread, writing into a pipe whose read end the caller consumes (so a
/// decryption feeds an encryption without the plaintext touching the disk).
enum PipedProducer {
    /// Returns the read end and a function that waits for the producer and returns its result or
    /// rethrows its error. The caller closes the read end first if it stops early: the producer
    /// then fails with EPIPE (SIGPIPE is ignored) and must still be waited for.
    static func start<T: Sendable>(name: String, for path: String,
                                   _ produce: @escaping @Sendable (ByteSink) throws -> T) throws -> (ByteSource, () throws -> T) {
        let (readEnd, writeEnd) = try makePipe(for: path)
        signal(SIGPIPE, SIG_IGN)
        let result = LockedValue<Result<T, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let outcome = Result { try produce(FileDescriptorSink(fd: writeEnd, path: "pipe")) }
            close(writeEnd)
            _ = result.exchange(outcome)
            done.signal()
        }
        let wait: () throws -> T = {
            done.wait()
            return try result.withValue { $0! }.get()
        }
        return (ByteSource(fd: readEnd, path: name), wait)
    }
}

/// Hands a value that is used by one thread at a time to another thread.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
