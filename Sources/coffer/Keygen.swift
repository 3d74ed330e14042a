import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a key.",
        discussion: """
        --symmetric writes a random 256-bit key in Coffer's text form:
          # comment lines
          COFFER-SYMMETRIC-KEY-V1:<64 hex digits>
        The file is created with mode 0600 and is never overwritten unless --force. The key id, which
        encrypted files name in their header, is printed on standard error.
        """)

    @Flag(help: "A symmetric key (the only kind so far).")
    var symmetric = false

    @Option(name: .shortAndLong, help: ArgumentHelp("Key file to write (standard output when omitted).", valueName: "file"))
    var output: String?

    @Flag(help: "Replace an existing key file. The old key is gone for good: files made with it no longer open with this file.")
    var force = false

    func validate() throws {
        guard symmetric else { throw ValidationError("choose a key type: --symmetric") }
    }

    func run() throws {
        try Runtime.reporting {
            let key = SymmetricKeyFile.generate()
            let text = key.textEncoding()
            if let output, output != "-" {
                try AtomicOutputFile(path: output, mode: 0o600, overwrite: force).complete { sink in
                    try Array(text.utf8).withUnsafeBytes { try sink.write($0) }
                }
            } else {
                print(text, terminator: "")
            }
            Runtime.warn("key id: \(key.keyID)")
        }
    }
}
