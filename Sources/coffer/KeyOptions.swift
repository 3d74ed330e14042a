import ArgumentParser
import CofferFormat
import CofferKeys
import Foundation

/// Where keys come from. No option takes a secret as its value. The flags only fill a
/// ``KeyRing``, which does the work.
struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("key-file"),
            help: ArgumentHelp("A symmetric key file (from 'coffer keygen --symmetric', or 32 raw bytes). Repeatable.", valueName: "file"))
    var keyFiles: [String] = []

    @Option(name: .customLong("key-fd"),
            help: ArgumentHelp("Read a key file's content from this open file descriptor. Repeatable.", valueName: "n"))
    var keyDescriptors: [Int32] = []

    @Flag(name: [.customShort("p"), .long],
          help: "Use a passphrase, from --passphrase-file, COFFER_PASSPHRASE, or a prompt on the terminal.")
    var passphrase = false

    @Option(help: ArgumentHelp("Read the passphrase from the first line of this file (implies --passphrase).", valueName: "file"))
    var passphraseFile: String?

    @Option(name: [.customShort("i"), .long],
            help: ArgumentHelp("A private key file to decrypt with: AGE-SECRET-KEY-1… (age-keygen's files work), AGE-SECRET-KEY-PQ-1…, a PEM RSA key, or (age files) an OpenSSH ssh-ed25519 key; several keys a file, # comments. With encrypt: encrypt to its public key. Repeatable.", valueName: "file"))
    var identity: [String] = []

    @Option(help: ArgumentHelp("Passphrase of a protected (keygen --protect) identity file, first line of this file; otherwise COFFER_IDENTITY_PASSPHRASE or a prompt.", valueName: "file"))
    var identityPassphraseFile: String?

    @Flag(help: "Accept key and passphrase files that group or others can read.")
    var allowInsecureKeyFile = false

    @Option(name: .customLong("kms"),
            help: ArgumentHelp("A KMS key: aws:///KEY?REGION=R (AWS KMS; credentials from AWS_ACCESS_KEY_ID/AWS_PROFILE/~/.aws) or vault:///KEY?ADDR=URL (Vault/OpenBao Transit; token from VAULT_TOKEN or ~/.vault-token). Encrypt: one stanza per URI. Decrypt: try these keys (without --kms, every KMS stanza whose credentials are found). Repeatable.", valueName: "uri"))
    var kms: [String] = []

    /// The key ring these flags describe (public keys come from ``RecipientOptions``).
    var ring: KeyRing {
        var ring = KeyRing.forCommandLine()
        ring.keyFiles = keyFiles
        ring.keyDescriptors = keyDescriptors
        ring.identityFiles = identity
        ring.usePassphrase = passphrase
        ring.passphraseFile = passphraseFile
        ring.identityPassphraseFile = identityPassphraseFile
        ring.allowInsecureKeyFiles = allowInsecureKeyFile
        ring.kmsURIs = kms
        return ring
    }

    var anyKeyGiven: Bool { ring.anyKeyGiven }
    func identityFiles() throws -> [Identity] { try ring.identitiesFromFiles() }
    func privateKeyText(_ path: String, what: String) throws -> String { try ring.privateKeyText(path, what: what) }
    func kmsRecipients() throws -> [KMSRecipient] { try ring.kmsRecipients() }
    static func kmsRecipients(_ uris: [String]) throws -> [KMSRecipient] {
        try KeyRing.kmsRecipients(uris, environment: ProcessInfo.processInfo.environment, warn: Runtime.warn)
    }
    func recipients(workFactor: Int, publicKeys: [Recipient] = []) throws -> [Recipient] {
        try ring.recipients(workFactor: workFactor, publicKeys: publicKeys)
    }
    func identities(for header: Header?) throws -> [Identity] { try ring.identities(for: header) }
    func keyCandidates() throws -> [KeyCandidate] { try ring.keyCandidates() }
    func ageIdentities() throws -> [Identity] { try ring.ageIdentities() }
    func ageRecipients(workFactor: Int, publicKeys: [Recipient]) throws -> [Recipient] {
        try ring.ageRecipients(workFactor: workFactor, publicKeys: publicKeys)
    }
    func xbcryptKey() throws -> (bytes: [UInt8], source: String) { try ring.xbcryptKey() }
}

/// Public keys to encrypt to, and the recovery-key policy (docs/KEYS.md, "Recommended set-up").
struct RecipientOptions: ParsableArguments {
    @Option(name: [.customShort("r"), .long],
            help: ArgumentHelp("A public key to encrypt to: age1… (X25519), age1pq1… (post-quantum), an 'ssh-ed25519 …' line (--format age), or a file holding keys (PEM RSA public keys too). Repeatable.", valueName: "recipient"))
    var recipient: [String] = []

