import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation

struct Rewrap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change which keys open encrypted files, without re-encrypting them.",
        discussion: """
        Opens each FILE with the keys given (--key-file, -i, --passphrase, ...), then adds and removes stanzas. Only the header changes: the new one is written into the file's free header slot and flushed before the old slot is cleared, so an interruption leaves a file that still opens (run the same command again to finish). The payload is not touched. A version-1 file has no free slot: it is converted once to version 2 (a new file whose payload bytes are copied, not re-encrypted, renamed over the old one).

        Removing a key stops it from opening the file from then on. It cannot take back a file key that the removed key's holder may already have read: when a file key itself may have leaked, use 'coffer reencrypt' instead. Key ids are shown by 'coffer inspect'; '--remove scrypt' removes passphrase stanzas.

        A signature does not cover the stanzas, so it stays valid through a rewrap. --sign KEY signs anew (rotating the producer's signing key): the payload is read once, every chunk authenticated and hashed; a signed file's existing signature must verify over exactly that payload, with the --sign key's own public key or one given with --signed-by (else nothing is changed); then the new signature is written to the trailer's free slot and flushed, and the old one cleared. An unsigned file is converted once (payload bytes copied, signature trailer appended).

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
                || ProcessInfo.processInfo.environment[KeyRing.environmentRequireRecovery] == "1" else {
            throw ValidationError("nothing to change: give --add-recipient, --add-key-file, --add-passphrase, --kms, --rotate-kms, --remove, or --sign")
        }
        if let headerSpace {
            guard let size = parseSize(headerSpace), (HeaderLayout.minSlotSize...Limits.maxHeaderSize).contains(size) else {
                throw ValidationError("--header-space must be a size from 512 to 256K, got \(headerSpace)")
            }
        }
    }

    /// The keys to add: their own key ring, which reads no opening key from the environment
    /// (COFFER_KEY, COFFER_PASSPHRASE open the file), only the recovery policy's variables.
    var adding: KeyRing {
        let environment = ProcessInfo.processInfo.environment
        var ring = KeyRing.forCommandLine()
        ring.environment = environment.filter { [KeyRing.environmentRecovery, KeyRing.environmentRequireRecovery].contains($0.key) }
        if let prompt = ring.prompt { ring.prompt = { try prompt("New " + $0.prefix(1).lowercased() + $0.dropFirst()) } }
        ring.recipients = addRecipient
        ring.recipientsFiles = addRecipientsFile
        ring.keyFiles = addKeyFile
        ring.usePassphrase = addPassphrase
        ring.passphraseFile = addPassphraseFile
        ring.allowInsecureKeyFiles = keys.allowInsecureKeyFile
        ring.recovery = KeyRing.RecoveryPolicy(recipient: recoveryRecipient, required: requireRecovery)
        return ring
    }

    func run() throws {
        try Runtime.reporting {
            var change = CofferFiles.Rewrap()
            change.slotSize = headerSpace.flatMap(parseSize)
            change.remove = remove
            change.signer = try signing.signer(keys: keys)
            change.signatureDigest = signing.digest
            change.signedBy = try signers.verifiers()
            let adding = self.adding
            change.add = try adding.recipientsGiven(workFactor: workFactor, publicKeys: try adding.publicKeys())
            change.mustKeep = try adding.recoveryPolicy().mustKeep.map { [$0] } ?? []

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
            for target in try CofferFiles.Rewrap.targets(files, recursive: recursive) {
                do {
                    let result = try change.rewrap(target, identities: identities)
                    if !quiet {
                        var parts = ["+\(result.added)", "-\(result.removed)"]
                        if result.alreadyPresent > 0 { parts.append("\(result.alreadyPresent) already present") }
                        if result.signed { parts.append("signed") }
                        if result.refreshed > 0 { parts.append("\(result.refreshed) re-wrapped under the newest key version") }
                        Runtime.warn("rewrapped \(target.path): \(parts.joined(separator: ", ")), generation \(result.generation)\(result.converted ? " (converted to version 2; payload copied, not re-encrypted)" : "")")
                    }
                } catch let error as any CategorizedError where files.count > 1 || recursive {
                    failures += 1
                    Runtime.warn("error: \(target.path): \(error)\(KeyHints.hint(for: error))")
                }
            }
            if failures > 0 { throw KeyError.refused("\(failures) file(s) not rewrapped (listed above); the others were") }
        }
    }
}
