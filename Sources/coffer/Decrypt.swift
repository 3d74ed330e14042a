import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Decrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decrypt a file, a stream, a byte range, or every .cof file in a directory tree.",
        discussion: """
        Coffer files, standard age files (binary or armored, with -i identity files or a passphrase) \
        and XtraBackup .xbcrypt files are recognised by their first bytes.

        Only authenticated plaintext is ever written. To a file (-o), output appears under its name \
        only after every chunk authenticated; on failure no output file is left. On standard output, \
        plaintext already written before a failure cannot be taken back (the exit code is non-zero): \
        for untrusted input use -o, or run 'coffer verify' first.

        --offset/--length decrypt part of a file, reading only the chunks that hold it (and the final \
        chunk, which proves the file's length).

        With --recursive, every NAME.cof under the directory IN is decrypted to NAME in parallel \
        (like 'xtrabackup --decrypt --parallel'); a file of an encrypted directory found under \
        another name than the one it was encrypted as is refused, and so is a file of another run \
        or one encrypted on its own: only one run is decrypted (docs/FORMAT.md, "Directory runs"), \
        from its own directory or any directory above it. Outputs get the .cof file's permission \
        bits less the umask, never setuid, setgid or sticky; symbolic links are never followed.

        --signed-by PUB requires a producer signature by that key (any one of several given): an \
        unsigned file, another signer or a file altered after signing is refused, before any \
        plaintext is written: to standard output, the whole signature is checked first (a pass that \
        hashes the ciphertext; with chunk-tags, one that authenticates every chunk), then again as \
        the chunks are decrypted; input from a pipe is first \
        copied to an unlinked temporary file in $TMPDIR (ciphertext only) so that it can be. With -o, \
        the output file appears only once everything checked, so one pass does both.

        Without --signed-by a signature is not checked (the file key still authenticates every \
        byte); a damaged signature trailer is reported as a warning ('coffer verify' fails on it).
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SignedByOptions
    @OptionGroup var engine: EngineOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file ('-' for standard output).", valueName: "out"))
    var output: String?

    @Option(help: ArgumentHelp("Start of the plaintext byte range to decrypt.", valueName: "bytes"))
    var offset: UInt64?

    @Option(help: ArgumentHelp("Length of the plaintext byte range (default: to the end).", valueName: "bytes"))
    var length: UInt64?

    @Option(help: ArgumentHelp("Accepted for XtraBackup compatibility (AES128, AES192, AES256); as in xbcrypt, the key's length picks the AES size.",
                               valueName: "algo"))
    var encryptAlgo: String?

    @Flag(help: "With --recursive on an XtraBackup directory: NAME.zst.xbcrypt (or .lz4, .qp) becomes NAME, through the zstd/lz4/qpress command.")
    var decompress = false

    @Flag(help: "IN is a directory: decrypt every NAME.cof in it to NAME (in an XtraBackup target directory, every NAME.xbcrypt).")
    var recursive = false

    @Flag(help: "With --recursive: delete each .cof file once its plaintext is complete and flushed.")
    var removeOriginal = false

    @Flag(help: "Replace an existing output file.")
    var force = false

    @Argument(help: ArgumentHelp("Encrypted file or, with --recursive, directory ('-' or omitted: standard input).", valueName: "in"))
    var input: String?

    func validate() throws {
        if recursive {
            guard input != nil, input != "-" else { throw ValidationError("--recursive needs a directory") }
            guard output == nil, offset == nil, length == nil else {
                throw ValidationError("--recursive writes NAME beside each NAME.cof; -o, --offset and --length do not apply")
            }
        } else if removeOriginal {
            throw ValidationError("--remove-original only applies with --recursive")
        }
    }

    func run() throws {
        try Runtime.reporting {
            if recursive, try DirectoryRun.containsXbcrypt(root: input!) {
                try signers.refuseUnsignedFormat(".xbcrypt")
                // An XtraBackup target directory: its key is used raw, as xbcrypt does.
                let (raw, keySource) = try keys.xbcryptKey()
                let key = try Xbcrypt.key(raw, source: keySource)
                try runDirectory(engine: engine, removeOriginal: removeOriginal, force: force, verb: "decrypted") { run in
                    try run.decryptXbcrypt(root: input!, key: key, decompress: decompress)
                }
                return
            }
            if recursive {
                let identities = try keys.identities(for: nil)
                let verifiers = try signers.verifiers()
                try runDirectory(engine: engine, removeOriginal: removeOriginal, force: force, verb: "decrypted") { run in
                    try run.decrypt(root: input!, identities: identities, signedBy: verifiers)
                }
                return
            }
            var source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let toStandardOutput = output == nil || output == "-"
            if !signers.signedBy.isEmpty, toStandardOutput, source.regularFileSize == nil {
                // No plaintext may reach a pipe before the signature checked, and that needs the
                // whole ciphertext first: it is copied to an unlinked file, then read from there.
                source = try Self.spool(source)
            }
            switch try FormatDetector.detect(source) {
            case .xbcrypt:
                try signers.refuseUnsignedFormat(".xbcrypt")
                return try decryptXbcrypt(source)
            case .age(let armored):
                return try decryptAge(source, kind: armored ? .armored : .binary)
            case .other(let hint):
                throw CofferError.notCofferFile(hint: hint)
            case .coffer:
                break
            }
            let file = try FileDecryption(source: source, keys: try keys.keyCandidates())
            let verifiers = try signers.verifiers()
            for damaged in file.reading.damagedSlots {
                Runtime.warn("warning: header slot \(damaged.slot + 1) is damaged (\(damaged.reason)); the other slot authenticated. 'coffer verify' reports this as an error")
            }
            let out = try Output.open(path: output, input: source, force: force, binary: false)
            let isRange = offset != nil || length != nil
            let progress = ProgressLine(total: isRange ? file.rangeSize(offset: offset, length: length) : file.plaintextSize,
                                        quiet: engine.quiet)
            defer { progress.stop() }
            let streamEngine = StreamEngine(threads: engine.threads, progress: progress.callback)
            try out.complete { sink in
                // To a file, nothing is published before the end: no separate signature pass.
                _ = try file.decrypt(to: sink, engine: streamEngine, offset: offset, length: length,
                                     signedBy: verifiers, signatureFirst: toStandardOutput)
            }
            if verifiers.isEmpty, !isRange, let damage = try file.unverifiedTrailer()?.structuralDamage {
                Runtime.warn("warning: the signature trailer is damaged (\(damage)); the plaintext authenticated under the file key, but the signature is lost. 'coffer verify' reports this as an error")
            }
        }
    }

    /// Copies a non-seekable input to an unlinked temporary file in $TMPDIR (mode 0600) and
    /// returns a source reading it from the start. Only ciphertext is written there.
    static func spool(_ input: ByteSource) throws -> ByteSource {
        let directory = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(directory)/.coffer-spool-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard fd >= 0 else {
            throw CofferError.writeFailed(path: path, reason: "cannot create a temporary file to check the signature before output: \(String(cString: strerror(errno)))")
        }
        unlink(path)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let sink = FileDescriptorSink(fd: fd, path: "temporary copy of the input in \(directory)")
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        do {
            while true {
                let n = try buffer.withUnsafeMutableBytes { try input.readFully(into: $0) }
                if n == 0 { break }
                try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                if n < buffer.count { break }
            }
        } catch {
            close(fd)
            throw error
        }
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            close(fd)
            throw CofferError.readFailed(path: path, reason: String(cString: strerror(errno)))
        }
        input.close()
        return ByteSource(fd: fd, path: input.path)
    }

    /// A standard age file, binary or armored: opened with age identities (-i) or a passphrase.
    func decryptAge(_ source: ByteSource, kind: AgeFile.Kind) throws {
        guard offset == nil && length == nil else {
            throw CofferError.invalidParameter("--offset/--length need a Coffer file; use them after 'coffer migrate --from age'")
        }
        try signers.refuseUnsignedFormat("age")
        let identities = try keys.ageIdentities()
        let out = try Output.open(path: output, input: source, force: force, binary: false)
        let progress = ProgressLine(total: nil, quiet: engine.quiet)
        defer { progress.stop() }
        try out.complete { sink in
            _ = try AgeFile.decrypt(from: source, kind: kind, identities: identities, to: sink,
                                    threads: engine.threads, progress: progress.callback)
        }
    }

    /// XtraBackup's .xbcrypt: decrypted for restoring and migrating, with a plain statement of what
    /// the format cannot prove.
    func decryptXbcrypt(_ source: ByteSource) throws {
        guard offset == nil && length == nil else {
            throw CofferError.invalidParameter("--offset/--length need a Coffer file; .xbcrypt files have no random access")
        }
        let (raw, keySource) = try keys.xbcryptKey()
        let key = try Xbcrypt.key(raw, source: keySource)
        if let encryptAlgo {
            let bits = ["AES128": 128, "AES192": 192, "AES256": 256][encryptAlgo.uppercased()]
            guard let bits else { throw CofferError.invalidParameter("--encrypt-algo must be AES128, AES192 or AES256") }
            if bits != raw.count * 8 {
                Runtime.warn("warning: --encrypt-algo=\(encryptAlgo), but the key is \(raw.count) bytes: AES-\(raw.count * 8) is used, as xbcrypt does")
            }
        }
        let out = try Output.open(path: output, input: source, force: force, binary: false)
        let progress = ProgressLine(total: source.regularFileSize, quiet: engine.quiet)
        defer { progress.stop() }
        var summary = Xbcrypt.Summary()
        try out.complete { sink in
            summary = try Xbcrypt.decrypt(from: source, to: sink, key: key, threads: engine.threads, progress: progress.callback)
        }
        progress.stop()
        if !summary.everyChunkHashed {
            Runtime.warn("warning: this .xbcrypt file has XBCRYP0\(summary.oldestVersion!.rawValue) chunks, which carry no integrity check: a wrong key or altered data cannot be detected. Check the restored data, and migrate to Coffer.")
        } else if !engine.quiet {
            Runtime.warn("note: every xbcrypt chunk matched its SHA-256, but .xbcrypt is not authenticated: dropped, reordered or forged chunks cannot be detected. Migrate to Coffer.")
        }
    }
}
