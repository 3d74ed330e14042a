import CofferFormat
import CofferInterop
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Counts bytes processed across threads, for progress lines.
public final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var done: UInt64 = 0
    private var expected: UInt64?

    public init(total: UInt64?) { expected = total }

    /// The bytes the work will cover, when known (a directory run sets it once it has listed the tree).
    public var total: UInt64? {
        get { lock.withLock { expected } }
        set { lock.withLock { expected = newValue } }
    }

    public func add(_ bytes: UInt64) { lock.withLock { done += bytes } }
    public var bytesDone: UInt64 { lock.withLock { done } }

    /// An engine progress callback (cumulative per file) that feeds this counter.
    public func engineCallback() -> @Sendable (UInt64) -> Void {
        let last = LockedValue<UInt64>(0)
        return { [self] cumulative in
            let delta = last.exchange(cumulative)
            add(cumulative - delta)
        }
    }
}

final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func exchange(_ new: T) -> T { lock.withLock { let old = value; value = new; return old } }
    func withValue<R>(_ body: (inout T) throws -> R) rethrows -> R { try lock.withLock { try body(&value) } }
}

/// The outcome of a run over a directory tree.
public struct RunReport: Sendable {
    public var completed: [String] = []
    public var failures: [(path: String, error: CofferError)] = []
    public var skipped: [(path: String, reason: String)] = []
    /// Files that were processed but deserve a caution (e.g. .xbcrypt chunks without any integrity check).
    public var warnings: [(path: String, message: String)] = []
    public var plaintextBytes: UInt64 = 0
}

/// Encrypts or decrypts every regular file in a tree in place, `NAME` ⇄ `NAME.cof`, the way
/// `xtrabackup --encrypt` and `xtrabackup --decrypt --parallel` treat a target directory.
///
/// All files of an encryption run share one file key, wrapped once (so a passphrase costs one
/// scrypt derivation); each file is bound to its relative path through the header's object name.
/// Every file is written atomically; a file that fails is reported and the run goes on, and no
/// original is removed unless its output is complete, flushed and verified.
public struct DirectoryRun: Sendable {
    public static let suffix = ".cof"
    static let temporaryMarker = ".coffer-tmp-"

    public var threads: Int
    public var removeOriginal: Bool
    /// Replace outputs that already exist (otherwise such a file fails and its original stays).
    public var overwrite: Bool
    public var progress: ProgressCounter?

    public init(threads: Int, removeOriginal: Bool, overwrite: Bool = false, progress: ProgressCounter? = nil) {
        self.threads = max(1, threads)
        self.removeOriginal = removeOriginal
        self.overwrite = overwrite
        self.progress = progress
    }

    struct Entry: Sendable {
        let relative: String
        let size: UInt64
        let mode: mode_t
    }

