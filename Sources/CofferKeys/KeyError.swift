import CofferCloud
import CofferFormat

/// Everything that can go wrong with a key: one that cannot be used, none given, a policy that
/// refuses one, or a key service that could not wrap or unwrap (with the service's own error kept
/// whole). Messages never name command-line flags; the command-line tool adds its hints from the
/// structured cases (``MissingKey``, ``insecureKeyFile(path:what:mode:)``).
public enum KeyError: CategorizedError, Equatable {
    /// A key, key file or passphrase that cannot be used, with the reason.
    case invalid(String)
    /// No key was given where one is needed.
    case noKeyGiven(MissingKey)
    /// A policy refused a key or an operation on keys.
    case refused(String)
    /// A key type that exists in age files only (SSH keys), given for a Coffer file.
    case ageFilesOnly(String)
    /// A private key where a public key (a recipient) was expected; `source` names where.
    case privateKeyAsRecipient(source: String)
    /// A secret file that group or others may read (`mode`: its permission bits).
    case insecureKeyFile(path: String, what: String, mode: UInt32)
    /// A key service (AWS KMS, Vault Transit) failed; `context` says what was being done with
    /// which key, `cause` is the service's error (its kind, HTTP status and error code).
    case service(context: String, cause: KeyServiceError)

    /// What was missing.
    public enum MissingKey: Equatable, Sendable {
        /// No key at all.
        case anyKey
        /// An age file's key: an age identity, an OpenSSH key or a passphrase.
        case ageKey
        /// The passphrase of a protected key file, with no terminal to ask on.
        case identityPassphrase(path: String)
        /// A passphrase, with no terminal to ask on.
        case passphrase
        /// An XtraBackup .xbcrypt file's key.
        case xbcryptKey
        /// The recovery key, which the recovery policy requires.
        case recoveryKey
    }

    public var category: ErrorCategory { .key }

    public var description: String {
        switch self {
        case .invalid(let reason), .refused(let reason):
            return reason
        case .ageFilesOnly(let what):
            return "\(what) encrypt age files only; Coffer files take an age1… key"
        case .privateKeyAsRecipient(let source):
            return "\(source) is a private key; encrypting needs its public key (the .pub file)"
        case .noKeyGiven(let missing):
            switch missing {
            case .anyKey: return "no key given"
            case .ageKey: return "an age file needs its key: an age identity file or OpenSSH private key, or a passphrase"
            case .identityPassphrase(let path):
                return "\(path) is protected by a passphrase: give it in a passphrase file or \(KeyRing.environmentIdentityPassphrase), or run on a terminal"
            case .passphrase: return "a passphrase is needed but there is no terminal to ask on"
            case .xbcryptKey:
                return "an XtraBackup .xbcrypt file needs its key: a key file (its raw bytes, as xbcrypt reads them), a descriptor, or \(KeyRing.environmentXbcryptKey)"
            case .recoveryKey:
                return "the recovery policy (\(KeyRing.environmentRequireRecovery)=1) is on but no recovery key is set (\(KeyRing.environmentRecovery))"
            }
        case .insecureKeyFile(let path, let what, let mode):
            let who = mode & 0o040 != 0 ? "its group" : "other users"
            let octal = String(mode, radix: 8)
            return "\(what) \(path) is readable by \(who) (mode \(String(repeating: "0", count: max(0, 3 - octal.count)) + octal)): run 'chmod 600 \(path)'"
        case .service(let context, let cause):
            return context.isEmpty ? "\(cause)" : "\(context): \(cause)"
        }
    }
}
