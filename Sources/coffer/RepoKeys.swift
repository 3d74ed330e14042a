import ArgumentParser
import CofferFormat
import CofferKeys
import CofferRepository
import Foundation

// The one place where the CLI's key options become the repository's keys (KeyObjectRecipients to
// protect a key object, KeyObjectIdentities to open one). When KeyOptions becomes the library's
// KeyRing, only this file changes.

enum RepoKeys {
    /// The keys a new key object is wrapped to (init): the key options, the public keys, and the
    /// recovery key separately (its key id goes into the config).
    static func recipients(_ keys: KeyOptions, _ publicKeys: RecipientOptions) throws -> KeyObjectRecipients {
        let recovery = try publicKeys.ring.recoveryPolicy().recipient
        var others = try publicKeys.publicKeys()
        if recovery != nil { others.removeLast() }
        let recipients = try keys.recipients(workFactor: Passphrase.defaultWorkFactor, publicKeys: others)
        return KeyObjectRecipients(recipients: recipients, recovery: recovery)
    }

    /// The keys of `key add`: the --new-* options and the public keys.
    static func newRecipients(_ options: NewKeyOptions) throws -> KeyObjectRecipients {
        let ring = KeyRing.forNewKeys(publicKeys: options.publicKeys, keyFiles: options.keyFiles, passphrase: options.passphrase,
                                      passphraseFile: options.passphraseFile, kms: options.kms, allowInsecure: false,
                                      passphraseVariable: NewKeyOptions.environmentPassphrase)
        let recovery = try ring.recoveryPolicy().recipient
        var publicKeys = try ring.publicKeys()
        if recovery != nil { publicKeys.removeLast() }
        let recipients = try ring.recipientsGiven(workFactor: Passphrase.defaultWorkFactor, publicKeys: publicKeys)
        guard !recipients.isEmpty || recovery != nil else {
            throw ValidationError("no new key given: use --new-key-file, --new-passphrase(-file), --new-kms, -r or -R")
        }
        return KeyObjectRecipients(recipients: recipients, recovery: recovery)
    }

    /// Opens the repository with the key options (full access).
    /// When a KMS key unwrapped the key object, the unwrap is appended to the key history.
    static func open(_ repo: RepoOptions, _ keys: KeyOptions, tolerateDamage: Bool = false) throws -> Repository {
        let storage = try repo.storage()
        let identities = KeyObjectIdentities(identities: try keys.identities(for: nil))
        let command = commandName
        return try runBlocking {
            let repository = try await Repository.open(storage: storage, identities: identities, tolerateDamage: tolerateDamage)
            if let kms = identities.kmsUnwrap {
                try await repository.appendKeyEvent(KeyEvent(.kmsUnwrap, key: repository.keyID, detail: kms, command: command))
            }
            return repository
        }
    }

    /// The command being run ("restore", "key list"), for the key history.
    static var commandName: String {
        let words = CommandLine.arguments.dropFirst().prefix { !$0.hasPrefix("-") }
        return words.prefix(words.first == "key" ? 2 : 1).joined(separator: " ")
    }

    /// "90d", "1y", "12h" (the forget durations: y = 365 days, m = 30 days) in seconds; "0" or "off": none.
    static func keyAge(_ text: String) throws -> Int {
        if text == "0" || text == "off" { return 0 }
        let d = try ForgetDuration(parsing: text)
        return ((d.years * 365 + d.months * 30 + d.days) * 24 + d.hours) * 3600
    }

    /// Opens with `--writer-key FILE` when given (write-only access), else with the key options.
    /// For commands that write (backup); reading commands call ``RepoOptions/refuseWriterKey(_:)``.
    static func openForWriting(_ repo: RepoOptions, _ keys: KeyOptions) throws -> Repository {
        guard let path = repo.writerKey else { return try open(repo, keys) }
        let writerKey = try WriterKeyFile.parse(try KeySources.readSecretFile(path, what: "writer key file", allowInsecure: false))
        let storage = try repo.storage()
        return try runBlocking { try await Repository.open(storage: storage, writerKey: writerKey) }
    }
}

/// The keys of a new key object (`coffer key add`), apart from the keys that open the repository.
struct NewKeyOptions: ParsableArguments {
    @Option(name: .customLong("new-key-file"), help: ArgumentHelp("A symmetric key file the new key object opens with. Repeatable.", valueName: "file"))
    var keyFiles: [String] = []

    @Flag(name: .customLong("new-passphrase"), help: "Protect the new key object with a passphrase asked on the terminal (or COFFER_NEW_PASSPHRASE).")
    var passphrase = false

    @Option(name: .customLong("new-passphrase-file"), help: ArgumentHelp("The new key object's passphrase, first line of this file.", valueName: "file"))
    var passphraseFile: String?

    @Option(name: .customLong("new-kms"), help: ArgumentHelp("A KMS key URI the new key object opens with. Repeatable.", valueName: "uri"))
    var kms: [String] = []

    @OptionGroup var publicKeys: RecipientOptions

    static let environmentPassphrase = "COFFER_NEW_PASSPHRASE"
}