    @Option(name: [.customShort("R"), .customLong("recipients-file")],
            help: ArgumentHelp("A file of recipients, one a line (PEM blocks span lines), # comments. Repeatable.", valueName: "file"))
    var recipientsFiles: [String] = []

    @Option(help: ArgumentHelp("The recovery public key, added to every file (or COFFER_RECOVERY_RECIPIENT). Keep its private key offline.", valueName: "recipient"))
    var recoveryRecipient: String?

    @Flag(help: "Refuse to write a file that the recovery key cannot open (or COFFER_REQUIRE_RECOVERY=1).")
    var requireRecovery = false

    /// A key ring holding only these public keys and the recovery policy.
    var ring: KeyRing {
        var ring = KeyRing.forCommandLine()
        ring.recipients = recipient
        ring.recipientsFiles = recipientsFiles
        ring.recovery = KeyRing.RecoveryPolicy(recipient: recoveryRecipient, required: requireRecovery)
        return ring
    }

    /// Every public key given, the recovery key last; refuses under the recovery policy when no
    /// recovery key is set.
    func publicKeys() throws -> [Recipient] { try ring.publicKeys() }
}

extension KeyRing {
    /// A key ring reading this process's environment, asking on the terminal when there is one,
    /// and warning on standard error.
    static func forCommandLine() -> KeyRing {
        KeyRing(environment: ProcessInfo.processInfo.environment,
                prompt: TerminalPrompt.isAvailable ? { try TerminalPrompt.readPassphrase(prompt: $0) } : nil,
                warn: Runtime.warn)
    }
}

extension KeyRing {
    /// A key ring for keys being added (`reencrypt --to-*`, `key add --new-*`), not the keys that
    /// open: only what those flags name, the public keys and the recovery policy. The environment's
    /// key and passphrase belong to the opening keys and are left out; `passphraseVariable` (e.g.
    /// COFFER_NEW_PASSPHRASE) stands in for the new passphrase.
    static func forNewKeys(publicKeys: RecipientOptions, keyFiles: [String], passphrase: Bool = false,
                           passphraseFile: String?, kms: [String], allowInsecure: Bool,
                           passphraseVariable: String? = nil) -> KeyRing {
        var ring = publicKeys.ring
        var environment = ring.environment
        environment[KeyRing.environmentKey] = nil
        environment[KeyRing.environmentPassphrase] = passphraseVariable.flatMap { environment[$0] }
        ring.environment = environment
        ring.keyFiles = keyFiles
        ring.usePassphrase = passphrase
        ring.passphraseFile = passphraseFile
        ring.kmsURIs = kms
        ring.allowInsecureKeyFiles = allowInsecure
        return ring
    }
}

/// No key among the flags a command takes for one purpose (the new keys of a reencrypt, the old
/// keys of a migration): the message names those flags, which only the command line knows.
/// A key error (exit code 2), like the library's ``KeyError/noKeyGiven(_:)``.
struct KeyFlagsMissing: CategorizedError {
    let description: String
    init(_ description: String) { self.description = description }
    var category: ErrorCategory { .key }
}

/// What the command-line tool adds to the library's key errors: the flags that give what was missing.
enum KeyHints {
    static let howToGiveAKey = """
    . Give at least one of:
      --key-file FILE        a key file (make one with 'coffer keygen --symmetric -o FILE')
      --key-fd N             a key file's content on descriptor N
      COFFER_KEY             environment variable holding a key file's text form
      --passphrase           a passphrase, asked on the terminal (or COFFER_PASSPHRASE, --passphrase-file FILE)
      -r RECIPIENT, -R FILE  public keys (encrypt); -i FILE  private keys (decrypt)
      --kms URI              a KMS key: aws:///KEY?REGION=R or vault:///KEY?ADDR=URL
    """

    /// The hint for `error`, with its leading punctuation; empty when there is none.
    static func hint(for error: any Error) -> String {
        guard let error = error as? KeyError else { return "" }
        switch error {
        case .noKeyGiven(.anyKey): return howToGiveAKey
        case .noKeyGiven(.ageKey): return " (-i FILE, --passphrase, --passphrase-file FILE or COFFER_PASSPHRASE)"
        case .noKeyGiven(.identityPassphrase): return " (--identity-passphrase-file FILE)"
        case .noKeyGiven(.passphrase): return ": use --passphrase-file or COFFER_PASSPHRASE"
        case .noKeyGiven(.xbcryptKey): return " (--key-file FILE, --key-fd N)"
        case .noKeyGiven(.recoveryKey): return ": give --recovery-recipient or COFFER_RECOVERY_RECIPIENT (--require-recovery turns the policy on)"
        case .insecureKeyFile: return ", or pass --allow-insecure-key-file"
        case .ageFilesOnly: return " (add --format age)"
        case .privateKeyAsRecipient: return "; 'coffer keygen --show-public FILE' prints the public key of a private key file"
        default: return ""
        }
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
