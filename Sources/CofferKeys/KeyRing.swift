import CofferCloud
import CofferFormat
import Foundation

/// Turns where keys come from — key files, descriptors, environment variables, identity files,
/// passphrases (from a file, the environment, or an injected prompt), KMS URIs, public keys, and
/// the recovery-key policy — into the recipients a file is encrypted to and the identities that
/// open it. Plain values, no command-line parsing: the command-line tool fills one from its flags,
/// a library user (the backup repository) from its own configuration.
///
/// No field holds a secret: secrets are read from the files, descriptors, environment or prompt
/// named here, when a recipient or identity is asked for.
public struct KeyRing {
    // MARK: Where keys come from

    /// Symmetric key files (docs/KEYS.md, "Key files").
    public var keyFiles: [String] = []
    /// Descriptors to read a key file's content from.
    public var keyDescriptors: [Int32] = []
    /// Identity files: age, post-quantum, PEM RSA and OpenSSH private keys, symmetric key lines;
    /// opened with their passphrase when protected (``ProtectedKeyFile``).
    public var identityFiles: [String] = []
    /// Use a passphrase: from ``passphraseFile``, ``environmentPassphrase``, or ``prompt``.
    public var usePassphrase = false
    /// A file whose first line is the passphrase (implies ``usePassphrase``).
    public var passphraseFile: String?
    /// A file whose first line is the passphrase of protected identity files.
    public var identityPassphraseFile: String?
    /// Accept secret files that group or others can read.
    public var allowInsecureKeyFiles = false
    /// KMS key URIs (`aws:///…`, `vault:///…`): encrypting wraps to each, decrypting tries them.
    public var kmsURIs: [String] = []
    /// Public keys as text (`age1…`, `age1pq1…`, `ssh-ed25519 …`, PEM) or paths of files holding them.
    public var recipients: [String] = []
    /// Recipients files: one key a line, PEM blocks spanning lines, `#` comments.
    public var recipientsFiles: [String] = []
    /// The recovery-key policy (docs/KEYS.md, "Recommended set-up").
    public var recovery = RecoveryPolicy()

