import CofferFormat
import CofferInterop
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The outcome of a run over a directory tree.
public struct RunReport: Sendable {
    public var completed: [String] = []
    public var failures: [(path: String, error: any CategorizedError)] = []
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

    typealias Entry = DirectoryTree.Entry

    /// Lists `root` for a run (symbolic links are not followed).
    static func listFiles(root: String, report: inout RunReport, pausing: Bool = true) throws -> DirectoryTree {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileError.notADirectory(path: root)
        }
        return try DirectoryTree.list(root, skipped: &report.skipped, pausing: pausing)
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
                let coffer = error as? any CategorizedError ?? CofferError.readFailed(path: entry.relative, reason: "\(error)")
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
    ///
    /// With `removeOriginal`, a run interrupted after some `NAME.cof` got its name but before
    /// `NAME` was removed can be run again: an existing `NAME.cof` that opens with `identities`
    /// (the keys among the recipients that can also decrypt) and holds exactly `NAME`'s content
    /// lets `NAME` be removed; one that holds anything else, or that no identity opens, is
    /// refused and both files stay.
    public func encrypt(root: String, encryptor: CofferEncryptor, parameters: HeaderParameters,
                        identities: [Identity] = []) throws -> RunReport {
        var initial = RunReport()
        let tree = try Self.listFiles(root: root, report: &initial)
        var entries = tree.entries
        entries.removeAll { entry in
            guard entry.relative.hasSuffix(Self.suffix) else { return false }
            initial.skipped.append((entry.relative, "already encrypted (ends in \(Self.suffix))"))
            return true
        }
        progress?.total = entries.reduce(0) { $0 + $1.size }
        let report = LockedValue(initial)
        let options = self
        let resumeKeys = removeOriginal && !overwrite && !identities.isEmpty ? UnwrappedKeyCache(identities: identities) : nil
        forEach(entries, bigFile: UInt64(parameters.chunkSize) * UInt64(4 * threads), report: report) { entry, threads in
            try options.encryptFile(tree: tree, entry: entry, encryptor: encryptor, parameters: parameters, threads: threads,
                                    resumeKeys: resumeKeys)
        }
        return report.withValue { $0 }
    }

    func encryptFile(tree: DirectoryTree, entry: Entry, encryptor: CofferEncryptor, parameters: HeaderParameters,
                     threads: Int, resumeKeys: UnwrappedKeyCache? = nil) throws -> UInt64 {
        let directory = try tree.directory(of: entry)
        let source = try directory.openRegularFile(entry.name)
        defer { source.close() }
        var fileParameters = parameters
        fileParameters.objectName = Array(entry.relative.utf8)
        let targetName = entry.name + Self.suffix
        let output: AtomicOutputFile
        do {
            output = try AtomicOutputFile(directory: directory, name: targetName,
                                          mode: OutputMode.forNewFile(from: Self.mode(of: source)), overwrite: overwrite)
        } catch let error as FileError {
            // Resuming: NAME.cof may be an earlier run's complete output whose original was not
            // removed yet. NAME goes only when NAME.cof opens and holds exactly NAME's content; a
            // NAME.cof that is not a Coffer file, or does not authenticate, is refused as it stands.
            guard case .alreadyExists = error, let resumeKeys else { throw error }
            let found: PlaintextDigest?
            do {
                found = try VerifiedReplacement.existingMatches(
                    source.path, in: directory, name: targetName, original: { try PlaintextDigest.of(source) },
                    fileKeys: resumeKeys, objectName: fileParameters.objectName, threads: threads)
            } catch is CofferError {
                found = nil
            }
            guard let found else { throw error }
            try directory.removeOriginal(entry.name, expected: source.identity)
            return found.bytes
        }
        let engine = StreamEngine(threads: threads, progress: progress?.engineCallback())
        // Read back from disk and authenticated before the original goes.
        let written = try VerifiedReplacement.write(.file(source), into: output, encryptor: encryptor,
                                                    parameters: fileParameters, engine: engine, verify: removeOriginal)
        if removeOriginal { try directory.removeOriginal(entry.name, expected: source.identity) }
        return written.bytes
    }

