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
                throw UsageError("refusing to write binary ciphertext to a terminal: use -o FILE or redirect standard output")
            }
            return Output(sink: FileDescriptorSink(fd: 1, path: "standard output"), file: nil)
        }
        var mode: mode_t = 0o600
        var st = stat()
        if input.regularFileSize != nil, fstat(input.fd, &st) == 0 { mode = st.st_mode & 0o777 }
        let file = try AtomicOutputFile(path: path, mode: mode, overwrite: force)
        return Output(sink: file.sink, file: file)
    }

    /// Runs `body` with the sink; a file output is committed, or removed when `body` fails.
    func complete(_ body: (ByteSink) throws -> Void) throws {
        guard let file else { return try body(sink) }
        try file.complete { try body($0) }
    }
}

/// Runs `body` over a directory with a progress line, prints its report (each failure, and a
/// summary unless quiet), and exits with the first failure's code when any file failed.
func runDirectory(engine: EngineOptions, removeOriginal: Bool, force: Bool = false, verb: String,
                  _ body: (DirectoryRun) throws -> RunReport) throws {
    let progress = ProgressLine(total: nil, quiet: engine.quiet)
    let report = try body(DirectoryRun(threads: engine.threads, removeOriginal: removeOriginal, overwrite: force,
                                       progress: progress.counter))
    progress.stop()
    for (path, error) in report.failures { Runtime.warn("error: \(path): \(error)\(CommandHints.hint(for: error))") }
    for (path, message) in report.warnings { Runtime.warn("warning: \(path): \(message)") }
    if !engine.quiet {
        for (path, reason) in report.skipped { Runtime.warn("skipped \(path): \(reason)") }
        Runtime.warn("\(verb) \(counted(report.completed.count, "file")) (\(ProgressLine.bytes(report.plaintextBytes))), \(report.failures.count) failed, \(report.skipped.count) skipped")
    }
    if let first = report.failures.first { throw ExitCode(Runtime.exitCode(for: first.error)) }
}

/// What the command line adds to a library error: the flag that changes the outcome (library
/// messages never name flags).
enum CommandHints {
    static func hint(for error: any CategorizedError) -> String {
        switch error {
        case FileError.alreadyExists: return " (pass --force to replace it)"
        case FileError.toolUnavailable: return " (or decrypt without --decompress)"
        case CofferError.readFailed(_, "is a directory"): return " (use --recursive)"
        case CofferError.headerSpaceExhausted:
            return " (use 'coffer reencrypt', which writes a new file, with --header-space to reserve more)"
        case KeyError.refused(let reason) where reason.contains("needs a new file (re-encrypt it"):
            return " ('coffer reencrypt --sign')"
        case AccessError.signerNotAccepted: return " (--signed-by)"
        case CofferError.invalidParameter(let reason) where reason.hasPrefix("a byte range"): return " (--offset/--length)"
        default: return KeyHints.hint(for: error)
        }
    }
}
