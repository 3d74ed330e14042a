import ArgumentParser
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation

/// Where keys come from. No option takes a secret as its value.
struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("key-file"),
            help: ArgumentHelp("A symmetric key file (from 'coffer keygen --symmetric', or 32 raw bytes). Repeatable.",
                               valueName: "file"))
    var keyFiles: [String] = []

    @Option(name: .customLong("key-fd"),
            help: ArgumentHelp("Read a key file's content from this open file descriptor. Repeatable.", valueName: "n"))
    var keyDescriptors: [Int32] = []

    @Flag(name: [.customShort("p"), .long],
          help: "Use a passphrase, from --passphrase-file, COFFER_PASSPHRASE, or a prompt on the terminal.")
    var passphrase = false

    @Option(help: ArgumentHelp("Read the passphrase from the first line of this file (implies --passphrase).",
                               valueName: "file"))
    var passphraseFile: String?

    @Option(name: [.customShort("i"), .long],
            help: ArgumentHelp("A private key file to decrypt with: AGE-SECRET-KEY-1… (age-keygen's files work), AGE-SECRET-KEY-PQ-1…, a PEM RSA key, or (age files) an OpenSSH ssh-ed25519 key; several keys a file, # comments. With encrypt: encrypt to its public key. Repeatable.",
                               valueName: "file"))
    var identity: [String] = []

    @Option(help: ArgumentHelp("Passphrase of a protected (keygen --protect) identity file, first line of this file; otherwise COFFER_IDENTITY_PASSPHRASE or a prompt.",
                               valueName: "file"))
    var identityPassphraseFile: String?

    @Flag(help: "Accept key and passphrase files that group or others can read.")
    var allowInsecureKeyFile = false

    @Option(name: .customLong("kms"),
            help: ArgumentHelp("A KMS key: aws:///KEY?REGION=R (AWS KMS; credentials from AWS_ACCESS_KEY_ID/AWS_PROFILE/~/.aws) or vault:///KEY?ADDR=URL (Vault/OpenBao Transit; token from VAULT_TOKEN or ~/.vault-token). Encrypt: one stanza per URI. Decrypt: try these keys (without --kms, every KMS stanza whose credentials are found). Repeatable.",
                               valueName: "uri"))
    var kms: [String] = []

    static let environmentKey = "COFFER_KEY"
    static let environmentPassphrase = "COFFER_PASSPHRASE"
    static let environmentIdentityPassphrase = "COFFER_IDENTITY_PASSPHRASE"

    static let howToGiveAKey = """
    no key given. Give at least one of:
      --key-file FILE        a key file (make one with 'coffer keygen --symmetric -o FILE')
      --key-fd N             a key file's content on descriptor N
      COFFER_KEY             environment variable holding a key file's text form
      --passphrase           a passphrase, asked on the terminal (or COFFER_PASSPHRASE, --passphrase-file FILE)
      -r RECIPIENT, -R FILE  public keys (encrypt); -i FILE  private keys (decrypt)
      --kms URI              a KMS key: aws:///KEY?REGION=R or vault:///KEY?ADDR=URL
    """

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// Whether any way to open a file was given (verify --signed-by checks only the signature without one).
    var anyKeyGiven: Bool {
        !keyFiles.isEmpty || !keyDescriptors.isEmpty || !identity.isEmpty || wantsPassphrase
            || environment[Self.environmentKey] != nil
    }

    var wantsPassphrase: Bool {
        passphrase || passphraseFile != nil || environment[Self.environmentPassphrase] != nil
    }

    /// Key files from every source, in the order given.
    func symmetricKeys() throws -> [SymmetricKeyFile] {
        var keys = try keyFiles.map { try KeySources.keyFile(path: $0, allowInsecure: allowInsecureKeyFile) }
        keys += try keyDescriptors.map { try KeySources.keyFile(fd: $0) }
        if let text = environment[Self.environmentKey] { keys.append(try KeySources.keyFromEnvironment(text)) }
        return keys
    }

    /// The passphrase from the file, the environment or the terminal (asked twice when `confirm`).
    func readPassphrase(confirm: Bool) throws -> [UInt8] {
        if let path = passphraseFile {
            return try KeySources.passphrase(file: path, allowInsecure: allowInsecureKeyFile)
        }
        if let value = environment[Self.environmentPassphrase] {
            guard !value.isEmpty else { throw CofferError.invalidKey("\(Self.environmentPassphrase) is empty") }
            return Array(value.utf8)
        }
        let first = try TerminalPrompt.readPassphrase(prompt: "Passphrase: ")
        guard !first.isEmpty else { throw CofferError.invalidKey("the passphrase is empty") }
        if confirm {
            let second = try TerminalPrompt.readPassphrase(prompt: "Passphrase (again): ")
            guard first == second else { throw CofferError.invalidKey("the two passphrases differ") }
        }
        return first
    }

    /// The identities in the -i files, in order; protected files are opened with their passphrase.
    func identityFiles() throws -> [Identity] {
        var identities: [Identity] = []
        for path in identity {
            identities += try IdentityText.parse(try privateKeyText(path, what: "identity file"), source: path)
        }
        return identities
    }

    /// A private key file's text: readable only by its owner, opened with its passphrase when protected.
    func privateKeyText(_ path: String, what: String) throws -> String {
        var content: [UInt8]
        do {
            content = try KeySources.readSecretFile(path, what: what, allowInsecure: allowInsecureKeyFile)
        } catch CofferError.refused(let reason) {
            // A public key is readable by all, rightly: say it is the wrong kind of key instead.
            if let text = try? String(decoding: KeySources.readAll(path: path), as: UTF8.self),
               text.contains("PUBLIC KEY") || (try? RecipientText.parseFile(text, source: path)) != nil {
                throw CofferError.invalidKey("\(path) holds a public key; this needs the private key (NAME.key)")
            }
            throw CofferError.refused(reason)
        }
        if ProtectedKeyFile.isProtected(content) {
            let passphrase = try Passphrase(try readIdentityPassphrase(for: path, confirm: false),
                                            workFactor: Passphrase.maxWorkFactor)
            content = Array(try ProtectedKeyFile.unprotect(content, passphrase: passphrase, source: path).utf8)
        }
        guard let text = String(validating: content, as: UTF8.self) else {
            throw CofferError.invalidKey("\(what) \(path) is not text (a raw 32-byte key goes with --key-file)")
        }
        return text
    }

    /// The passphrase of a protected key file: --identity-passphrase-file, COFFER_IDENTITY_PASSPHRASE,
    /// or the terminal. Never a command-line argument.
    func readIdentityPassphrase(for path: String, confirm: Bool) throws -> [UInt8] {
        try Self.readIdentityPassphrase(for: path, file: identityPassphraseFile, allowInsecure: allowInsecureKeyFile, confirm: confirm)
    }

    /// The same, for commands without these options as a group (keygen --protect).
    static func readIdentityPassphrase(for path: String, file: String?, allowInsecure: Bool, confirm: Bool) throws -> [UInt8] {
        if let file {
            return try KeySources.passphrase(file: file, allowInsecure: allowInsecure)
        }
        if let value = ProcessInfo.processInfo.environment[environmentIdentityPassphrase], !value.isEmpty { return Array(value.utf8) }
        guard TerminalPrompt.isAvailable else {
            throw CofferError.noKeyGiven(
                "\(path) is protected by a passphrase: give it with --identity-passphrase-file FILE or \(environmentIdentityPassphrase), or run on a terminal")
        }
        let first = try TerminalPrompt.readPassphrase(prompt: "Passphrase for \(path): ")
        guard !first.isEmpty else { throw CofferError.invalidKey("the passphrase is empty") }
        if confirm {
            let second = try TerminalPrompt.readPassphrase(prompt: "Passphrase for \(path) (again): ")
            guard first == second else { throw CofferError.invalidKey("the two passphrases differ") }
        }
        return first
    }

    /// The --kms keys to wrap with, each URI checked; AUTH=specified is warned about.
    func kmsRecipients() throws -> [KMSRecipient] {
        try Self.kmsRecipients(kms)
    }

    /// KMS keys from URIs (--kms, reencrypt --to-kms), each checked; AUTH=specified is warned about.
    static func kmsRecipients(_ uris: [String]) throws -> [KMSRecipient] {
        try uris.map { text in
            let recipient = try KMSRecipient(parsing: text)
            if let warning = recipient.warning { Runtime.warn(warning) }
            return recipient
        }
    }

    /// The identity that unwraps KMS stanzas: the --kms keys, or (none given) every KMS stanza
    /// whose credentials are found. Nil when there is nothing for it to do.
    func kmsIdentity(for header: Header?, othersGiven: Bool) throws -> KMSIdentity? {
        if !kms.isEmpty {
            return KMSIdentity(uris: try kmsRecipients().map(\.uri))
        }
        if let header {
            return header.stanzas.contains { KMSStanza.types.contains($0.type) } ? KMSIdentity(uris: []) : nil
        }
        // A directory: its headers are read later; with no other key, KMS stanzas are the hope.
        return othersGiven ? nil : KMSIdentity(uris: [])
    }

    /// Everything to encrypt to; fails with the list of ways to give a key when there is none.
    func recipients(workFactor: Int, publicKeys: [Recipient] = []) throws -> [Recipient] {
        var recipients: [Recipient] = try symmetricKeys()
        recipients += publicKeys
        for identity in try identityFiles() {
            switch identity {
            case let key as X25519Identity: recipients.append(key.recipient)
            case let key as HybridIdentity: recipients.append(key.recipient)
            case let key as RSAIdentity: recipients.append(key.recipient)
            case let key as SymmetricKeyFile: recipients.append(key)
            default: break
            }
        }
        if wantsPassphrase {
            recipients.append(try Passphrase(try readPassphrase(confirm: true), workFactor: workFactor))
        }
        // Checked before any KMS call: a key service is asked only once the other keys are known good.
        let kmsKeys = try kmsRecipients()
        recipients += kmsKeys as [Recipient]
        guard !recipients.isEmpty else { throw CofferError.noKeyGiven(Self.howToGiveAKey) }
        return recipients
    }

    /// Everything to decrypt with. With no key given and a passphrase stanza in `header`, asks on
    /// the terminal when there is one.
    func identities(for header: Header?) throws -> [Identity] {
        var identities: [Identity] = try symmetricKeys()
        identities += try identityFiles()
        let headerWantsPassphrase = header?.stanzas.contains { $0.type == Passphrase.stanzaType } ?? false
        if wantsPassphrase || (identities.isEmpty && headerWantsPassphrase && TerminalPrompt.isAvailable) {
            identities.append(try Passphrase(try readPassphrase(confirm: false), workFactor: Passphrase.maxWorkFactor))
        }
        // Last: local keys open the file without a network call when they can (a recovery key
        // with the KMS down), and a KMS key is asked only when they cannot.
        if let kmsIdentity = try kmsIdentity(for: header, othersGiven: !identities.isEmpty) {
            identities.append(kmsIdentity)
        }
        guard !identities.isEmpty else {
            if let header {
                let needed = header.stanzas.map(StanzaDescriptions.describe)
                throw CofferError.noMatchingKey(needed: needed, tried: [])
            }
            throw CofferError.noKeyGiven(Self.howToGiveAKey)
        }
        return identities
    }
}