    /// Regular files under `root` (symbolic links are not followed), sorted by path.
    static func listFiles(root: String, report: inout RunReport) throws -> [Entry] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CofferError.readFailed(path: root, reason: "not a directory")
        }
        guard let enumerator = FileManager.default.enumerator(atPath: root) else {
            throw CofferError.readFailed(path: root, reason: "cannot list the directory")
        }
        var entries: [Entry] = []
        while let relative = enumerator.nextObject() as? String {
            var st = stat()
            guard lstat("\(root)/\(relative)", &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                if URL(fileURLWithPath: relative).lastPathComponent.contains(temporaryMarker) {
                    report.skipped.append((relative, "temporary file of an interrupted run"))
                } else {
                    entries.append(Entry(relative: relative, size: UInt64(st.st_size), mode: st.st_mode & 0o7777))
                }
            case S_IFDIR: break
            case S_IFLNK: report.skipped.append((relative, "symbolic link (not followed)"))
            default: report.skipped.append((relative, "not a regular file"))
            }
        }
        return entries.sorted { $0.relative < $1.relative }
    }

    /// Runs `body` over the entries: large files one at a time with every thread, then small ones
    /// in parallel with one thread each (per-file set-up would otherwise dominate).
    func forEach(_ entries: [Entry], bigFile: UInt64, report: LockedValue<RunReport>,
                 _ body: @escaping @Sendable (Entry, Int) throws -> UInt64) {
        @Sendable func run(_ entry: Entry, threads: Int) {
            do {
                let bytes = try body(entry, threads)
                report.withValue {
                    $0.completed.append(entry.relative)
                    $0.plaintextBytes += bytes
                }
            } catch {
                let coffer = error as? CofferError ?? .readFailed(path: entry.relative, reason: "\(error)")
                report.withValue { $0.failures.append((entry.relative, coffer)) }
            }
        }
        let big = entries.filter { $0.size >= bigFile }
        let small = entries.filter { $0.size < bigFile }
        for entry in big { run(entry, threads: threads) }
        let next = LockedValue(0)
        DispatchQueue.concurrentPerform(iterations: min(threads, max(small.count, 1))) { _ in
            while true {
                let index = next.withValue { value -> Int in
                    defer { value += 1 }
                    return value
                }
                guard index < small.count else { return }
                run(small[index], threads: 1)
            }
        }
    }

    // MARK: Encryption

    /// Encrypts every regular file under `root` to `NAME.cof` (files already ending in `.cof` are skipped).
    public func encrypt(root: String, encryptor: CofferEncryptor, parameters: HeaderParameters) throws -> RunReport {
        var initial = RunReport()
        var entries = try Self.listFiles(root: root, report: &initial)
        entries.removeAll { entry in
            guard entry.relative.hasSuffix(Self.suffix) else { return false }
            initial.skipped.append((entry.relative, "already encrypted (ends in \(Self.suffix))"))
            return true
        }
        progress?.total = entries.reduce(0) { $0 + $1.size }
        let report = LockedValue(initial)
        let options = self
        forEach(entries, bigFile: UInt64(parameters.chunkSize) * UInt64(4 * threads), report: report) { entry, threads in
            try options.encryptFile(root: root, entry: entry, encryptor: encryptor, parameters: parameters, threads: threads)
        }
        return report.withValue { $0 }
    }

    func encryptFile(root: String, entry: Entry, encryptor: CofferEncryptor, parameters: HeaderParameters,
                     threads: Int) throws -> UInt64 {
        let sourcePath = "\(root)/\(entry.relative)"
        let outputPath = sourcePath + Self.suffix
        let source = try ByteSource.open(path: sourcePath)
        defer { source.close() }
        let output = try AtomicOutputFile(path: outputPath, mode: entry.mode, overwrite: overwrite)
        var fileParameters = parameters
        fileParameters.objectName = Array(entry.relative.utf8)
        let engine = StreamEngine(threads: threads, progress: progress?.engineCallback())
        let bytes = try output.complete { sink in
            let bytes = try encryptor.encrypt(from: source, to: sink, parameters: fileParameters, engine: engine)
            guard bytes == source.regularFileSize else {
                throw CofferError.readFailed(path: sourcePath, reason: "the file changed size while it was being encrypted")
            }
            if removeOriginal {
                // Read the new file back from disk and authenticate all of it before the original goes.
                let check = try ByteSource.open(path: output.temporaryPath)
                defer { check.close() }
                let opened = try HeaderReading.read(from: check)
                    .open(fileKey: encryptor.fileKey, expectedObjectName: fileParameters.objectName)
                let verified = try opened.decrypt(from: check, to: DiscardingSink(), engine: StreamEngine(threads: threads))
                guard verified == bytes else {
                    throw CofferError.writeFailed(path: outputPath, reason: "verification read back \(verified) of \(bytes) bytes")
                }
            }
            return bytes
        }
        if removeOriginal { try Self.remove(sourcePath) }
        return bytes
    }

    static func remove(_ path: String) throws {
        guard unlink(path) == 0 else {
            throw CofferError.writeFailed(path: path, reason: "output is complete but the original could not be removed: \(String(cString: strerror(errno)))")
        }
        AtomicOutputFile.syncDirectory(of: path)
    }

    // MARK: Decryption

    /// Decrypts every `NAME.cof` under `root` to `NAME`. A file that records an object name must
    /// be found at that name: two files of one run swapped or renamed are refused. With
    /// `signedBy`, each file must carry a valid signature by one of those keys.
    public func decrypt(root: String, identities: [Identity], signedBy verifiers: [SignatureVerifier] = []) throws -> RunReport {
        try forEachEncryptedFile(root: root, identities: identities) { options, entry, keys, threads in
            try options.decryptFile(root: root, entry: entry, keys: keys, threads: threads, signedBy: verifiers)
        }
    }

    /// Authenticates every `NAME.cof` under `root` (header, object name, every chunk); writes nothing.
    public func verify(root: String, identities: [Identity], signedBy verifiers: [SignatureVerifier] = []) throws -> RunReport {
        try forEachEncryptedFile(root: root, identities: identities) { options, entry, keys, threads in
            let (source, opened) = try options.open(root: root, entry: entry, keys: keys)
            defer { source.close() }
            return try opened.decrypt(from: source, to: DiscardingSink(),
                                      engine: StreamEngine(threads: threads, progress: options.progress?.engineCallback()),
                                      signedBy: verifiers)
        }
    }

    /// Runs `body` over every file under `root` whose name ends in `suffix`, with one key cache for the run.
    func forEachEncryptedFile(root: String, identities: [Identity], suffix: String = DirectoryRun.suffix,
                              _ body: @escaping @Sendable (DirectoryRun, Entry, UnwrappedKeyCache, Int) throws -> UInt64) throws -> RunReport {
        var initial = RunReport()
        let entries = try Self.listFiles(root: root, report: &initial).filter { $0.relative.hasSuffix(suffix) }
        // Sealed sizes: within a fraction of a percent of the plaintext to come.
        progress?.total = entries.reduce(0) { $0 + $1.size }
        let report = LockedValue(initial)
        let keys = UnwrappedKeyCache(identities: identities)
        let options = self
        forEach(entries, bigFile: 8 << 20, report: report) { entry, threads in
            try body(options, entry, keys, threads)
        }
        return report.withValue { $0 }
    }

    // MARK: XtraBackup .xbcrypt

    public static let xbcryptSuffix = ".xbcrypt"
    /// Standard age files, as `coffer migrate --from age` finds them.
    public static let ageSuffix = ".age"

    /// True when the tree holds any `NAME.xbcrypt` (an XtraBackup target directory).
    public static func containsXbcrypt(root: String) throws -> Bool {
        var ignored = RunReport()
        return try listFiles(root: root, report: &ignored).contains { $0.relative.hasSuffix(xbcryptSuffix) }
    }

    /// Decrypts every `NAME.xbcrypt` under `root` to `NAME`, like `xtrabackup --decrypt --parallel`
    /// (`NAME` may still be compressed: `t1.ibd.zst.xbcrypt` becomes `t1.ibd.zst`). Files whose
    /// chunks carry no integrity check (XBCRYP01/02) are listed in the report's warnings.
    /// With `decompress`, `NAME.zst.xbcrypt` (or `.lz4`, `.qp`) becomes `NAME` directly.
    public func decryptXbcrypt(root: String, key: SymmetricKey, decompress: Bool = false) throws -> RunReport {
        let unhashed = LockedValue<[String]>([])
        var report = try forEachEncryptedFile(root: root, identities: [], suffix: Self.xbcryptSuffix) { options, entry, _, threads in
            let sourcePath = "\(root)/\(entry.relative)"
            let source = try ByteSource.open(path: sourcePath)
            defer { source.close() }
            var outputPath = String(sourcePath.dropLast(Self.xbcryptSuffix.count))
            let decompressor = decompress ? Decompressor.forName(outputPath) : nil
            if let decompressor { outputPath = String(outputPath.dropLast(decompressor.suffix.count)) }
            let output = try AtomicOutputFile(path: outputPath, mode: entry.mode, overwrite: options.overwrite)
            let summary = try output.complete { sink in
                let decrypt = { (sink: ByteSink) in
                    try Xbcrypt.decrypt(from: source, to: sink, key: key, threads: threads,
                                        progress: options.progress?.engineCallback())
                }
                guard let decompressor else { return try decrypt(sink) }
                // decrypt → pipe → the tool → the temporary output file.
                let (readEnd, writeEnd) = try makePipe(for: outputPath)
                let wait: () throws -> Void
                do {
                    wait = try decompressor.start(input: readEnd, output: sink.fd)
                } catch {
                    close(readEnd)
                    close(writeEnd)
                    throw error
                }
                close(readEnd)
                signal(SIGPIPE, SIG_IGN)  // a tool that stops early must show up as an error, not kill us
                let result = Result { try decrypt(FileDescriptorSink(fd: writeEnd, path: "\(decompressor.tool) input")) }
                close(writeEnd)
                try wait()
                return try result.get()
            }
            if !summary.everyChunkHashed {
                unhashed.withValue { $0.append(entry.relative) }
            } else if options.removeOriginal {
                // Only originals whose decryption was checked go: with a wrong key, XBCRYP01/02
                // decrypt to garbage without any error, and removing them would lose the backup.
                try Self.remove(sourcePath)
            }
            return summary.plaintextBytes
        }
        let kept = removeOriginal ? "; the original was kept" : ""
        for path in unhashed.withValue({ $0 }).sorted() {
            report.warnings.append((path, "XBCRYP01/02 chunks carry no integrity check: a wrong key or altered data cannot be detected\(kept)"))
        }
        return report
    }

    /// Opens `NAME.cof` and authenticates its header; a file that records an object name must be
    /// found at that name. Files encrypted on their own record none and are not bound to a place.
    func open(root: String, entry: Entry, keys: UnwrappedKeyCache) throws -> (ByteSource, OpenedFile) {
        let source = try ByteSource.open(path: "\(root)/\(entry.relative)")
        do {
            let reading = try HeaderReading.read(from: source)
            let fileKey = try keys.fileKey(for: reading.header)
            let expected = reading.header.parameters.objectName.isEmpty
                ? nil : Array(entry.relative.dropLast(Self.suffix.count).utf8)
            return (source, try reading.open(fileKey: fileKey, expectedObjectName: expected))
        } catch {
            source.close()
            throw error
        }
    }

    func decryptFile(root: String, entry: Entry, keys: UnwrappedKeyCache, threads: Int,
                     signedBy verifiers: [SignatureVerifier]) throws -> UInt64 {
        let sourcePath = "\(root)/\(entry.relative)"
        let outputPath = "\(root)/\(entry.relative.dropLast(Self.suffix.count))"
        let (source, opened) = try open(root: root, entry: entry, keys: keys)
        defer { source.close() }
        let output = try AtomicOutputFile(path: outputPath, mode: entry.mode, overwrite: overwrite)
        let bytes = try output.complete { sink in
            try opened.decrypt(from: source, to: sink,
                               engine: StreamEngine(threads: threads, progress: progress?.engineCallback()),
                               signedBy: verifiers)
        }
        if removeOriginal { try Self.remove(sourcePath) }
        return bytes
    }
}

/// Unwraps a run's file key once: files of one run carry identical stanzas.
final class UnwrappedKeyCache: @unchecked Sendable {
    private let identities: [Identity]
    private let lock = NSLock()
    private var known: [(stanzas: [Stanza], key: FileKey)] = []

    init(identities: [Identity]) { self.identities = identities }

    func fileKey(for header: Header) throws -> FileKey {
        try lock.withLock {
            if let hit = known.first(where: { $0.stanzas == header.stanzas }) { return hit.key }
            let key = try HeaderOpener.open(header, with: identities)
            known.append((header.stanzas, key))
            return key
        }
    }
}
