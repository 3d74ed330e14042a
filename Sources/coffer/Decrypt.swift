import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
                let identities = try keys.identities(for: nil)
                try runDirectory(engine: engine, removeOriginal: removeOriginal, verb: "decrypted") { run in
                    try run.decrypt(root: input!, identities: identities)
                }
                return
            }
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let reading = try HeaderReading.read(from: source)
            let opened = try reading.open(with: try keys.identities(for: reading.header))
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
                                                to: sink, engine: streamEngine)
                } else {
                    _ = try opened.decrypt(from: source, to: sink, engine: streamEngine)
                }
            }
        }
    }
}
