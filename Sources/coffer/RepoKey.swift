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
        subcommands: [List.self, Add.self, Remove.self, Rotate.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the key objects and which keys open them.")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key list")
                let repository = try RepoKeys.open(repo, keys)
                let list = try runBlocking { try await repository.listKeys() }
                if repo.json { return try printJSON(list) }
                for k in list {
                    let mark = k.current ? "*" : " "
                    let details = [k.created.map { ISO8601DateFormatter().string(from: $0) }, k.hostname, k.username].compactMap { $0 }
                    let opens = k.damaged.map { "damaged: \($0)" } ?? k.keys.joined(separator: ", ")
                    print(DisplayText.escape("\(mark) \(k.id.prefix(12))  \(opens)\(k.recovery ? " (recovery)" : "")\(details.isEmpty ? "" : "  " + details.joined(separator: " "))"))
                }
                print("data key generation \(repository.dataKeyGeneration)")
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
        static let configuration = CommandConfiguration(abstract: "Remove a key object (by id or unique prefix).")
        @OptionGroup var repo: RepoOptions
        @OptionGroup var keys: KeyOptions
        @Argument(help: "The key object's id or a unique prefix.") var id: String

        func run() throws {
            try Runtime.reporting {
                try repo.refuseWriterKey("key remove")
                let repository = try RepoKeys.open(repo, keys)
                let id = self.id
                try runBlocking { try await repository.removeKey(id) }
                if repo.json { try printJSON(["removed": id]) } else { print("removed key object \(id)") }
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
