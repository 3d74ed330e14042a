import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

/// The repository a command works on: `--repo PATH` or `COFFER_REPOSITORY` (shared by every
/// repository command: init, check, prune, key, backup, snapshots, ls, restore, dump, diff, forget).
/// `-r` stays "recipient", as in the file commands.
struct RepoOptions: ParsableArguments {
    @Option(name: .customLong("repo"),
            help: ArgumentHelp("The repository (a directory), or COFFER_REPOSITORY.", valueName: "path"))
    var repo: String?

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

    /// The repository's storage (a local directory today).
    func storage() throws -> LocalStorage {
        try LocalStorage(path: repositoryPath())
    }

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
