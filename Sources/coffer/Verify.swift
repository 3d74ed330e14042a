import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Authenticate every byte of an encrypted file, or of every .cof file in a tree, writing no plaintext.",
        discussion: """
        Exit status 0 only if every header and every chunk authenticate with a given key.

        Without --signed-by, a signed file's signature is not checked (no public key is given): \
        verify says so ("signed by KEYID, not checked") and fails on a damaged trailer (one that \
        holds no signature, or a zeroed key id or signature).

        --signed-by PUB also requires a producer signature by that key (any one of several given). \
        Given --signed-by and no key at all, only the signature is checked: the ciphertext is hashed \
        without being decrypted, which proves the file is byte for byte what the signer wrote, on a \
        host that holds no decryption key (a storage server, say).
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SignedByOptions
    @OptionGroup var engine: EngineOptions

    @Flag(help: "FILE is a directory: authenticate every NAME.cof in it, and that each was encrypted as NAME.")
    var recursive = false

    @Argument(help: ArgumentHelp("Encrypted file or, with --recursive, directory ('-' or omitted: standard input).",
                                 valueName: "file"))
    var input: String?

    func validate() throws {
        if recursive && (input == nil || input == "-") { throw ValidationError("--recursive needs a directory") }
    }

    func run() throws {
        try Runtime.reporting {
            if recursive {
                let identities = try keys.identities(for: nil)
                let verifiers = try signers.verifiers()
                try runDirectory(engine: engine, removeOriginal: false, verb: "verified") { run in
                    try run.verify(root: input!, identities: identities, signedBy: verifiers)
                }
                return
            }
            let source = try ByteSource.open(path: input ?? "-")
            defer { source.close() }
            switch try FormatDetector.detect(source) {
            case .age(let armored):
                // A standard age file: every chunk authenticated, nothing written.
                try signers.refuseUnsignedFormat("age")
                let bytes = try AgeFile.decrypt(from: source, kind: armored ? .armored : .binary,
                                                identities: try keys.ageIdentities(), to: DiscardingSink(), threads: engine.threads)
                if !engine.quiet { Runtime.warn("OK: \(input ?? "standard input"): age file, \(counted(bytes, "byte")) authenticated") }
                return
            case .xbcrypt:
                try signers.refuseUnsignedFormat(".xbcrypt")
                // What can be checked of an .xbcrypt file: each chunk's CRC-32, and v3's SHA-256.
                let key = try Xbcrypt.key(try keys.xbcryptKey().bytes, source: input ?? "standard input")
                let summary = try Xbcrypt.decrypt(from: source, to: DiscardingSink(), key: key, threads: engine.threads)
                guard summary.everyChunkHashed else {
                    throw KeyError.refused(
                        "\(input ?? "standard input"): XBCRYP0\(summary.oldestVersion!.rawValue) chunks carry no integrity check: neither the key nor the data can be verified (CRC-32s matched)")
                }
                if !engine.quiet {
                    Runtime.warn("OK: \(input ?? "standard input"): \(counted(summary.plaintextBytes, "byte")), every chunk's CRC-32 and SHA-256 matched (.xbcrypt is not authenticated: dropped or reordered chunks cannot be detected)")
                }
                return
            case .other(let hint):
                throw CofferError.notCofferFile(hint: hint)
            case .coffer:
                break
            }
            let reading = try HeaderReading.read(from: source)
            let verifiers = try signers.verifiers()
            if !verifiers.isEmpty && !keys.anyKeyGiven {
                let progress = ProgressLine(total: source.regularFileSize, quiet: engine.quiet)
                let signer = try reading.verifySignature(in: source, verifiers: verifiers,
                                                         engine: StreamEngine(threads: engine.threads, progress: progress.callback))
                progress.stop()
                if !engine.quiet {
                    if reading.header.parameters.signature?.digest == .chunkTags {
                        // The tags bind the ciphertext only for someone who holds the key.
                        Runtime.warn("OK: \(input ?? "standard input"): signed by \(signer.label); the chunk tags are as signed, but with chunk-tags the ciphertext is proven only once a key authenticates it (not decrypted: no key given)")
                    } else {
                        Runtime.warn("OK: \(input ?? "standard input"): signed by \(signer.label); the ciphertext is as signed (not decrypted: no key given)")
                    }
                }
                return
            }
            let file = try FileDecryption(reading: reading, source: source, keys: try keys.keyCandidates())
            let progress = ProgressLine(total: file.plaintextSize, quiet: engine.quiet)
            let bytes = try file.decrypt(to: DiscardingSink(), engine: StreamEngine(threads: engine.threads, progress: progress.callback),
                                         signedBy: verifiers, signatureFirst: false)  // nothing is output
            progress.stop()
            if let damaged = reading.damagedSlots.first {
                // The payload and the header in use are authentic, but the file is not as written.
                throw CofferError.malformedHeader(
                    "header slot \(damaged.slot + 1) is damaged (\(damaged.reason)); the payload and the header in use authenticated. An interrupted 'coffer rewrap' leaves this; running it again repairs the slot")
            }
            // Without --signed-by, a signed file's trailer is checked for what needs no public key:
            // its structure. Whether the signature is genuine is left unsaid, and said to be.
            var signatureNote = verifiers.isEmpty ? "" : ", signature valid"
            if verifiers.isEmpty, let trailer = try reading.unverifiedTrailer(in: source) {
                if let damage = trailer.structuralDamage {
                    throw CofferError.signatureInvalid("the signature trailer is damaged: \(damage) (the payload authenticated under the file key)")
                }
                signatureNote = "; signed by \(trailer.signerLabels.joined(separator: ", ")), not checked (give --signed-by to check it)"
            }
            if !engine.quiet {
                Runtime.warn("OK: \(input ?? "standard input"): \(counted(bytes, "byte")) authenticated\(signatureNote)")
            }
        }
    }
}
