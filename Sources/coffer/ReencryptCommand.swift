import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation

struct Reencrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-encrypt files under a new file key, to new keys.",
        discussion: """
        For when a file key itself may have leaked ('coffer rewrap --remove' stops a key from opening a \
        file, but cannot take back a file key its holder already read). Each FILE is opened with the \
        keys given (--key-file, -i, --passphrase, ...), decrypted into a pipe and encrypted to the new \
        keys (-r, -R, --to-key-file, --to-passphrase-file, --to-kms, the recovery key) under a fresh file key, \
        keeping its cipher, chunk size and object name (files share the new file key while their \
        object names differ; a repeated name, such as two files encrypted on their own, gets a file \
        key of its own). The new file is read back and authenticated \
        before it replaces the old one; the plaintext never touches the disk. A signature covers the \
        old payload and does not carry over: --sign KEY signs the new one.

        Example:
          coffer reencrypt -i old.key -r restore.pub --recovery-recipient recovery.pub db.cof
        """)

    @OptionGroup var keys: KeyOptions
    @OptionGroup var publicKeys: RecipientOptions
    @OptionGroup var signing: SignOptions
    @OptionGroup var engine: EngineOptions

    @Option(help: ArgumentHelp("Encrypt to this symmetric key file. Repeatable.", valueName: "file"))
    var toKeyFile: [String] = []

    @Option(help: ArgumentHelp("Encrypt to the passphrase on the first line of this file.", valueName: "file"))
    var toPassphraseFile: String?

    @Option(help: ArgumentHelp("Encrypt to this KMS key (aws:///KEY?REGION=R or vault:///KEY?ADDR=URL, as --kms). Repeatable.",
                               valueName: "uri"))
    var toKms: [String] = []

    @Option(help: ArgumentHelp("scrypt work factor log2(N) for --to-passphrase-file.", valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Argument(help: ArgumentHelp("Encrypted files.", valueName: "file"))
    var files: [String] = []

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one file") }
    }

    func run() throws {
        try Runtime.reporting {
            let newKeys = KeyRing.forNewKeys(publicKeys: publicKeys, keyFiles: toKeyFile, passphraseFile: toPassphraseFile,
                                             kms: toKms, allowInsecure: keys.allowInsecureKeyFile)
            let recipients = try newKeys.recipientsGiven(workFactor: workFactor, publicKeys: try newKeys.publicKeys())
            guard !recipients.isEmpty else {
                throw KeyFlagsMissing("no new key given: -r RECIPIENT, -R FILE, --to-key-file FILE, --to-passphrase-file FILE or --to-kms URI")
            }
            let identities = try keys.identities(for: nil)
            let signer = try signing.signer(keys: keys)
            let run = try CofferFiles.Reencrypt(threads: engine.threads) {
                var encryptor = try CofferEncryptor(recipients: recipients)
                encryptor.signer = signer
                encryptor.signatureDigest = signing.digest
                return encryptor
            }
            for path in files {
                let outcome = try run.reencrypt(path: path, identities: identities)
                if outcome.droppedSignature {
                    Runtime.warn("warning: \(path) was signed; the new payload is not (give --sign KEY to sign it)")
                }
                if !engine.quiet { Runtime.warn("re-encrypted \(path): \(counted(outcome.bytes, "byte")) under a new file key\(signer != nil ? ", signed" : "")") }
            }
        }
    }
}
