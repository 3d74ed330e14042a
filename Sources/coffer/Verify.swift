import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
            let progress = ProgressLine(total: opened.plaintextSize(of: source), quiet: engine.quiet)
            let bytes = try opened.decrypt(from: source, to: DiscardingSink(),
                                           engine: StreamEngine(threads: engine.threads, progress: progress.callback))
            progress.stop()
            if !engine.quiet {
                Runtime.warn("OK: \(input ?? "standard input"): \(bytes) bytes authenticated")
            }
        }
    }
}