    /// The permission bits of an open file.
    static func mode(of source: ByteSource) -> mode_t {
        var st = stat()
        return fstat(source.fd, &st) == 0 ? st.st_mode & 0o7777 : 0o600
    }

    // MARK: Decryption

    /// Decrypts every `NAME.cof` under `root` to `NAME`. Only the files of one run are decrypted
    /// (docs/FORMAT.md, "Directory runs"): each must be found at its object name, relative to the
    /// run's root; a file of another run or without an object name is reported and left alone.
    /// With `signedBy`, each file must carry a valid signature by one of those keys.
    public func decrypt(root: String, identities: [Identity], signedBy verifiers: [SignatureVerifier] = []) throws -> RunReport {
        try forEachRunFile(root: root, identities: identities) { options, location, source, opened, threads in
            try options.decryptFile(location, source: source, opened: opened, threads: threads, signedBy: verifiers)
        }
    }

    /// Authenticates every `NAME.cof` under `root` (header, run, object name, every chunk); writes nothing.
    public func verify(root: String, identities: [Identity], signedBy verifiers: [SignatureVerifier] = []) throws -> RunReport {
        try forEachRunFile(root: root, identities: identities) { options, _, source, opened, threads in
            try opened.decrypt(from: source, to: DiscardingSink(),
                               engine: StreamEngine(threads: threads, progress: options.progress?.engineCallback()),
                               signedBy: verifiers)
        }
    }

    /// A file found in a tree: its directory (reached without following links) and name.
    struct Location {
        let directory: DirectoryHandle
        let entry: Entry
    }

    /// Runs `body` over every file under `root` whose name ends in `suffix`.
    func forEachFile(root: String, suffix: String,
                     _ body: @escaping @Sendable (DirectoryRun, Location, Int) throws -> UInt64) throws -> RunReport {
        var initial = RunReport()
        let tree = try Self.listFiles(root: root, report: &initial)
        let entries = tree.entries.filter { $0.relative.hasSuffix(suffix) }
        // Sealed sizes: within a fraction of a percent of the plaintext to come.
        progress?.total = entries.reduce(0) { $0 + $1.size }
        let report = LockedValue(initial)
        let options = self
        forEach(entries, bigFile: 8 << 20, report: report) { entry, threads in
            try body(options, Location(directory: try tree.directory(of: entry), entry: entry), threads)
        }
        return report.withValue { $0 }
    }

    /// Where a file sits in its run: the run (its file key) and the run's root, from the file's
    /// place and its authenticated object name.
    struct Membership: Hashable {
        let run: Int
        /// The run's root relative to the directory given, "" or ending in "/".
        let root: String
    }