extension KeyOptions {
    /// The keys that open age files: the age keys in the -i files (X25519, post-quantum, OpenSSH),
    /// and a passphrase when one is given (or asked for on a terminal when nothing else is).
    func ageIdentities() throws -> [AgeIdentity] {
        if !keyFiles.isEmpty || !keyDescriptors.isEmpty {
            throw CofferError.invalidKey("an age file cannot be opened with a Coffer key file (--key-file, --key-fd): age has no symmetric keys; use -i or a passphrase")
        }
        let fromFiles = try identityFiles()
        var identities = AgeKeys.identities(from: fromFiles)
        if identities.isEmpty && !fromFiles.isEmpty && !wantsPassphrase {
            throw CofferError.invalidKey("none of the keys in the -i files is an age key (AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…, or an OpenSSH ssh-ed25519 key)")
        }
        if wantsPassphrase || (identities.isEmpty && TerminalPrompt.isAvailable) {
            identities.append(try AgeScrypt(passphrase: try readPassphrase(confirm: false)))
        }
        guard !identities.isEmpty else {
            throw CofferError.noKeyGiven("an age file needs its key: -i FILE (an age identity file or OpenSSH private key), or a passphrase (--passphrase, --passphrase-file FILE, COFFER_PASSPHRASE)")
        }
        return identities
    }
}

