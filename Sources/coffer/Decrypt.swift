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
        Coffer files, standard age files (binary or armored, with -i identity files or a passphrase)
        and XtraBackup .xbcrypt files are recognised by their first bytes.

        Only authenticated plaintext is ever written. To a file (-o), output appears under its name
        only after every chunk authenticated; on failure no output file is left. On standard output,
        plaintext already written before a failure cannot be taken back (the exit code is non-zero):
        for untrusted input use -o, or run 'coffer verify' first.

        --offset/--length decrypt part of a file, reading only the chunks that hold it (and the final
        chunk, which proves the file's length).

        With --recursive, every NAME.cof under the directory IN is decrypted to NAME in parallel
        (like 'xtrabackup --decrypt --parallel'); a file of an encrypted directory found under
        another name than the one it was encrypted as is refused, and so is a file of another run
        or one encrypted on its own: only one run is decrypted (docs/FORMAT.md, "Directory runs"),
        from its own directory or any directory above it. Outputs get the .cof file's permission
        bits less the umask, never setuid, setgid or sticky; symbolic links are never followed.

        --signed-by PUB requires a producer signature by that key (any one of several given): an
        unsigned file, another signer or a file altered after signing is refused. An unsigned file
        or a wrong signer is refused before any output; an altered payload is found as it is read.
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
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let firstBytes = try source.peek(AgeFile.sniffLength)
            if Xbcrypt.looksLikeXbcrypt(firstBytes) {
                try signers.refuseUnsignedFormat(".xbcrypt")
                try decryptXbcrypt(source)
                return
            }
            if let kind = AgeFile.kind(of: firstBytes) {
                try decryptAge(source, kind: kind)
                return
            }
            let reading = try HeaderReading.read(from: source)
            let opened = try reading.open(with: try keys.identities(for: reading.header))
            let verifiers = try signers.verifiers()
            for damaged in reading.damagedSlots {
                Runtime.warn("warning: header slot \(damaged.slot + 1) is damaged (\(damaged.reason)); the other slot authenticated. 'coffer verify' reports this as an error")
            }
            let out = try Output.open(path: output, input: source, force: force, binary: false)
            let payloadSize = opened.plaintextSize(of: source)
            let isRange = offset != nil || length != nil
            let rangeSize = payloadSize.map { min(length ?? .max, $0 - min($0, offset ?? 0)) }
            let progress = ProgressLine(total: isRange ? rangeSize : payloadSize, quiet: engine.quiet)
            defer { progress.stop() }
            let streamEngine = StreamEngine(threads: engine.threads, progress: progress.callback)
            try out.complete { sink in
                if isRange {
                    _ = try opened.decryptRange(from: source, offset: offset ?? 0, length: length ?? UInt64.max,
                                                to: sink, engine: streamEngine, signedBy: verifiers)
                } else {
                    _ = try opened.decrypt(from: source, to: sink, engine: streamEngine, signedBy: verifiers)
                }
            }
        }
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
