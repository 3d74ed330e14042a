import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Encrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encrypt a file, a stream, or every file in a directory tree.",
        discussion: """
        Reads IN (standard input when omitted or '-') and writes OUT (standard output when omitted or \
        '-'). A file output is written under a temporary name and appears under its name only when \
        complete. Several keys may be given: any one of them opens the file.

        With --recursive, every regular file NAME under the directory IN is encrypted to NAME.cof in \
        parallel (like 'xtrabackup --encrypt'); all files share one wrapped key, so a passphrase is \
        stretched once, and each file is bound to its relative path.

        Examples:
          coffer keygen --symmetric -o backup.key
          coffer encrypt --key-file backup.key -o dump.sql.cof dump.sql
          pg_dump mydb | coffer encrypt --key-file backup.key > mydb.sql.cof
          coffer encrypt --key-file backup.key --recursive --remove-original /data/backup
          coffer encrypt -r backup-host.pub --sign producer.key -o db.cof db.dump

        --sign adds a producer signature (docs/FORMAT.md, "Signatures"): restorers check it with \
        'coffer decrypt|verify --signed-by producer.pub'. Recipients alone prove nothing about who \
        made a file: anyone holding a public key can encrypt to it.
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var publicKeys: RecipientOptions
    @OptionGroup var signing: SignOptions
    @OptionGroup var engine: EngineOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file ('-' for standard output).", valueName: "out"))
    var output: String?

    @Option(help: ArgumentHelp("Payload cipher: aes-256-gcm or chacha20-poly1305.", valueName: "name"))
    var cipher: String = PayloadCipher.aes256gcm.rawValue

    @Option(help: ArgumentHelp("Plaintext bytes per chunk, 4K...16M, with K/M suffixes.", valueName: "size"))
    var chunkSize: String = "1M"

    @Option(help: ArgumentHelp("scrypt work factor log2(N) for a passphrase, \(Passphrase.minWorkFactor)...\(Passphrase.maxWorkFactor) (the default takes about a second).",
                               valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Option(help: ArgumentHelp("Bytes reserved for each of the two header slots, e.g. 8K (default: twice the header plus 1K, in whole KiB): room for recipients that 'coffer rewrap' adds later.",
                               valueName: "size"))
    var headerSpace: String?

    @Option(help: .hidden)
    var fileVersion: Int = 2

    @Option(help: ArgumentHelp("Output format: coffer or age (a standard age v1 file that 'age -d' opens: X25519, post-quantum, ssh-ed25519 or passphrase recipients).",
                               valueName: "format"))
    var format: String = "coffer"

    @Flag(help: "With --format age: write ASCII armor (PEM-style text, like 'age --armor').")
    var armor = false

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
        if let headerSpace {
            guard let size = parseSize(headerSpace), (HeaderLayout.minSlotSize...Limits.maxHeaderSize).contains(size) else {
                throw ValidationError("--header-space must be a size from 512 to 256K, got \(headerSpace)")
            }
        }
        guard fileVersion == 1 || fileVersion == 2 else { throw ValidationError("--file-version must be 1 or 2") }
        if fileVersion == 1 && signing.sign != nil { throw ValidationError("--sign needs file version 2") }
        guard format == "coffer" || format == "age" else { throw ValidationError("--format must be coffer or age") }
        if format == "age" {
            guard !recursive else { throw ValidationError("--format age encrypts one file or stream; --recursive writes Coffer files") }
            guard signing.sign == nil else { throw ValidationError("age files carry no signature; --sign needs --format coffer") }
            guard cipher == PayloadCipher.aes256gcm.rawValue, chunkSize == "1M", headerSpace == nil, fileVersion == 2 else {
                throw ValidationError("--cipher, --chunk-size and --header-space do not apply to --format age: age files are ChaCha20-Poly1305 in 64 KiB chunks")
            }
        } else if armor {
            throw ValidationError("--armor applies to --format age")
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
            if format == "age" { return try encryptAge() }
            let parameters = HeaderParameters(cipher: PayloadCipher(rawValue: cipher)!, chunkSize: parseSize(chunkSize)!)
            try parameters.validate()
            let recipients = try keys.recipients(workFactor: workFactor, publicKeys: try publicKeys.publicKeys())
            var encryptor = try CofferEncryptor(recipients: recipients)
            // Version 1 stays writable (hidden) for the tests that keep its tamper matrix.
            encryptor.version = fileVersion == 1 ? .v1 : .v2(slotSize: headerSpace.flatMap(parseSize))
            encryptor.signer = try signing.signer(keys: keys)
            encryptor.signatureDigest = signing.digest
            if recursive {
                try runDirectory(engine: engine, removeOriginal: removeOriginal, force: force, verb: "encrypted") { run in
                    // The keys that can also decrypt (key files, a passphrase) let a re-run after an
                    // interruption check an earlier run's NAME.cof before removing NAME.
                    try run.encrypt(root: input!, encryptor: encryptor, parameters: parameters,
                                    identities: recipients.compactMap { $0 as? Identity })
                }
                return
            }
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            let out = try Output.open(path: output, input: source, force: force, binary: true)
            let progress = ProgressLine(total: source.regularFileSize, quiet: engine.quiet)
            defer { progress.stop() }
            try out.complete { sink in
                _ = try encryptor.encrypt(from: source, to: sink, parameters: parameters,
                                          engine: StreamEngine(threads: engine.threads, progress: progress.callback))
            }
        }
    }

    /// A standard age v1 file: ChaCha20-Poly1305 in 64 KiB chunks, sealed in parallel.
    func encryptAge() throws {
        // age's own default work factor, which its readers accept.
        let factor = workFactor == Passphrase.defaultWorkFactor ? AgeScrypt.defaultWorkFactor : workFactor
        let encryptor = try AgeFile.Encryptor(recipients: try keys.ageRecipients(workFactor: factor, publicKeys: try publicKeys.publicKeys()),
                                              armor: armor)
        let source = try ByteSource.open(path: input ?? "-")
        defer { source.close() }
        let out = try Output.open(path: output, input: source, force: force, binary: !armor)
        let progress = ProgressLine(total: source.regularFileSize, quiet: engine.quiet)
        defer { progress.stop() }
        try out.complete { sink in
            _ = try encryptor.encrypt(from: source, to: sink, engine: StreamEngine(threads: engine.threads, progress: progress.callback))
        }
    }
}