extension KeyOptions {
    /// The recipients of an age file: public keys (-r, -R, the recovery key), the public halves of
    /// -i identities, and a passphrase (which age allows only alone).
    func ageRecipients(workFactor: Int, publicKeys: [Recipient]) throws -> [AgeRecipient] {
        if !keyFiles.isEmpty || !keyDescriptors.isEmpty || environment[Self.environmentKey] != nil {
            throw CofferError.invalidKey("age files have no symmetric keys: a Coffer key file (--key-file, --key-fd, COFFER_KEY) cannot be a recipient of --format age")
        }
        var recipients = try publicKeys.map(AgeKeys.recipient(from:))
        for identity in try identityFiles() {
            switch identity {
            case let key as X25519Identity: recipients.append(AgeX25519Recipient(publicKey: key.privateKey.publicKey))
            case let key as HybridIdentity: recipients.append(AgeHybridRecipient(publicKey: key.privateKey.publicKey))
            case let key as SSHIdentity: recipients.append(try AgeKeys.recipient(from: try key.recipient()))
            default: recipients.append(try AgeKeys.recipient(from: identity as? Recipient ?? UnusableRecipient()))
            }
        }
        if wantsPassphrase {
            recipients.append(try AgeScrypt(passphrase: try readPassphrase(confirm: true), workFactor: workFactor))
        }
        guard !recipients.isEmpty else { throw CofferError.noKeyGiven(Self.howToGiveAKey) }
        return recipients
    }
}