    /// Runs `body` over the files of the directory's run (docs/FORMAT.md, "Directory runs").
    /// First every header is authenticated, which tells each file's run (file key) and root
    /// (its place less its object name); the run with the most files is the directory's run. Its
    /// files are then opened again, each checked to be of that run and at its object name.
    func forEachRunFile(root: String, identities: [Identity],
                        _ body: @escaping @Sendable (DirectoryRun, Location, ByteSource, OpenedFile, Int) throws -> UInt64) throws -> RunReport {
        var initial = RunReport()
        let tree = try Self.listFiles(root: root, report: &initial)
        let keys = UnwrappedKeyCache(identities: identities)
        var members: [(entry: Entry, membership: Membership)] = []
        for entry in tree.entries where entry.relative.hasSuffix(Self.suffix) {
            do {
                let directory = try tree.directory(of: entry)
                let source = try directory.openRegularFile(entry.name)
                defer { source.close() }
                let reading = try HeaderReading.read(from: source)
                let (fileKey, run) = try keys.fileKey(for: reading.header)
                let object = try reading.open(fileKey: fileKey).header.parameters.objectName
                members.append((entry, Membership(run: run, root: try Self.runRoot(of: entry, objectName: object))))
            } catch {
                initial.failures.append((entry.relative, error as? any CategorizedError ?? CofferError.readFailed(path: entry.relative, reason: "\(error)")))
            }
        }
        var sizes: [Membership: Int] = [:]
        for member in members { sizes[member.membership, default: 0] += 1 }
        let largest = sizes.values.max() ?? 0
        let leaders = sizes.filter { $0.value == largest }.map(\.key)
        let chosen = leaders.count == 1 ? leaders[0] : nil
        func describe(_ membership: Membership) -> String {
            "\(sizes[membership]!) file(s) rooted at '\(membership.root.isEmpty ? "." : String(membership.root.dropLast()))'"
        }
        var accepted: [Entry] = []
        for (entry, membership) in members {
            guard let chosen else {
                let runs = leaders.map(describe).sorted().joined(separator: "; ")
                initial.failures.append((entry.relative, CofferError.notInRun(
                    "the directory holds files of \(sizes.count) runs, the largest of equal size (\(runs)): decrypt each run's own directory")))
                continue
            }
            if membership == chosen {
                accepted.append(entry)
            } else if membership.run == chosen.run {
                let place = String(entry.relative.dropLast(Self.suffix.count))
                initial.failures.append((entry.relative, CofferError.objectMismatch(
                    expected: String(place.dropFirst(chosen.root.count)), found: String(place.dropFirst(membership.root.count)))))
            } else {
                initial.failures.append((entry.relative, CofferError.notInRun(
                    "it belongs to another run (another file key) than the directory's \(describe(chosen)); decrypt it on its own")))
            }
        }
        progress?.total = accepted.reduce(0) { $0 + $1.size }
        let report = LockedValue(initial)
        let options = self
        forEach(accepted, bigFile: 8 << 20, report: report) { entry, threads in
            let directory = try tree.directory(of: entry)
            let source = try directory.openRegularFile(entry.name)
            defer { source.close() }
            let reading = try HeaderReading.read(from: source)
            let (fileKey, run) = try keys.fileKey(for: reading.header)
            guard run == chosen!.run else {
                throw CofferError.notInRun("the file was replaced during the run by a file of another run")
            }
            let place = String(entry.relative.dropLast(Self.suffix.count))
            let opened = try reading.open(fileKey: fileKey, expectedObjectName: Array(place.dropFirst(chosen!.root.count).utf8))
            return try body(options, Location(directory: directory, entry: entry), source, opened, threads)
        }
        return report.withValue { $0 }
    }

    /// The run's root for a file found at `entry` whose object name is `objectName`: its place
    /// (`NAME.cof` ⇒ `NAME`) must be the object name, or end in "/" and the object name.
    static func runRoot(of entry: Entry, objectName: [UInt8]) throws -> String {
        let place = String(entry.relative.dropLast(suffix.count))
        guard !objectName.isEmpty else {
            throw CofferError.notInRun("it has no object name (it was encrypted on its own, not by a directory run); decrypt it on its own")
        }
        let placeBytes = Array(place.utf8)
        if placeBytes == objectName { return "" }
        if placeBytes.count > objectName.count + 1, placeBytes.suffix(objectName.count).elementsEqual(objectName),
           placeBytes[placeBytes.count - objectName.count - 1] == UInt8(ascii: "/") {
            return String(decoding: placeBytes.prefix(placeBytes.count - objectName.count), as: UTF8.self)
        }
        throw CofferError.objectMismatch(expected: place, found: String(decoding: objectName, as: UTF8.self))
    }

    // MARK: XtraBackup .xbcrypt

    public static let xbcryptSuffix = ".xbcrypt"
    /// Standard age files, as `coffer migrate --from age` finds them.
    public static let ageSuffix = ".age"

    /// True when the tree holds any `NAME.xbcrypt` (an XtraBackup target directory).
    public static func containsXbcrypt(root: String) throws -> Bool {
        var ignored = RunReport()
        return try listFiles(root: root, report: &ignored, pausing: false).entries.contains { $0.relative.hasSuffix(xbcryptSuffix) }
    }