    /// The environment read for ``environmentKey`` and the other variables (a dictionary, so tests
    /// can give their own).
    public var environment: [String: String]
    /// Asks the user for a passphrase (the text is the prompt); nil when there is no one to ask.
    public var prompt: ((String) throws -> [UInt8])?
    /// Receives warnings (a KMS URI that carries credentials).
    public var warn: (String) -> Void

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                prompt: ((String) throws -> [UInt8])? = nil, warn: @escaping (String) -> Void = { _ in }) {
        self.environment = environment
        self.prompt = prompt
        self.warn = warn
    }

    /// The text form of a key file.
    public static let environmentKey = "COFFER_KEY"
    /// A passphrase.
    public static let environmentPassphrase = "COFFER_PASSPHRASE"
    /// The passphrase of protected identity files.
    public static let environmentIdentityPassphrase = "COFFER_IDENTITY_PASSPHRASE"
    /// The recovery recipient.
    public static let environmentRecovery = "COFFER_RECOVERY_RECIPIENT"
    /// "1": the recovery policy is on.
    public static let environmentRequireRecovery = "COFFER_REQUIRE_RECOVERY"
    /// An XtraBackup .xbcrypt key, as xbcrypt reads it.
    public static let environmentXbcryptKey = "XBCRYPT_ENCRYPTION_KEY"

    /// The recovery recipient and whether every file must carry it.
    public struct RecoveryPolicy {
        /// The recovery public key (text or a file); else ``environmentRecovery``.
        public var recipient: String?
        /// Refuse a file the recovery key cannot open; also on with ``environmentRequireRecovery``=1.
        public var required = false

        public init(recipient: String? = nil, required: Bool = false) {
            self.recipient = recipient
            self.required = required
        }
    }

    // MARK: What was given

    /// Whether any local way to open a file was given (verifying a signature alone needs none).
    public var anyKeyGiven: Bool {
        !keyFiles.isEmpty || !keyDescriptors.isEmpty || !identityFiles.isEmpty || wantsPassphrase
            || environment[Self.environmentKey] != nil
    }

    public var wantsPassphrase: Bool {
        usePassphrase || passphraseFile != nil || environment[Self.environmentPassphrase] != nil
    }

    /// Whether the recovery policy is on.
    public var requiresRecovery: Bool { recovery.required || environment[Self.environmentRequireRecovery] == "1" }

    // MARK: Secrets

    /// Key files from every source, in the order: files, descriptors, the environment.
    public func symmetricKeys() throws -> [SymmetricKeyFile] {
        var keys = try keyFiles.map { try KeySources.keyFile(path: $0, allowInsecure: allowInsecureKeyFiles) }
        keys += try keyDescriptors.map { try KeySources.keyFile(fd: $0) }
        if let text = environment[Self.environmentKey] { keys.append(try KeySources.keyFromEnvironment(text)) }
        return keys
    }

    /// The passphrase from the file, the environment or the prompt (asked twice when `confirm`).
    public func passphrase(confirm: Bool) throws -> [UInt8] {
        if let path = passphraseFile {
            return try KeySources.passphrase(file: path, allowInsecure: allowInsecureKeyFiles)
        }
        if let value = environment[Self.environmentPassphrase] {
            guard !value.isEmpty else { throw KeyError.invalid("\(Self.environmentPassphrase) is empty") }
            return Array(value.utf8)
        }
        return try Self.ask(prompt, "Passphrase", confirm: confirm, missing: .passphrase)
    }

    /// Asks `prompt` ("Passphrase: "), twice when `confirm`; refuses an empty answer.
    static func ask(_ prompt: ((String) throws -> [UInt8])?, _ text: String, confirm: Bool,
                    missing: KeyError.MissingKey) throws -> [UInt8] {
        guard let prompt else { throw KeyError.noKeyGiven(missing) }
        let first = try prompt("\(text): ")
        guard !first.isEmpty else { throw KeyError.invalid("the passphrase is empty") }
        if confirm {
            guard try prompt("\(text) (again): ") == first else { throw KeyError.invalid("the two passphrases differ") }
        }
        return first
    }

    /// The identities in the identity files, in order; protected files are opened with their passphrase.
    public func identitiesFromFiles() throws -> [Identity] {
        var identities: [Identity] = []
        for path in identityFiles {
            identities += try IdentityText.parse(try privateKeyText(path, what: "identity file"), source: path)
        }
        return identities
    }

    /// A private key file's text: readable only by its owner, opened with its passphrase when protected.
    public func privateKeyText(_ path: String, what: String) throws -> String {
        var content: [UInt8]
        do {
            content = try KeySources.readSecretFile(path, what: what, allowInsecure: allowInsecureKeyFiles)
        } catch let error as KeyError {
            // A public key is readable by all, rightly: say it is the wrong kind of key instead.
            if case .insecureKeyFile = error, let text = try? String(decoding: KeySources.readAll(path: path), as: UTF8.self),
               text.contains("PUBLIC KEY") || (try? RecipientText.parseFile(text, source: path)) != nil {
                throw KeyError.invalid("\(path) holds a public key; this needs the private key (NAME.key)")
            }
            throw error
        }
        if ProtectedKeyFile.isProtected(content) {
            let passphrase = try Passphrase(try identityPassphrase(for: path, confirm: false), workFactor: Passphrase.maxWorkFactor)
            content = Array(try ProtectedKeyFile.unprotect(content, passphrase: passphrase, source: path).utf8)
        }
        guard let text = String(validating: content, as: UTF8.self) else {
            throw KeyError.invalid("\(what) \(path) is not text (a raw 32-byte key is a key file, not an identity)")
        }
        return text
    }

    /// The passphrase of a protected key file: ``identityPassphraseFile``,
    /// ``environmentIdentityPassphrase``, or the prompt.
    public func identityPassphrase(for path: String, confirm: Bool) throws -> [UInt8] {
        try Self.identityPassphrase(for: path, file: identityPassphraseFile, allowInsecure: allowInsecureKeyFiles,
                                    environment: environment, prompt: prompt, confirm: confirm)
    }

    /// The same, without a key ring (making a protected key: `keygen --protect`).
    public static func identityPassphrase(for path: String, file: String?, allowInsecure: Bool, environment: [String: String],
                                          prompt: ((String) throws -> [UInt8])?, confirm: Bool) throws -> [UInt8] {
        if let file {
            return try KeySources.passphrase(file: file, allowInsecure: allowInsecure)
        }
        if let value = environment[environmentIdentityPassphrase], !value.isEmpty { return Array(value.utf8) }
        return try ask(prompt, "Passphrase for \(path)", confirm: confirm, missing: .identityPassphrase(path: path))
    }

    // MARK: Public keys and the recovery policy

    /// A recipient given as text, or as the path of a file holding recipients.
    public static func parseRecipients(_ value: String, what: String) throws -> [Recipient] {
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

    public static func readRecipientsFile(_ path: String) throws -> [Recipient] {
        let bytes = try KeySources.readAll(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KeyError.invalid("recipients file \(path) is not text")
        }
        return try RecipientText.parseFile(text, source: path)
    }

    /// The recovery recipient, when one is set: exactly one public key.
    public func recoveryRecipient() throws -> Recipient? {
        guard let value = recovery.recipient ?? environment[Self.environmentRecovery].flatMap({ $0.isEmpty ? nil : $0 }) else {
            return nil
        }
        let keys = try Self.parseRecipients(value, what: "recovery recipient")
        guard keys.count == 1, let key = keys.first else {
            throw KeyError.invalid("the recovery recipient must be exactly one public key, found \(keys.count)")
        }
        guard !(key is SymmetricKeyFile) else { throw KeyError.invalid("the recovery recipient must be a public key") }
        return key
    }

    /// The recovery policy applied once, for every command that writes stanzas: the recovery key
    /// to add (nil: none set), and the key id every file must keep (nil: the policy is off, or the
    /// key names no id). Refuses when the policy is on and no recovery key is set.
    public func recoveryPolicy() throws -> (recipient: Recipient?, mustKeep: String?) {
        guard let recovery = try recoveryRecipient() else {
            if requiresRecovery { throw KeyError.noKeyGiven(.recoveryKey) }
            return (nil, nil)
        }
        return (recovery, requiresRecovery ? KeyTypes.keyID(of: recovery) : nil)
    }

    /// Every public key given, the recovery key last; refuses under the recovery policy when no
    /// recovery key is set.
    public func publicKeys() throws -> [Recipient] {
        var keys: [Recipient] = []
        for value in recipients { keys += try Self.parseRecipients(value, what: "recipient") }
        for path in recipientsFiles { keys += try Self.readRecipientsFile(path) }
        if let recovery = try recoveryPolicy().recipient { keys.append(recovery) }
        return keys
    }

    // MARK: KMS

    /// The KMS keys to wrap with, each URI checked; AUTH=specified is warned about.
    public func kmsRecipients() throws -> [KMSRecipient] {
        try Self.kmsRecipients(kmsURIs, environment: environment, warn: warn)
    }

    public static func kmsRecipients(_ uris: [String], environment: [String: String],
                                     warn: (String) -> Void) throws -> [KMSRecipient] {
        try uris.map { text in
            let recipient = try KMSRecipient(parsing: text, environment: environment)
            if let warning = recipient.warning { warn(warning) }
            return recipient
        }
    }

    /// The identity that unwraps KMS stanzas: the given KMS keys, or (none given) every KMS stanza
    /// whose credentials are found. Nil when there is nothing for it to do.
    func kmsIdentity(for header: Header?, othersGiven: Bool) throws -> KMSIdentity? {
        if !kmsURIs.isEmpty {
            return KMSIdentity(uris: try kmsRecipients().map(\.uri), environment: environment)
        }
        if let header {
            return header.stanzas.contains { KMSStanza.types.contains($0.type) } ? KMSIdentity(uris: [], environment: environment) : nil
        }
        // A directory: its headers are read later; with no other key, KMS stanzas are the hope.
        return othersGiven ? nil : KMSIdentity(uris: [], environment: environment)
    }

    // MARK: Coffer files

    /// Everything to encrypt a Coffer file to: key files, ``publicKeys()``, the public halves of
    /// the identity files, a passphrase, the KMS keys. Fails when there is none.
    public func recipients(workFactor: Int) throws -> [Recipient] {
        try recipients(workFactor: workFactor, publicKeys: try publicKeys())
    }

    /// The same, with the public keys already resolved.
    public func recipients(workFactor: Int, publicKeys: [Recipient]) throws -> [Recipient] {
        let recipients = try recipientsGiven(workFactor: workFactor, publicKeys: publicKeys)
        guard !recipients.isEmpty else { throw KeyError.noKeyGiven(.anyKey) }
        return recipients
    }

    /// Every recipient given, possibly none (a rewrap may only remove keys).
    public func recipientsGiven(workFactor: Int, publicKeys: [Recipient]) throws -> [Recipient] {
        var recipients: [Recipient] = try symmetricKeys()
        recipients += publicKeys
        // OpenSSH keys among the identities make age files only: a Coffer file is not encrypted to them.
        for identity in try identitiesFromFiles() where !(identity is SSHIdentity) {
            if let pair = identity as? any KeyPair { recipients.append(try pair.publicRecipient()) }
        }
        if wantsPassphrase {
            recipients.append(try Passphrase(try passphrase(confirm: true), workFactor: workFactor))
        }
        // Checked before any KMS call: a key service is asked only once the other keys are known good.
        recipients += try kmsRecipients() as [Recipient]
        return recipients
    }

    /// Everything to decrypt a Coffer file with. With no key given and a passphrase stanza in
    /// `header`, asks for the passphrase when there is someone to ask.
    public func identities(for header: Header?) throws -> [Identity] {
        var identities: [Identity] = try symmetricKeys()
        identities += try identitiesFromFiles()
        let headerWantsPassphrase = header?.stanzas.contains { $0.type == Passphrase.stanzaType } ?? false
        if wantsPassphrase || (identities.isEmpty && headerWantsPassphrase && prompt != nil) {
            identities.append(try Passphrase(try passphrase(confirm: false), workFactor: Passphrase.maxWorkFactor))
        }
        // Last: local keys open the file without a network call when they can (a recovery key
        // with the KMS down), and a KMS key is asked only when they cannot.
        if let kmsIdentity = try kmsIdentity(for: header, othersGiven: !identities.isEmpty) {
            identities.append(kmsIdentity)
        }
        guard !identities.isEmpty else {
            if let header {
                throw AccessError.noMatchingKey(needed: header.stanzas.map(KeyTypes.describe), tried: [])
            }
            throw KeyError.noKeyGiven(.anyKey)
        }
        return identities
    }

    /// The keys that open one Coffer file, fixed before its header is read and passed down with
    /// it: the key files, identities and passphrase given; a passphrase asked for (through
    /// ``prompt``) when nothing else is given and the header has a passphrase stanza; and the KMS
    /// keys given, or, with none given, every KMS stanza whose credentials are found when the
    /// header has KMS stanzas. Local keys come first, so a file opens without a network call when
    /// they can open it (a recovery key with the key service down).
    public func keyCandidates() throws -> [KeyCandidate] {
        var local: [Identity] = try symmetricKeys()
        local += try identitiesFromFiles()
        var candidates = local.map(KeyCandidate.given)
        if wantsPassphrase {
            candidates.append(.given(try Passphrase(try passphrase(confirm: false), workFactor: Passphrase.maxWorkFactor)))
        } else if local.isEmpty && prompt != nil {
            let ring = self
            candidates.append(.whenHeaderHas(stanzaTypes: [Passphrase.stanzaType]) {
                try Passphrase(try ring.passphrase(confirm: false), workFactor: Passphrase.maxWorkFactor)
            })
        }
        if !kmsURIs.isEmpty {
            candidates.append(.given(KMSIdentity(uris: try kmsRecipients().map(\.uri), environment: environment)))
        } else {
            let environment = self.environment
            candidates.append(.whenHeaderHas(stanzaTypes: Set(KMSStanza.types)) {
                KMSIdentity(uris: [], environment: environment)
            })
        }
        return candidates
    }

    // MARK: age files

    /// The identities among `identities` that open age files: X25519, post-quantum and OpenSSH
    /// keys (age has no symmetric key files and no PEM RSA keys).
    public static func ageIdentities(among identities: [Identity]) -> [Identity] {
        identities.filter { $0 is X25519Identity || $0 is HybridIdentity || $0 is SSHIdentity }
    }

    /// The keys that open age files: the age keys in the identity files, and a passphrase when one
    /// is given (or asked for when nothing else is).
    public func ageIdentities() throws -> [Identity] {
        if !keyFiles.isEmpty || !keyDescriptors.isEmpty {
            throw KeyError.invalid("an age file cannot be opened with a Coffer key file: age has no symmetric keys; use an age identity or a passphrase")
        }
        let fromFiles = try identitiesFromFiles()
        var identities = Self.ageIdentities(among: fromFiles)
        if identities.isEmpty && !fromFiles.isEmpty && !wantsPassphrase {
            throw KeyError.invalid("none of the keys in the identity files is an age key (AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…, or an OpenSSH ssh-ed25519 key)")
        }
        if wantsPassphrase || (identities.isEmpty && prompt != nil) {
            identities.append(try AgeScrypt(passphrase: try passphrase(confirm: false)))
        }
        guard !identities.isEmpty else { throw KeyError.noKeyGiven(.ageKey) }
        return identities
    }

    /// The recipients of an age file: `publicKeys`, the public halves of the identity files, and a
    /// passphrase (which age allows only alone). Key types age does not have fail when wrapping.
    public func ageRecipients(workFactor: Int, publicKeys: [Recipient]) throws -> [Recipient] {
        if !keyFiles.isEmpty || !keyDescriptors.isEmpty || environment[Self.environmentKey] != nil {
            throw KeyError.invalid("age files have no symmetric keys: a Coffer key file cannot be a recipient of an age file")
        }
        var recipients = publicKeys
        for identity in try identitiesFromFiles() {
            if let pair = identity as? any KeyPair { recipients.append(try pair.publicRecipient()) }
        }
        if wantsPassphrase {
            recipients.append(try AgeScrypt(passphrase: try passphrase(confirm: true), workFactor: workFactor))
        }
        guard !recipients.isEmpty else { throw KeyError.noKeyGiven(.anyKey) }
        return recipients
    }

    // MARK: .xbcrypt files

    /// The key of an XtraBackup .xbcrypt file, read exactly as xbcrypt reads it: the first key
    /// file's raw bytes (a trailing newline included), the first descriptor's, or
    /// ``environmentXbcryptKey``.
    public func xbcryptKey() throws -> (bytes: [UInt8], source: String) {
        if let path = keyFiles.first {
            return (try KeySources.readSecretFile(path, what: "key file", allowInsecure: allowInsecureKeyFiles), path)
        }
        if let fd = keyDescriptors.first {
            return (try KeySources.readAll(fd: fd, name: "descriptor \(fd)"), "descriptor \(fd)")
        }
        if let value = environment[Self.environmentXbcryptKey] {
            return (Array(value.utf8), Self.environmentXbcryptKey)
        }
        throw KeyError.noKeyGiven(.xbcryptKey)
    }
}
