import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert XtraBackup .xbcrypt files to Coffer files in one pass, plaintext never on disk.",
        discussion: """
        Every NAME.xbcrypt (given, or found under a given directory) becomes NAME.cof, encrypted to
        the Coffer keys given (--key-file, --passphrase, ...). The old file's key is given with
        --from-key-file (its raw bytes, as xbcrypt reads them) or XBCRYPT_ENCRYPTION_KEY.

        Each new file is read back and authenticated before anything is removed. With
        --remove-original the .xbcrypt file is then removed, but only if its own decryption was
        checked (XBCRYP03 chunks carry a SHA-256); XBCRYP01/02 files decrypt without error under
        any key, so they are kept, with a warning. An interrupted run can be run again: files whose
        NAME.cof already exists and authenticates are not converted twice.

        Example:
          XBCRYPT_ENCRYPTION_KEY=... coffer migrate --from xbcrypt --key-file backup.key --remove-original /data/backup
        """)

    @Option(help: ArgumentHelp("The format to convert from: xbcrypt.", valueName: "format"))
    var from: String

    @Option(help: ArgumentHelp("The old .xbcrypt key, as a file of its raw bytes (or XBCRYPT_ENCRYPTION_KEY).",
                               valueName: "file"))
    var fromKeyFile: String?

    @OptionGroup var keys: KeyOptions
    @OptionGroup var engine: EngineOptions

    @Option(help: ArgumentHelp("scrypt work factor for a new passphrase (default \(Passphrase.defaultWorkFactor)).", valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Flag(help: "Remove each old file once its Coffer file is complete, flushed, read back and authenticated.")
    var removeOriginal = false

    @Argument(help: ArgumentHelp("NAME.xbcrypt files, or directories to search for them.", valueName: "path"))
    var paths: [String]

    func validate() throws {
        guard from == "xbcrypt" else {
            throw ValidationError("--from \(from) is not supported yet: this build migrates from xbcrypt")
        }
        guard !paths.isEmpty else { throw ValidationError("give at least one file or directory") }
    }

    func run() throws {
        try Runtime.reporting {
            var oldKey = KeyOptions()
            oldKey.keyFiles = fromKeyFile.map { [$0] } ?? []
            oldKey.allowInsecureKeyFile = keys.allowInsecureKeyFile
            let (raw, keySource) = try oldKey.xbcryptKey()
            let key = try Xbcrypt.key(raw, source: keySource)
            // One file key for the whole migration, wrapped once (a passphrase is stretched once).
            let recipients = try keys.recipients(workFactor: workFactor)
            let encryptor = try CofferEncryptor(recipients: recipients)
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
                if isDirectory.boolValue {
                    try runDirectory(engine: engine, removeOriginal: removeOriginal, verb: "migrated") { run in
                        try XbcryptMigration(run: run).migrate(root: path, key: key, encryptor: encryptor, identities: identities,
                                                               parameters: parameters)
                    }
                } else {
                    let progress = ProgressLine(total: nil, quiet: engine.quiet)
                    let run = DirectoryRun(threads: engine.threads, removeOriginal: removeOriginal, progress: progress.counter)
                    var st = stat()
                    let mode = stat(path, &st) == 0 ? st.st_mode & 0o777 : 0o600
                    let outcome = try XbcryptMigration(run: run).migrateFile(
                        path, objectName: nil, mode: mode, key: key, encryptor: encryptor, identities: identities,
                        parameters: parameters, threads: engine.threads)
                    progress.stop()
                    if outcome.keptUnverifiable {
                        Runtime.warn("warning: \(path): the original was kept: XBCRYP01/02 chunks cannot be checked")
                    }
                    if !engine.quiet { Runtime.warn("migrated \(path) (\(ProgressLine.bytes(outcome.bytes)))") }
                }
            }
        }
    }
}
