import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert XtraBackup .xbcrypt files or age files to Coffer files in one pass, plaintext never on disk.",
        discussion: """
        Every NAME.xbcrypt (--from xbcrypt) or NAME.age (--from age), given or found under a given \
        directory, becomes NAME.cof, encrypted to the Coffer keys given (--key-file, --passphrase, \
        -r, ...). The old files' key: for xbcrypt, --from-key-file (its raw bytes, as xbcrypt reads \
        them) or XBCRYPT_ENCRYPTION_KEY; for age, --from-identity (age identity files, OpenSSH keys) \
        and/or --from-passphrase-file.

        Each new file is read back and authenticated before anything is removed. With \
        --remove-original the .xbcrypt file is then removed, but only if its own decryption was \
        checked (XBCRYP03 chunks carry a SHA-256); XBCRYP01/02 files decrypt without error under \
        any key, so they are kept, with a warning. An interrupted run can be run again: files whose \
        NAME.cof already exists, authenticates and holds the same plaintext are not converted twice; \
        a NAME.cof that holds anything else is an error, and both files stay. Each path given gets \
        its own file key (a passphrase is stretched once per path).

        age files are authenticated, so with --remove-original each NAME.age is removed once its \
        NAME.cof is verified to hold exactly the plaintext NAME.age decrypts to.

        Examples:
          XBCRYPT_ENCRYPTION_KEY=... coffer migrate --from xbcrypt --key-file backup.key --remove-original /data/backup
          coffer migrate --from age --from-identity ~/.config/age/keys.txt -r age1... --remove-original /backups
        """)

    @Option(help: ArgumentHelp("The format to convert from: xbcrypt or age.", valueName: "format"))
    var from: String

    @Option(help: ArgumentHelp("With --from age: an identity file of the old files (AGE-SECRET-KEY-1…, an OpenSSH key). Repeatable.",
                               valueName: "file"))
    var fromIdentity: [String] = []

    @Option(help: ArgumentHelp("With --from age: the old files' passphrase, first line of this file.", valueName: "file"))
    var fromPassphraseFile: String?

    @Option(help: ArgumentHelp("The old .xbcrypt key, as a file of its raw bytes (or XBCRYPT_ENCRYPTION_KEY).",
                               valueName: "file"))
    var fromKeyFile: String?

    @OptionGroup var keys: KeyOptions
    @OptionGroup var publicKeys: RecipientOptions
    @OptionGroup var signing: SignOptions
    @OptionGroup var engine: EngineOptions

    @Option(help: ArgumentHelp("scrypt work factor log2(N) for a new passphrase.", valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Flag(help: "Remove each old file once its Coffer file is complete, flushed, read back and authenticated.")
    var removeOriginal = false

    @Argument(help: ArgumentHelp("NAME.xbcrypt or NAME.age files, or directories to search for them.", valueName: "path"))
    var paths: [String]

    func validate() throws {
        guard from == "xbcrypt" || from == "age" else {
            throw ValidationError("--from must be xbcrypt or age")
        }
        if from == "xbcrypt" && (!fromIdentity.isEmpty || fromPassphraseFile != nil) {
            throw ValidationError("--from-identity and --from-passphrase-file are for --from age (xbcrypt keys: --from-key-file)")
        }
        if from == "age" && fromKeyFile != nil {
            throw ValidationError("--from-key-file is for --from xbcrypt (age keys: --from-identity, --from-passphrase-file)")
        }
        guard !paths.isEmpty else { throw ValidationError("give at least one file or directory") }
    }

    func run() throws {
        try Runtime.reporting {
            let source = try oldFormat()
            let recipients = try keys.recipients(workFactor: workFactor, publicKeys: try publicKeys.publicKeys())
            let signer = try signing.signer(keys: keys)
            // One file key per path given, wrapped once for it (a passphrase is stretched once per
            // path): files sharing a file key must have distinct object names (docs/FORMAT.md), and
            // names are relative to each directory given, so two paths could repeat one.
            let newEncryptor = { () throws -> CofferEncryptor in
                var encryptor = try CofferEncryptor(recipients: recipients)
                encryptor.signer = signer
                encryptor.signatureDigest = signing.digest
                return encryptor
            }
            // The new keys that can also open files (symmetric ones) authenticate an earlier run's output.
            // KMS keys given with --kms can too (one unwrap call for the run).
            var identities = recipients.compactMap { $0 as? Identity }
            let kmsKeys = recipients.compactMap { ($0 as? KMSRecipient)?.uri }
            if !kmsKeys.isEmpty { identities.append(KMSIdentity(uris: kmsKeys)) }
            let parameters = HeaderParameters()
            for path in paths {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                    throw CofferError.readFailed(path: path, reason: "no such file or directory")
                }
                let encryptor = try newEncryptor()
                if isDirectory.boolValue {
                    try runDirectory(engine: engine, removeOriginal: removeOriginal, verb: "migrated") { run in
                        try Migration(run: run).migrate(root: path, from: source, encryptor: encryptor, identities: identities,
                                                        parameters: parameters)
                    }
                } else {
                    let progress = ProgressLine(total: nil, quiet: engine.quiet)
                    let run = DirectoryRun(threads: engine.threads, removeOriginal: removeOriginal, progress: progress.counter)
                    let outcome = try Migration(run: run).migrateFile(
                        path, objectName: nil, from: source, encryptor: encryptor, identities: identities,
                        parameters: parameters, threads: engine.threads)
                    progress.stop()
                    if outcome.keptUnverifiable {
                        Runtime.warn("warning: \(path): the original was kept: \(source.suffix == DirectoryRun.ageSuffix ? "the existing .cof cannot be opened with the keys given" : "XBCRYP01/02 chunks cannot be checked")")
                    }
                    if !engine.quiet { Runtime.warn("migrated \(path) (\(ProgressLine.bytes(outcome.bytes)))") }
                }
            }
        }
    }

    /// The old files' format and key.
    func oldFormat() throws -> MigrationSource {
        if from == "age" {
            var old = KeyRing.forCommandLine()
            old.identityFiles = fromIdentity
            old.allowInsecureKeyFiles = keys.allowInsecureKeyFile
            var identities = KeyRing.ageIdentities(among: try old.identitiesFromFiles())
            if let path = fromPassphraseFile {
                identities.append(try AgeScrypt(passphrase: try KeySources.passphrase(file: path, allowInsecure: keys.allowInsecureKeyFile)))
            }
            guard !identities.isEmpty else {
                throw KeyFlagsMissing("the age files need their key: --from-identity FILE (age identities, OpenSSH keys) or --from-passphrase-file FILE")
            }
            return .age(identities: identities)
        }
        var oldKey = KeyRing.forCommandLine()
        oldKey.keyFiles = fromKeyFile.map { [$0] } ?? []
        oldKey.allowInsecureKeyFiles = keys.allowInsecureKeyFile
        let (raw, keySource) = try oldKey.xbcryptKey()
        return .xbcrypt(key: try Xbcrypt.key(raw, source: keySource))
    }
}