    /// Decrypts every `NAME.xbcrypt` under `root` to `NAME`, like `xtrabackup --decrypt --parallel`
    /// (`NAME` may still be compressed: `t1.ibd.zst.xbcrypt` becomes `t1.ibd.zst`). Files whose
    /// chunks carry no integrity check (XBCRYP01/02) are listed in the report's warnings.
    /// With `decompress`, `NAME.zst.xbcrypt` (or `.lz4`, `.qp`) becomes `NAME` directly.
    public func decryptXbcrypt(root: String, key: SymmetricKey, decompress: Bool = false) throws -> RunReport {
        let unhashed = LockedValue<[String]>([])
        var report = try forEachFile(root: root, suffix: Self.xbcryptSuffix) { options, location, threads in
            let source = try location.directory.openRegularFile(location.entry.name)
            defer { source.close() }
            var outputName = String(location.entry.name.dropLast(Self.xbcryptSuffix.count))
            let decompressor = decompress ? Decompressor.forName(outputName) : nil
            if let decompressor { outputName = String(outputName.dropLast(decompressor.suffix.count)) }
            let outputPath = location.directory.child(outputName)
            let output = try AtomicOutputFile(directory: location.directory, name: outputName,
                                              mode: OutputMode.forNewFile(from: Self.mode(of: source)), overwrite: options.overwrite)
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
                unhashed.withValue { $0.append(location.entry.relative) }
            } else if options.removeOriginal {
                // Only originals whose decryption was checked go: with a wrong key, XBCRYP01/02
                // decrypt to garbage without any error, and removing them would lose the backup.
                try location.directory.removeOriginal(location.entry.name, expected: source.identity)
            }
            return summary.plaintextBytes
        }
        let kept = removeOriginal ? "; the original was kept" : ""
        for path in unhashed.withValue({ $0 }).sorted() {
            report.warnings.append((path, "XBCRYP01/02 chunks carry no integrity check: a wrong key or altered data cannot be detected\(kept)"))
        }
        return report
    }

    func decryptFile(_ location: Location, source: ByteSource, opened: OpenedFile, threads: Int,
                     signedBy verifiers: [SignatureVerifier]) throws -> UInt64 {
        let name = String(location.entry.name.dropLast(Self.suffix.count))
        let output: AtomicOutputFile
        do {
            output = try AtomicOutputFile(directory: location.directory, name: name,
                                          mode: OutputMode.forNewFile(from: Self.mode(of: source)), overwrite: overwrite)
        } catch let error as FileError {
            // Resuming: NAME may be an earlier run's complete output whose NAME.cof was not removed
            // yet. NAME.cof goes only when NAME holds exactly what it decrypts to.
            guard case .alreadyExists = error, removeOriginal else { throw error }
            let bytes = try VerifiedReplacement.existingPlaintextMatches(opened, source: source, in: location.directory,
                                                                         name: name, signedBy: verifiers, threads: threads)
            try location.directory.removeOriginal(location.entry.name, expected: source.identity)
            return bytes
        }
        let bytes = try output.complete { sink in
            try opened.decrypt(from: source, to: sink,
                               engine: StreamEngine(threads: threads, progress: progress?.engineCallback()),
                               signedBy: verifiers)
        }
        if removeOriginal { try location.directory.removeOriginal(location.entry.name, expected: source.identity) }
        return bytes
    }
}

/// Unwraps a run's file key once: files of one run carry identical stanzas.
/// Also tells runs apart: files with the same file key are of one run (a rewrap may have changed
/// some files' stanzas, never the file key), numbered in the order they were first seen.
final class UnwrappedKeyCache: @unchecked Sendable {
    private let identities: [Identity]
    private let lock = NSLock()
    private var known: [(stanzas: [Stanza], key: FileKey, run: Int)] = []
    private var runs: [[UInt8]] = []

    init(identities: [Identity]) { self.identities = identities }

    func fileKey(for header: Header) throws -> (key: FileKey, run: Int) {
        try lock.withLock {
            if let hit = known.first(where: { $0.stanzas == header.stanzas }) { return (hit.key, hit.run) }
            let key = try HeaderOpener.open(header, with: identities)
            let bytes = key.bytes
            let run = runs.firstIndex(of: bytes) ?? runs.count
            if run == runs.count { runs.append(bytes) }
            known.append((header.stanzas, key, run))
            return (key, run)
        }
    }
}