/// Stands for an identity whose public half age cannot encrypt to (its error names why).
private struct UnusableRecipient: Recipient {
    func wrap(_ fileKey: FileKey) throws -> Stanza { throw CofferError.invalidKey("not an age key") }
}

/// Public keys to encrypt to, and the recovery-key policy (docs/KEYS.md, "Recommended set-up").
struct RecipientOptions: ParsableArguments {
    @Option(name: [.customShort("r"), .long],
            help: ArgumentHelp("A public key to encrypt to: age1… (X25519), age1pq1… (post-quantum), an 'ssh-ed25519 …' line (--format age), or a file holding keys (PEM RSA public keys too). Repeatable.",
                               valueName: "recipient"))
    var recipient: [String] = []

    @Option(name: [.customShort("R"), .customLong("recipients-file")],
            help: ArgumentHelp("A file of recipients, one a line (PEM blocks span lines), # comments. Repeatable.", valueName: "file"))
    var recipientsFiles: [String] = []

    @Option(help: ArgumentHelp("The recovery public key, added to every file (or COFFER_RECOVERY_RECIPIENT). Keep its private key offline.",
                               valueName: "recipient"))
    var recoveryRecipient: String?

    @Flag(help: "Refuse to write a file that the recovery key cannot open (or COFFER_REQUIRE_RECOVERY=1).")
    var requireRecovery = false

