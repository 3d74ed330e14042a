import ArgumentParser
import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `coffer key list|add|remove|rotate`: the repository's key objects.
struct RepoKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Manage the keys that open a repository.",
        discussion: "Each key object wraps the repository's secrets to some of your keys (key files, passphrases, public keys, KMS keys); adding or removing one never rewrites data. 'rotate' starts a new data-key generation for new backups; old ones stay readable. 'add --writer' writes a writer key for a backup host that may add backups but never read them (docs/REPOSITORY.md, \"Writer keys\").",
        subcommands: [List.self, Add.self, Remove.self, Rotate.self, Log.self, Policy.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the key objects and data keys: kind, id, creation time, generation, status.",
            discussion: "Warns (on standard error) about active keys older than the rotation period (init --max-key-age, key policy). The key history is checked first: an edited history is an integrity error.")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key list")
                let repository = try RepoKeys.open(repo, keys)
                let (list, history) = try runBlocking { () -> ([KeyLifecycleInfo], KeyHistory) in
                    let history = try await repository.keyHistory()
                    return (try await repository.keyLifecycle(history: history), history)
                }
                if let age = history.maxKeyAge {
                    for k in list where k.overdue {
                        Runtime.warn("warning: \(k.kind) \(k.id.prefix(12)) is older than the rotation period (\(age / 86400) days): \(k.kind == "data key" ? "start a new generation with 'coffer key rotate'" : "add a new key object and remove this one")")
                    }
                }
                if repo.json { return try printJSON(list) }
                print("   kind        id            created               gen  status   opens with")
                for k in list {
                    let mark = k.current ? "*" : " "
                    let created = k.created.map { TreeFormat.time.string(from: $0) } ?? "(unknown)".padding(toLength: 19, withPad: " ", startingAt: 0)
                    let opens = k.damaged.map { "damaged: \($0)" } ?? k.keys.joined(separator: ", ")
                    let gen = k.generation.map(String.init) ?? "-"
                    print(DisplayText.escape("\(mark)  \(k.kind.padding(toLength: 10, withPad: " ", startingAt: 0))  \(String(k.id.prefix(12)).padding(toLength: 12, withPad: " ", startingAt: 0))  \(created)  \(gen.leftPadded(3))  \(k.status.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0))  \(opens)\(k.recovery ? " (recovery)" : "")\(k.overdue ? "  OVERDUE" : "")"))
                }
                print("data key generation \(repository.dataKeyGeneration)\(history.maxKeyAge.map { "; rotation period \($0 / 86400) days" } ?? "")")
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a key object (--new-key-file, --new-passphrase, -r, --new-kms), or write a writer key (--writer -o FILE).")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions
        @OptionGroup var newKeys: NewKeyOptions

        @Flag(help: "Write a writer key file instead: it backs up but cannot read the repository.")
        var writer = false

        @Option(name: [.customShort("o"), .long], help: ArgumentHelp("Where to write the writer key (created with mode 0600, never overwritten).", valueName: "file"))
        var output: String?

        func validate() throws {
            if writer && output == nil { throw ValidationError("--writer needs -o FILE") }
            if !writer && output != nil { throw ValidationError("-o is for --writer") }
        }

        struct Result: Encodable { let id: String?; let writerKey: String?
            enum CodingKeys: String, CodingKey { case id, writerKey = "writer_key" } }

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key add")
                let repository = try RepoKeys.open(repo, keys)
                if writer, let output {
                    let bytes = try repository.makeWriterKey().encoded()
                    try Self.writeSecretFile(bytes, to: output)
                    if repo.json { try printJSON(Result(id: nil, writerKey: output)) } else { print("wrote writer key \(output)") }
                    return
                }
                let recipients = try RepoKeys.newRecipients(newKeys)
                let id = try runBlocking { try await repository.addKey(recipients) }
                if repo.json { try printJSON(Result(id: id, writerKey: nil)) } else { print("added key object \(id)") }
            }
        }

        /// Creates `path` with mode 0600 (O_EXCL: never replaces a file) and writes `bytes`.
        static func writeSecretFile(_ bytes: [UInt8], to path: String) throws {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw CofferError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
            defer { close(fd) }
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count, fsync(fd) == 0 else {
                unlink(path)
                throw CofferError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a key object (by id or unique prefix).",
            discussion: "In a repository with object lock a key object cannot be destroyed before its retain-until date: removing it only hides it, and its locked version still opens the whole repository (data written later too, whatever the data-key generation) for whoever holds that key and may read old object versions. So a key object still retained is refused, with the date, unless --force is given (docs/S3.md, \"Object lock\").")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions
        @Argument(help: "The key object's id or a unique prefix.") var id: String

        @Flag(help: "With object lock: remove a key object that is still retained (it is hidden, its locked version stays until its date).")
        var force = false

        struct Result: Encodable { let removed: String; let retainedUntil: Date?
            enum CodingKeys: String, CodingKey { case removed, retainedUntil = "retained_until" } }

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key remove")
                let repository = try RepoKeys.open(repo, keys)
                let id = self.id
                // Decided before anything is removed: what a removal would leave behind.
                let plan = try runBlocking { try await repository.planKeyRemoval(id) }
                if plan.retainedUntil != nil {
                    guard force else {
                        throw UsageError(plan.consequence + " Nothing was removed; to remove it anyway (it is then no longer listed or used), run again with --force.")
                    }
                    Runtime.warn("warning: " + plan.consequence)
                }
                let removed = try runBlocking { try await repository.removeKey(plan.id, evenIfRetained: force) }
                let until = removed.retainedUntil.map { TreeFormat.time.string(from: $0) }
                if repo.json { return try printJSON(Result(removed: removed.id, retainedUntil: removed.retainedUntil)) }
                print("removed key object \(removed.id)" + (until.map { " (its locked version stays until \($0))" } ?? ""))
            }
        }
    }

    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the key history: every init, add, remove, rotate, policy change and KMS unwrap, oldest first.",
            discussion: "The history is a hash chain of objects only full keys can write; it is checked whole before it is shown (an edited, reordered or removed event is an integrity error, exit 3). The last line gives the chain's head: note it to detect later a cut-off tail.")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        struct Output: Encodable { let events: [KeyEvent]; let head: String }

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key log")
                let repository = try RepoKeys.open(repo, keys)
                let history = try runBlocking { try await repository.keyHistory() }
                if repo.json { return try printJSON(Output(events: history.events, head: history.head)) }
                for e in history.events {
                    var line = "\(String(e.seq).leftPadded(4))  \(TreeFormat.time.string(from: e.time))  \(e.event.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0))"
                    if let k = e.key { line += "  \(k.prefix(12))" }
                    if let d = e.detail { line += "  \(d)" }
                    if let c = e.command { line += "  by '\(c)'" }
                    if let a = e.maxKeyAge { line += a > 0 ? "  rotation period \(a / 86400) days" : "  no rotation period" }
                    line += "  (\(e.username)@\(e.hostname))"
                    print(DisplayText.escape(line))
                }
                print("\(counted(history.events.count, "event")); head \(history.head.isEmpty ? "(empty)" : history.head)")
            }
        }
    }

    struct Policy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change the rotation period that 'key list' checks keys against (recorded in the key history).")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        @Option(help: ArgumentHelp("The rotation period, e.g. 90d or 1y; 0 or off: no warning.", valueName: "duration"))
        var maxKeyAge: String

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key policy")
                let seconds = try RepoKeys.keyAge(maxKeyAge)
                let repository = try RepoKeys.open(repo, keys)
                let event = try runBlocking { try await repository.appendKeyEvent(KeyEvent(.policy, maxKeyAge: seconds)) }
                if repo.json { try printJSON(["seq": event.seq, "max_key_age": seconds]) } else {
                    print(seconds > 0 ? "rotation period \(seconds / 86400) days" : "no rotation period")
                }
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a new data-key generation: new data is encrypted to a new key pair; old data stays readable.")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key rotate")
                let repository = try RepoKeys.open(repo, keys)
                let generation = try runBlocking { try await repository.rotateDataKey() }
                if repo.json { try printJSON(["generation": generation]) } else {
                    print("data key generation \(generation); writer keys made before still write to generation \(generation - 1): make new ones")
                }
            }
        }
    }
}
