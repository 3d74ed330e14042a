import ArgumentParser
import CofferFormat
import CofferRepository
import CofferS3
import Foundation
import Synchronization

/// The repository a command works on: `--repo PATH` or `COFFER_REPOSITORY` (shared by every
/// repository command: init, check, prune, key, backup, snapshots, ls, restore, dump, diff, forget).
/// `-r` stays "recipient", as in the file commands.
struct RepoOptions: ParsableArguments {
    @Option(name: .customLong("repo"),
            help: ArgumentHelp("The repository: a directory, or s3://BUCKET/PREFIX?AWS_REGION=R[&AWS_ENDPOINT=URL] (docs/S3.md); or COFFER_REPOSITORY.",
                               valueName: "path|uri"))
    var repo: String?

    @Option(name: .customLong("connections"),
            help: ArgumentHelp("Requests to S3 in flight at once (default 8; 1 to 64).", valueName: "n"))
    var connections: Int?

    @Option(name: .customLong("writer-key"),
            help: ArgumentHelp("A writer key file (from 'coffer key add --writer'): back up without being able to read the repository. Commands that read data refuse it.",
                               valueName: "file"))
    var writerKey: String?

    @Flag(help: "Print results as JSON (restic's field names).")
    var json = false

    static let environmentRepository = "COFFER_REPOSITORY"

    /// The repository path from the flag or the environment; a usage error when neither is set.
    func repositoryPath() throws -> String {
        if let repo, !repo.isEmpty { return repo }
        if let env = ProcessInfo.processInfo.environment[Self.environmentRepository], !env.isEmpty { return env }
        throw ValidationError("no repository given: use --repo PATH or set \(Self.environmentRepository)")
    }

    /// The repository's storage: a local directory, or a bucket for an `s3://` URI.
    func storage() throws -> any Storage {
        let location = try repositoryPath()
        if S3URI.isS3URI(location) { return try s3Storage(location) }
        return try LocalStorage(path: location)
    }

    /// A new repository's storage (init): the directory is made (its parent must exist); on S3 the
    /// bucket is made when it does not exist. Refuses a location that already holds a repository.
    func createStorage(objectLockDays: Int? = nil) throws -> (storage: any Storage, location: String) {
        let location = try repositoryPath()
        if S3URI.isS3URI(location) {
            let storage = try s3Storage(location, objectLockDays: objectLockDays)
            try runBlocking { try await storage.prepareBucket(objectLock: objectLockDays != nil) }
            return (storage, storage.uri.redacted)
        }
        if objectLockDays != nil { throw ValidationError("--object-lock-days needs an s3:// repository") }
        if FileManager.default.fileExists(atPath: "\(location)/config") {
            throw RepositoryError.refused("a repository already exists at \(location)")
        }
        return (try LocalStorage.create(path: location), location)
    }

    func s3Storage(_ location: String, objectLockDays: Int? = nil) throws -> S3Storage {
        let uri: S3URI
        do { uri = try S3URI(parsing: location) } catch { throw ValidationError("\(error)") }
        if uri.auth == .specified {
            FileHandle.standardError.write(Data("warning: \(uri.redacted) carries AWS credentials (AUTH=specified): they end up in shell history and process lists; prefer AUTH=implicit with AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY\n".utf8))
        }
        var options = S3Options.fromEnvironment()
        if let connections {
            guard (1...64).contains(connections) else { throw ValidationError("--connections must be 1 to 64") }
            options.connections = connections
        }
        Self.printStatsAtExit()
        let retention = objectLockDays.map { S3Storage.Retention(mode: .compliance, days: $0) }
        return S3Storage(client: try S3Client(uri: uri, options: options), retention: retention)
    }

    /// COFFER_S3_STATS=1: the S3 requests the command made, on standard error at exit
    /// (scripts/bench-s3.sh divides them by the bytes backed up).
    static func printStatsAtExit() {
        guard ProcessInfo.processInfo.environment["COFFER_S3_STATS"] == "1" else { return }
        statsOnce.withLock { registered in
            guard !registered else { return }
            registered = true
            atexit { FileHandle.standardError.write(Data((S3RequestStats.shared.summary + "\n").utf8)) }
        }
    }
    static let statsOnce = Mutex(false)

    /// Refuses a writer key for a command that reads data (snapshots, trees, file contents).
    func refuseWriterKey(_ command: String) throws {
        if writerKey != nil {
            throw ValidationError("'\(command)' reads the repository's data, which a writer key cannot decrypt: give the repository's keys instead of --writer-key")
        }
    }
}

/// Runs async repository code from a synchronous command's `run()`: the main thread waits while
/// the work runs on the concurrency pool (the main thread is never one of the pool's threads).
func runBlocking<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    let box = BlockingResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { box.result = .success(try await operation()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

/// Written by the task before it signals, read by the waiter after: the semaphore orders them.
final class BlockingResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, Error>?
}

/// Writes a value as one JSON document on standard output (sorted snake_case keys as restic names
/// them, ISO 8601 dates).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    encoder.keyEncodingStrategy = .convertToSnakeCase
    var data = try encoder.encode(value)
    data.append(0x0A)
    FileHandle.standardOutput.write(data)
}