    static let environmentRecovery = "COFFER_RECOVERY_RECIPIENT"
    static let environmentRequireRecovery = "COFFER_REQUIRE_RECOVERY"

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// A recipient given as a string or as the path of a file holding recipients.
    static func parse(_ value: String, what: String) throws -> [Recipient] {
        var isDirectory: ObjCBool = false
        let isKeyText = value.hasPrefix("age1") || value.hasPrefix(SSHKey.ed25519Type + " ") || value.hasPrefix(SSHKey.rsaType + " ")
        if !isKeyText, FileManager.default.fileExists(atPath: value, isDirectory: &isDirectory), !isDirectory.boolValue {
            return try readRecipientsFile(value)
        }
        if !isKeyText && !value.hasPrefix("-----BEGIN") && value.contains("/") {
            throw CofferError.readFailed(path: value, reason: "no such \(what) file")
        }
        return [try RecipientText.parse(value, source: what)]
    }

    static func readRecipientsFile(_ path: String) throws -> [Recipient] {
        let bytes = try KeySources.readAll(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CofferError.invalidKey("recipients file \(path) is not text")
        }
        return try RecipientText.parseFile(text, source: path)
    }

    var requiresRecovery: Bool { requireRecovery || environment[Self.environmentRequireRecovery] == "1" }

    /// The recovery recipient, when one is set.
    func recovery() throws -> Recipient? {
        guard let value = recoveryRecipient ?? environment[Self.environmentRecovery].flatMap({ $0.isEmpty ? nil : $0 }) else {
            return nil
        }
        let keys = try Self.parse(value, what: "recovery recipient")
        guard keys.count == 1, let key = keys.first else {
            throw CofferError.invalidKey("the recovery recipient must be exactly one public key, found \(keys.count)")
        }
        guard !(key is SymmetricKeyFile) else { throw CofferError.invalidKey("the recovery recipient must be a public key") }
        return key
    }

    /// Every public key given, the recovery key last; refuses under the recovery policy when no
    /// recovery key is set.
    func publicKeys() throws -> [Recipient] {
        var keys: [Recipient] = []
        for value in recipient { keys += try Self.parse(value, what: "recipient") }
        for path in recipientsFiles { keys += try Self.readRecipientsFile(path) }
        if let recovery = try recovery() {
            keys.append(recovery)
        } else if requiresRecovery {
            throw CofferError.refused(
                "the recovery policy (--require-recovery or \(Self.environmentRequireRecovery)=1) is on but no recovery key is set: give --recovery-recipient or \(Self.environmentRecovery)")
        }
        return keys
    }
}

extension KeyOptions {
    static let environmentXbcryptKey = "XBCRYPT_ENCRYPTION_KEY"

    /// The key of an XtraBackup .xbcrypt file, read exactly as xbcrypt reads it: a key file's raw
    /// bytes (a trailing newline included), a descriptor's, or XBCRYPT_ENCRYPTION_KEY.
    func xbcryptKey() throws -> (bytes: [UInt8], source: String) {
        if let path = keyFiles.first {
            return (try KeySources.readSecretFile(path, what: "key file", allowInsecure: allowInsecureKeyFile), path)
        }
        if let fd = keyDescriptors.first {
            return (try KeySources.readAll(fd: fd, name: "descriptor \(fd)"), "descriptor \(fd)")
        }
        if let value = environment[Self.environmentXbcryptKey] {
            return (Array(value.utf8), Self.environmentXbcryptKey)
        }
        throw CofferError.noKeyGiven(
            "an XtraBackup .xbcrypt file needs its key: --key-file FILE (its raw bytes, as xbcrypt reads them), --key-fd N, or \(Self.environmentXbcryptKey)")
    }
}

/// Options of the parallel engine.
struct EngineOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Threads for encryption and decryption (default: the number of cores).", valueName: "n"))
    var threads: Int = StreamEngine.defaultThreads

    @Flag(name: .shortAndLong, help: "No progress line.")
    var quiet = false

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1...256") }
    }
}

/// Parses sizes such as 65536, 64K, 64KiB, 1M, 1MiB (powers of 1024).
func parseSize(_ text: String) -> Int? {
    let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                  ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("k", 1 << 10), ("", 1)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        let digits = text.dropLast(suffix.count)
        guard !digits.isEmpty, digits.allSatisfy(\.isNumber), let value = Int(digits),
              value <= Int.max / factor else { continue }
        return value * factor
    }
    return nil
}
