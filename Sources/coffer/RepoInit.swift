import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

/// `coffer init`: a new repository.
struct RepoInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a backup repository (docs/REPOSITORY.md).",
        discussion: """
        Makes the repository's secrets and writes its config, its first data key and one key object \
        protected by the keys given (the same key options as 'encrypt': --key-file, --passphrase, \
        -r/-R, -i, --kms, --recovery-recipient, --require-recovery).
        """)

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var publicKeys: RecipientOptions

    @Option(help: ArgumentHelp("Target size of a data pack, e.g. 8M (1M to 128M).", valueName: "size"))
    var packSize: String?

    @Option(help: ArgumentHelp("The rotation period: 'key list' warns about keys older than this, e.g. 90d, 1y (change it with 'key policy').", valueName: "duration"))
    var maxKeyAge: String?

    @Option(help: ArgumentHelp("Object lock (S3 only): every pack, index, snapshot and key object is written with a retention of N days, so nobody holding the bucket's credentials can delete or overwrite it before then (docs/S3.md). The bucket is made with object lock, or must have it.", valueName: "days"))
    var objectLockDays: Int?

    @Option(help: ArgumentHelp("The retention mode with --object-lock-days: compliance (default: nobody can shorten it) or governance (users allowed s3:BypassGovernanceRetention can).", valueName: "mode"))
    var objectLockMode: String?

    struct Result: Encodable {
        let id: String
        let repository: String
        let keyId: String
        let objectLock: ObjectLock?
        enum CodingKeys: String, CodingKey { case id, repository, keyId = "key_id", objectLock = "object_lock" }
    }

    func validate() throws {
        if let days = objectLockDays, !(1...ObjectLock.maxDays).contains(days) {
            throw ValidationError("--object-lock-days must be 1 to \(ObjectLock.maxDays)")
        }
        if let mode = objectLockMode {
            guard ObjectLock.Mode(rawValue: mode) != nil else { throw ValidationError("--object-lock-mode is compliance or governance") }
            guard objectLockDays != nil else { throw ValidationError("--object-lock-mode needs --object-lock-days") }
        }
    }

    func run() throws {
        try Runtime.reporting {
            try repo.refuseWriterKey("init")
            var options = Repository.CreateOptions()
            if let packSize {
                guard let size = parseSize(packSize), (RepositoryConfig.minPackSize...RepositoryConfig.maxPackSize).contains(size) else {
                    throw ValidationError("--pack-size must be 1M to 128M")
                }
                options.packSize = size
            }
            options.requireRecovery = publicKeys.ring.requiresRecovery
            if let days = objectLockDays {
                options.objectLock = ObjectLock(mode: objectLockMode.flatMap(ObjectLock.Mode.init(rawValue:)) ?? .compliance, days: days)
            }
            let recipients = try RepoKeys.recipients(keys, publicKeys)
            let maxAge = try maxKeyAge.map(RepoKeys.keyAge)
            let (storage, path) = try repo.createStorage(objectLockDays: objectLockDays)
            let createOptions = options
            let created = try runBlocking {
                let repository = try await Repository.create(storage: storage, keys: recipients, options: createOptions)
                let opens = try await repository.currentKeyLabels().joined(separator: ", ")
                try await repository.appendKeyEvent(KeyEvent(.initialized, key: repository.keyID, detail: opens, maxKeyAge: maxAge), first: true)
                return repository
            }
            if repo.json {
                try printJSON(Result(id: created.config.id, repository: path, keyId: created.keyID ?? "", objectLock: created.config.objectLock))
            } else {
                print("created repository \(created.config.id.prefix(10)) at \(path)")
                if let lock = created.config.objectLock { print("object lock: \(lock) (every object but locks is retained that long after it is written)") }
                print("key object \(created.keyID ?? "")")
            }
        }
    }
}
