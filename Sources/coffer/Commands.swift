import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Standard output, or a file written atomically.
struct Output {
    let sink: ByteSink
    let file: AtomicOutputFile?

    /// `path` nil or "-" is standard output. A file gets the input file's permission bits (0600 from a pipe).
    static func open(path: String?, input: ByteSource, force: Bool, binary: Bool) throws -> Output {
        guard let path, path != "-" else {
            if binary && isatty(1) == 1 {
                throw CofferError.refused("refusing to write binary ciphertext to a terminal: use -o FILE or redirect standard output")
            }
            return Output(sink: FileDescriptorSink(fd: 1, path: "standard output"), file: nil)
        }
        var mode: mode_t = 0o600
        var st = stat()
        if input.regularFileSize != nil, fstat(input.fd, &st) == 0 { mode = st.st_mode & 0o777 }
        let file = try AtomicOutputFile(path: path, mode: mode, overwrite: force)
        return Output(sink: file.sink, file: file)
    }

    func commit() throws { try file?.commit() }
    func discard() { file?.discard() }
}

func printReport(_ report: RunReport, verb: String, quiet: Bool) {
    for (path, error) in report.failures { Runtime.warn("error: \(path): \(error)") }
    if !quiet {
        for (path, reason) in report.skipped { Runtime.warn("skipped \(path): \(reason)") }
        Runtime.warn("\(verb) \(report.completed.count) files (\(ProgressLine.bytes(report.plaintextBytes))), \(report.failures.count) failed, \(report.skipped.count) skipped")
    }
}

/// The exit code of a directory run: that of the first failure's kind, 0 when none failed.
func exitIfFailed(_ report: RunReport) throws {
    if let first = report.failures.first { throw ExitCode(Runtime.exitCode(for: first.error)) }
}

