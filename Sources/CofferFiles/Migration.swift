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
    case age(identities: [Identity])

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

    /// Decrypts `source` into `sink` (hashing what passes).
    func decrypt(_ source: ByteSource, to sink: ByteSink) throws -> DecryptedOriginal {
        let hashing = HashingSink(sink)
        switch self {
        case .xbcrypt(let key):
            let summary = try Xbcrypt.decrypt(from: source, to: hashing, key: key, threads: 2)
            return DecryptedOriginal(digest: hashing.digest, checked: summary.everyChunkHashed)
        case .age(let identities):
            guard case .age(let armored) = try FormatDetector.detect(source) else {
                throw CofferError.notCofferFile(hint: "\(source.path) is not an age file")
            }
            _ = try AgeFile.decrypt(from: source, kind: armored ? .armored : .binary, identities: identities, to: hashing, threads: 2)
            return DecryptedOriginal(digest: hashing.digest, checked: true)
        }
    }
}

/// What an original decrypted to, and whether its decryption was checked (age: always;
/// .xbcrypt: only when every chunk is XBCRYP03, with its SHA-256).
struct DecryptedOriginal: Sendable {
    var digest: PlaintextDigest
    var checked: Bool
}

/// Converts files of another format (XtraBackup .xbcrypt, age) to Coffer files in one pass: the
/// old file's plaintext flows through a pipe straight into the Coffer encryptor and never touches
/// the disk.
///
/// `NAME.xbcrypt` or `NAME.age` becomes `NAME.cof`. The new file is read back and authenticated,
/// and must hold exactly the plaintext the old one decrypted to (length and SHA-256), before the
/// old one is removed; and it is removed only when its own decryption was checked (age files are
/// authenticated; .xbcrypt only by XBCRYP03's per-chunk SHA-256: XBCRYP01/02 decrypt without error
/// under any key, so their originals are always kept). A run that is interrupted can be started
/// again: a file whose `NAME.cof` exists, authenticates and holds the same plaintext as the
/// original is not converted twice (its original is removed then, if it would have been); a
/// `NAME.cof` that holds anything else is an error, and both files stay.
public struct Migration: Sendable {
    public var run: DirectoryRun

    public init(run: DirectoryRun) { self.run = run }

    /// Migrates every `NAME.xbcrypt` (or `NAME.age`) under `root`; files are bound to their relative paths.
    public func migrate(root: String, from source: MigrationSource, encryptor: CofferEncryptor, identities: [Identity],
                        parameters: HeaderParameters) throws -> RunReport {
        let keptUnverifiable = LockedValue<[String]>([])
        let alreadyDone = LockedValue<[String]>([])
        let migration = self
        var report = try run.forEachFile(root: root, suffix: source.suffix) { _, location, threads in
            let relative = location.entry.relative
            let outcome = try migration.migrate(
                in: location.directory, name: location.entry.name, objectName: String(relative.dropLast(source.suffix.count)),
                from: source, encryptor: encryptor, identities: identities, parameters: parameters, threads: threads)
            if outcome.keptUnverifiable { keptUnverifiable.withValue { $0.append(relative) } }
            if outcome.alreadyConverted { alreadyDone.withValue { $0.append(relative) } }
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
    public func migrateFile(_ path: String, objectName: String?, from format: MigrationSource,
                            encryptor: CofferEncryptor, identities: [Identity], parameters: HeaderParameters,
                            threads: Int) throws -> Outcome {
        guard path.hasSuffix(format.suffix) else {
            throw FileError.wrongName(path: path, expectedSuffix: format.suffix)
        }
        let (directory, name) = try DirectoryHandle.parent(of: path)
        return try migrate(in: directory, name: name, objectName: objectName, from: format, encryptor: encryptor,
                           identities: identities, parameters: parameters, threads: threads)
    }

    func migrate(in directory: DirectoryHandle, name: String, objectName: String?, from format: MigrationSource,
                 encryptor: CofferEncryptor, identities: [Identity], parameters: HeaderParameters,
                 threads: Int) throws -> Outcome {
        guard name.hasSuffix(format.suffix) else {
            throw FileError.wrongName(path: directory.child(name), expectedSuffix: format.suffix)
        }
        let targetName = String(name.dropLast(format.suffix.count)) + DirectoryRun.suffix
        let targetPath = directory.child(targetName)
        var fileParameters = parameters
        fileParameters.objectName = objectName.map { Array($0.utf8) } ?? []
        var outcome = Outcome()
        let source = try directory.openRegularFile(name)
        defer { source.close() }
        let original = source.identity

        if directory.status(targetName) != nil {
            // Resuming: an earlier run (with another file key) may have converted this one.
            // Authenticate it with the keys given, and finish the removal only when it holds
            // exactly what the original decrypts to; keys that cannot open it (public keys only)
            // leave the original in place.
            var checked = false
            let existing = try VerifiedReplacement.existingMatches(
                source.path, in: directory, name: targetName,
                original: {
                    let decrypted = try format.decrypt(source, to: DiscardingSink())
                    checked = decrypted.checked
                    return decrypted.digest
                },
                fileKeys: UnwrappedKeyCache(identities: identities), objectName: fileParameters.objectName, threads: threads)
            outcome.alreadyConverted = true
            guard let existing else {
                outcome.keptUnverifiable = run.removeOriginal
                return outcome
            }
            outcome.bytes = existing.bytes
            return try finish(outcome, in: directory, name: name, original: original, sourceIsVerifiable: checked)
        }

        let output = try AtomicOutputFile(directory: directory, name: targetName,
                                          mode: OutputMode.forNewFile(from: DirectoryRun.mode(of: source)))
        let checked = LockedValue(false)
        let box = UncheckedBox(source)
        // The original's plaintext flows through a pipe into the encryptor; the new file is read
        // back and must hold exactly that plaintext before anything is removed.
        let written = try VerifiedReplacement.write(
            .decrypted(name: "decrypted \(format.suffix) stream", path: source.path) { sink in
                let decrypted = try format.decrypt(box.value, to: sink)
                _ = checked.exchange(decrypted.checked)
                return decrypted.digest
            },
            into: output, encryptor: encryptor, parameters: fileParameters,
            engine: StreamEngine(threads: threads, progress: run.progress?.engineCallback()))
        outcome.bytes = written.bytes
        return try finish(outcome, in: directory, name: name, original: original, sourceIsVerifiable: checked.exchange(false))
    }

    private func finish(_ outcome: Outcome, in directory: DirectoryHandle, name: String, original: FileIdentity,
                        sourceIsVerifiable: Bool) throws -> Outcome {
        var outcome = outcome
        guard run.removeOriginal else { return outcome }
        if sourceIsVerifiable {
            try directory.removeOriginal(name, expected: original)
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
            guard got >= 36, FormatDetector.isXbcrypt(Array(header[0..<8])) else { return false }
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
