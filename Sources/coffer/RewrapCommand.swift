import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation

struct Rewrap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change which keys open encrypted files, without re-encrypting them.",
        discussion: """
        Opens each FILE with the keys given (--key-file, -i, --passphrase, ...), then adds and removes
        stanzas. Only the header changes: the new one is written into the file's free header slot and
        flushed before the old slot is cleared, so an interruption leaves a file that still opens (run
        the same command again to finish). The payload is not touched. A version-1 file has no free
        slot: it is converted once to version 2 (a new file whose payload bytes are copied, not
        re-encrypted, renamed over the old one).

        Removing a key stops it from opening the file from then on. It cannot take back a file key that
        the removed key's holder may already have read: when a file key itself may have leaked, use
        'coffer reencrypt' instead. Key ids are shown by 'coffer inspect'; '--remove scrypt' removes
        passphrase stanzas.

        A signature does not cover the stanzas, so it stays valid through a rewrap. --sign KEY signs
        anew (rotating the producer's signing key): the payload is read once, every chunk authenticated
        and hashed; a signed file's existing signature must verify over exactly that payload, with the
        --sign key's own public key or one given with --signed-by (else nothing is changed); then the
        new signature is written to the trailer's free slot and flushed, and the old one cleared. An
        unsigned file is converted once (payload bytes copied, signature trailer appended).

        Examples:
          coffer rewrap -i old.key --add-recipient new.pub --remove 3f2a9c01d4e5b6a7 backup.sql.cof
          coffer rewrap --key-file run.key --add-recipient recovery.pub --recursive /backups/2026-11
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var signing: SignOptions
    @OptionGroup var signers: SignedByOptions

    @Option(help: ArgumentHelp("Add a public key (age1…, age1pq1…, or a file of keys). Repeatable.", valueName: "recipient"))
    var addRecipient: [String] = []

    @Option(help: ArgumentHelp("Add the keys of a recipients file. Repeatable.", valueName: "file"))
    var addRecipientsFile: [String] = []

    @Option(help: ArgumentHelp("Add a symmetric key file. Repeatable.", valueName: "file"))
    var addKeyFile: [String] = []

    @Flag(help: "Add a passphrase, asked on the terminal (twice).")
    var addPassphrase = false

    @Option(help: ArgumentHelp("Add a passphrase read from the first line of this file.", valueName: "file"))
    var addPassphraseFile: String?

    @Option(help: ArgumentHelp("scrypt work factor log2(N) for an added passphrase (default \(Passphrase.defaultWorkFactor)).", valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Option(help: ArgumentHelp("Remove the stanzas of this key id ('scrypt': passphrase stanzas; KMS key ids are shown by 'coffer inspect'). Repeatable.", valueName: "keyid"))
    var remove: [String] = []

    @Flag(help: "Re-wrap Vault Transit stanzas under their key's newest version (after 'bao write -f transit/keys/K/rotate'), so old versions can be retired. The keys come from --kms URIs (which then add nothing), else VAULT_ADDR.")
    var rotateKms = false

    @Option(help: ArgumentHelp("The recovery public key (or COFFER_RECOVERY_RECIPIENT): under the recovery policy it is added when missing and can never be removed.",
                               valueName: "recipient"))
    var recoveryRecipient: String?

    @Flag(help: "Refuse to leave a file that the recovery key cannot open (or COFFER_REQUIRE_RECOVERY=1).")
    var requireRecovery = false

    @Option(help: ArgumentHelp("Header slot size for version-1 files converted to version 2 (default: twice the header plus 1K).", valueName: "size"))
    var headerSpace: String?

    @Flag(help: "FILE is a directory: rewrap every NAME.cof in it.")
    var recursive = false

    @Flag(name: .shortAndLong, help: "Report only errors.")
    var quiet = false

    @Argument(help: ArgumentHelp("Encrypted files, or directories with --recursive.", valueName: "file"))
    var files: [String] = []

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one file") }
        guard !addRecipient.isEmpty || !addRecipientsFile.isEmpty || !addKeyFile.isEmpty || addPassphrase
                || addPassphraseFile != nil || !remove.isEmpty || requireRecovery || recoveryRecipient != nil
                || !keys.kms.isEmpty || rotateKms || signing.sign != nil
                || ProcessInfo.processInfo.environment[RecipientOptions.environmentRequireRecovery] == "1" else {
            throw ValidationError("nothing to change: give --add-recipient, --add-key-file, --add-passphrase, --kms, --rotate-kms, --remove, or --sign")
        }
        if let headerSpace {
            guard let size = parseSize(headerSpace), (HeaderLayout.minSlotSize...Limits.maxHeaderSize).contains(size) else {
                throw ValidationError("--header-space must be a size from 512 to 256K, got \(headerSpace)")
            }
        }
    }

    func run() throws {
        try Runtime.reporting {
            var change = CofferFiles.Rewrap()
            change.slotSize = headerSpace.flatMap(parseSize)
            change.remove = remove
            change.signer = try signing.signer(keys: keys)
            change.signatureDigest = signing.digest
            change.signedBy = try signers.verifiers()
            for value in addRecipient { change.add += try RecipientOptions.parse(value, what: "recipient") }
            for path in addRecipientsFile { change.add += try RecipientOptions.readRecipientsFile(path) }
            change.add += try addKeyFile.map { try KeySources.keyFile(path: $0, allowInsecure: keys.allowInsecureKeyFile) }
            if let addPassphraseFile {
                change.add.append(try Passphrase(try KeySources.passphrase(file: addPassphraseFile, allowInsecure: keys.allowInsecureKeyFile),
                                                 workFactor: workFactor))
            } else if addPassphrase {
                let first = try TerminalPrompt.readPassphrase(prompt: "New passphrase: ")
                guard first == (try TerminalPrompt.readPassphrase(prompt: "New passphrase (again): ")) else {
                    throw CofferError.invalidKey("the two passphrases differ")
                }
                change.add.append(try Passphrase(first, workFactor: workFactor))
            }
            var policy = RecipientOptions()
            policy.recoveryRecipient = recoveryRecipient
            policy.requireRecovery = requireRecovery
            if let recovery = try policy.recovery() {
                change.add.append(recovery)
                if policy.requiresRecovery, let id = KeyTypes.keyID(of: recovery) { change.mustKeep = [id] }
            } else if policy.requiresRecovery {
                throw CofferError.refused("the recovery policy is on but no recovery key is set: give --recovery-recipient or \(RecipientOptions.environmentRecovery)")
            }

            // --kms adds KMS stanzas (or, with --rotate-kms, names the Vault keys to rotate); the
            // file itself is opened with the other keys or its KMS stanzas' own keys.
            var opening = keys
            opening.kms = []
            let kmsKeys = try keys.kmsRecipients()
            var identities = try opening.identities(for: nil)
            if rotateKms {
                let rotation = KMSIdentity(uris: kmsKeys.map(\.uri))
                change.refresh = { try rotation.rewrapToNewestVersion($0) }
                identities.append(rotation)
            } else {
                change.add += kmsKeys as [Recipient]
            }
            if !identities.contains(where: { $0 is KMSIdentity }) { identities.append(KMSIdentity(uris: [])) }
            var failures = 0
            for target in try targets() {
                let path = target.path
                do {
                    let result = try target.rewrap(change, identities)
                    if !quiet {
                        var parts = ["+\(result.added)", "-\(result.removed)"]
                        if result.alreadyPresent > 0 { parts.append("\(result.alreadyPresent) already present") }
                        if result.signed { parts.append("signed") }
                        if result.refreshed > 0 { parts.append("\(result.refreshed) re-wrapped under the newest key version") }
                        Runtime.warn("rewrapped \(path): \(parts.joined(separator: ", ")), generation \(result.generation)\(result.converted ? " (converted to version 2; payload copied, not re-encrypted)" : "")")
                    }
                } catch let error as CofferError where files.count > 1 || recursive {
                    failures += 1
                    Runtime.warn("error: \(path): \(error)")
                }
            }
            if failures > 0 { throw CofferError.refused("\(failures) file(s) not rewrapped (listed above); the others were") }
        }
    }

    /// A file to rewrap, and how to reach it: by its path, or (with --recursive) from the tree's
    /// root through directory descriptors, never following a symbolic link.
    struct Target {
        let path: String
        let rewrap: (CofferFiles.Rewrap, [Identity]) throws -> CofferFiles.Rewrap.Result
    }

    /// The files to rewrap: the arguments, or every regular NAME.cof under them with --recursive.
    func targets() throws -> [Target] {
        guard recursive else {
            return files.map { path in Target(path: path) { try $0.rewrap(path: path, identities: $1) } }
        }
        var out: [Target] = []
        for root in files {
            var skipped: [(path: String, reason: String)] = []
            let tree = try DirectoryTree.list(root, skipped: &skipped)
            for entry in tree.entries where entry.relative.hasSuffix(DirectoryRun.suffix) {
                let path = (root as NSString).appendingPathComponent(entry.relative)
                out.append(Target(path: path) { change, identities in
                    try change.rewrap(in: try tree.directory(of: entry), name: entry.name, path: path, identities: identities)
                })
            }
        }
        return out.sorted { $0.path < $1.path }
    }
}