struct Encrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encrypt a file, a stream, or every file in a directory tree.",
        discussion: """
        Reads IN (standard input when omitted or '-') and writes OUT (standard output when omitted or
        '-'). A file output is written under a temporary name and appears under its name only when
        complete. Several keys may be given: any one of them opens the file.

        With --recursive, every regular file NAME under the directory IN is encrypted to NAME.cof in
        parallel (like 'xtrabackup --encrypt'); all files share one wrapped key, so a passphrase is
        stretched once, and each file is bound to its relative path.

        Examples:
          coffer keygen --symmetric -o backup.key
          coffer encrypt --key-file backup.key -o dump.sql.cof dump.sql
          pg_dump mydb | coffer encrypt --key-file backup.key > mydb.sql.cof
          coffer encrypt --key-file backup.key --recursive --remove-original /data/backup
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var engine: EngineOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file ('-' for standard output).", valueName: "out"))
    var output: String?

    @Option(help: ArgumentHelp("Payload cipher: aes-256-gcm (default) or chacha20-poly1305.", valueName: "name"))
    var cipher: String = PayloadCipher.aes256gcm.rawValue

    @Option(help: ArgumentHelp("Plaintext bytes per chunk, 4K...16M, with K/M suffixes (default 1M).", valueName: "size"))
    var chunkSize: String = "1M"

    @Option(help: ArgumentHelp("scrypt work factor log2(N) for a passphrase, \(Passphrase.minWorkFactor)...\(Passphrase.maxWorkFactor) (default \(Passphrase.defaultWorkFactor), about a second).",
                               valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Flag(help: "IN is a directory: encrypt every regular file NAME in it to NAME.cof.")
    var recursive = false

    @Flag(help: "With --recursive: delete each original once its encrypted copy is complete, flushed and verified.")
    var removeOriginal = false

    @Flag(help: "Replace an existing output file.")
    var force = false

    @Argument(help: ArgumentHelp("Input file or, with --recursive, directory ('-' or omitted: standard input).", valueName: "in"))
    var input: String?

    func validate() throws {
        guard PayloadCipher(rawValue: cipher) != nil else {
            throw ValidationError("--cipher must be one of: \(PayloadCipher.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let size = parseSize(chunkSize) else { throw ValidationError("--chunk-size '\(chunkSize)' is not a size such as 64K or 1M") }
        guard (Limits.minChunkSize...Limits.maxChunkSize).contains(size) else {
            throw ValidationError("--chunk-size must be between 4K and 16M, got \(chunkSize)")
        }
        if recursive {
            guard input != nil, input != "-" else { throw ValidationError("--recursive needs a directory") }
            guard output == nil else { throw ValidationError("--recursive writes NAME.cof beside each file; -o does not apply") }
        } else if removeOriginal {
            throw ValidationError("--remove-original only applies with --recursive")
        }
    }

    func run() throws {
        try Runtime.reporting {
            let parameters = HeaderParameters(cipher: PayloadCipher(rawValue: cipher)!, chunkSize: parseSize(chunkSize)!)
            try parameters.validate()
            let encryptor = try CofferEncryptor(recipients: try keys.recipients(workFactor: workFactor))
            if recursive {
                let progress = ProgressLine(total: nil, quiet: engine.quiet)
                let run = DirectoryRun(threads: engine.threads, removeOriginal: removeOriginal, progress: progress.counter)
                let report = try run.encrypt(root: input!, encryptor: encryptor, parameters: parameters)
                progress.stop()
                printReport(report, verb: "encrypted", quiet: engine.quiet)
                try exitIfFailed(report)
                return
            }
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let out = try Output.open(path: output, input: source, force: force, binary: true)
            let progress = ProgressLine(total: source.regularFileSize, quiet: engine.quiet)
            defer { progress.stop() }
            do {
                _ = try encryptor.encrypt(from: source, to: out.sink, parameters: parameters,
                                          engine: StreamEngine(threads: engine.threads, progress: progress.callback))
                try out.commit()
            } catch {
                out.discard()
                throw error
            }
        }
    }
}

struct Decrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decrypt a file, a stream, a byte range, or every .cof file in a directory tree.",
        discussion: """
        Only authenticated plaintext is ever written. To a file (-o), output appears under its name
        only after every chunk authenticated; on failure no output file is left. On standard output,
        plaintext already written before a failure cannot be taken back (the exit code is non-zero):
        for untrusted input use -o, or run 'coffer verify' first.

        --offset/--length decrypt part of a file, reading only the chunks that hold it (and the final
        chunk, which proves the file's length).

        With --recursive, every NAME.cof under the directory IN is decrypted to NAME in parallel
        (like 'xtrabackup --decrypt --parallel'); a file of an encrypted directory found under
        another name than the one it was encrypted as is refused.
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var engine: EngineOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file ('-' for standard output).", valueName: "out"))
    var output: String?

    @Option(help: ArgumentHelp("Start of the plaintext byte range to decrypt.", valueName: "bytes"))
    var offset: UInt64?

    @Option(help: ArgumentHelp("Length of the plaintext byte range (default: to the end).", valueName: "bytes"))
    var length: UInt64?

    @Flag(help: "IN is a directory: decrypt every NAME.cof in it to NAME.")
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
            if recursive {
                let progress = ProgressLine(total: nil, quiet: engine.quiet)
                let run = DirectoryRun(threads: engine.threads, removeOriginal: removeOriginal, progress: progress.counter)
                let report = try run.decrypt(root: input!, identities: try keys.identities(for: nil))
                progress.stop()
                printReport(report, verb: "decrypted", quiet: engine.quiet)
                try exitIfFailed(report)
                return
            }
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let reading = try HeaderReading.read(from: source)
            let opened = try reading.open(with: try keys.identities(for: reading.header))
            let out = try Output.open(path: output, input: source, force: force, binary: false)
            let total = try? source.regularFileSize.map { try opened.layout(fileSize: $0).plaintextSize }
            let progress = ProgressLine(total: (offset != nil || length != nil) ? length : total ?? nil, quiet: engine.quiet)
            defer { progress.stop() }
            let streamEngine = StreamEngine(threads: engine.threads, progress: progress.callback)
            do {
                if offset != nil || length != nil {
                    _ = try opened.decryptRange(from: source, offset: offset ?? 0, length: length ?? UInt64.max,
                                                to: out.sink, engine: streamEngine)
                } else {
                    _ = try opened.decrypt(from: source, to: out.sink, engine: streamEngine)
                }
                try out.commit()
            } catch {
                out.discard()
                throw error
            }
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Authenticate every byte of an encrypted file without writing any plaintext.",
        discussion: "Exit status 0 only if the header and every chunk authenticate with a given key.")

    @OptionGroup var keys: KeyOptions
    @OptionGroup var engine: EngineOptions

    @Argument(help: ArgumentHelp("Encrypted file ('-' or omitted: standard input).", valueName: "file"))
    var input: String?

    func run() throws {
        try Runtime.reporting {
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let reading = try HeaderReading.read(from: source)
            let opened = try reading.open(with: try keys.identities(for: reading.header))
            let progress = ProgressLine(total: nil, quiet: engine.quiet)
            let bytes = try opened.decrypt(from: source, to: DiscardingSink(),
                                           engine: StreamEngine(threads: engine.threads, progress: progress.callback))
            progress.stop()
            if !engine.quiet {
                Runtime.warn("OK: \(input ?? "standard input"): \(bytes) bytes authenticated")
            }
        }
    }
}
