import ArgumentParser
import CofferCloud
import CofferDatabase
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

@main
struct Coffer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "Encrypted backups: an authenticated, parallel, seekable file format and the tools around it.",
        discussion: """
        Keys and passphrases are never taken from command-line arguments: they come from files \
        (--key-file, --passphrase-file), descriptors (--key-fd), the environment (COFFER_KEY, \
        COFFER_PASSPHRASE) or a prompt on the terminal.

        Exit codes:
          0    success
          1    any other failure
          2    key: none given, none opens the file, an unusable or insecure key file
          3    integrity: altered, truncated, reordered or swapped data, bad header
          4    not a Coffer file, or a Coffer version this build does not read
          5    I/O failure: unreadable input, unwritable output, disk full
          64   invalid command-line usage
          130  interrupted by SIGINT (temporary output files are removed)
          143  terminated by SIGTERM (temporary output files are removed)

        When the reader of standard output goes away ('coffer decrypt ... | head'), coffer stops \
        without a message, ended by SIGPIPE as other tools are.
        """,
        version: "0.1.0 (writes format \(Limits.versionLineV2); reads \(Limits.versionLine), \(Limits.versionLineV2), \(AgeHeader.versionLine) and XtraBackup .xbcrypt)",
        subcommands: [Keygen.self, Encrypt.self, Decrypt.self, Verify.self, Inspect.self, Rewrap.self, Reencrypt.self, Migrate.self, KMSBench.self],
        groupedSubcommands: [
            CommandGroup(name: "Repository", subcommands: [
                RepoInit.self, RepoBackup.self, RepoSnapshots.self, RepoLs.self, RepoRestore.self, RepoDump.self,
                RepoDiff.self, RepoCheck.self, RepoForget.self, RepoPrune.self, RepoKey.self,
                RepoRestoreDB.self, RepoRestoreTest.self, RepoLock.self,
            ]),
        ])

    static func main() {
        Runtime.prepare()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// Process-wide set-up and error reporting shared by the subcommands.
enum Runtime {
    static func prepare() {
        disableCoreDumps()
        // COFFER_MALLOC_DEFAULTS=1 keeps glibc's defaults, so scripts/bench.sh can measure the difference.
        if ProcessInfo.processInfo.environment["COFFER_MALLOC_DEFAULTS"] != "1" { AllocatorTuning.apply() }
        // A closed pipe must surface as a write error, not kill the process mid-file (a temporary
        // output or a decompressor may need cleaning up); ``reporting(_:)`` then ends quietly.
        signal(SIGPIPE, SIG_IGN)
        installInterruptHandler()
    }

    /// Keys, passphrases and plaintext are in this process's memory: no core file may hold them,
    /// and no other process of the same user may read that memory through ptrace or /proc/PID/mem
    /// (docs/KEYS.md, "Secrets in memory"). Done first, before any secret is read. The limit is
    /// inherited by child processes (decompressors), which see no secret anyway.
    static func disableCoreDumps() {
        var none = rlimit(rlim_cur: 0, rlim_max: 0)
        if setrlimit(Int32(RLIMIT_CORE.rawValue), &none) != 0 {
            warn("warning: cannot disable core dumps (setrlimit: \(String(cString: strerror(errno))))")
        }
        if linuxPrctl(4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0) != 0 {
            warn("warning: cannot mark the process non-dumpable (prctl: \(String(cString: strerror(errno))))")
        }
    }

    nonisolated(unsafe) static var signalSources: [DispatchSourceSignal] = []

    /// Set first by the interrupt handler, which then tears down and exits with the signal's code.
    static let interruption = LockedValue(false)

    /// Once an interrupt began, the command's own outcome must not be reported or become the exit
    /// status: the handler tore down what the command used (a restore test's server, so the command
    /// fails with "initdb killed by signal 15"), and it exits with 130 or 143 when done. The thread
    /// that finished the command waits for that.
    static func waitIfInterrupted() {
        guard interruption.withValue({ $0 }) else { return }
        while true { sleep(1) }
    }

    /// On SIGINT or SIGTERM: remove temporary outputs, then exit 130 (or 143).
    static func installInterruptHandler() {
        for (sig, code) in [(SIGINT, Int32(130)), (SIGTERM, Int32(143))] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                _ = interruption.exchange(true)
                ThrowawayRegistry.shared.interrupt()  // restore-test's servers (CofferDatabase)
                TemporaryFiles.removeAll()
                TerminalPrompt.restoreEcho()
                FileHandle.standardError.write(Data("\ncoffer: interrupted; no partial output left\n".utf8))
                exit(code)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    static func exitCode(for error: any CategorizedError) -> Int32 {
        switch error.category {
        case .key: return 2
        case .integrity: return 3
        case .format: return 4
        case .io: return 5
        case .usage: return 64
        }
    }

    /// Writes one line to standard error. The whole message is escaped (``DisplayText``): it may
    /// hold names from headers, file names and error text, and none may drive the terminal.
    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("coffer: \(DisplayText.escape(message))\n".utf8))
    }

    /// Runs a subcommand body, turning a ``CofferError`` into one line on stderr and its exit code.
    static func reporting(_ body: () throws -> Void) throws {
        // COFFER_KMS_STATS=1: how many key-service calls the command made (scripts/bench-kms.sh).
        defer {
            if ProcessInfo.processInfo.environment["COFFER_KMS_STATS"] == "1" { warn(KMSCallStats.shared.summary) }
        }
        do {
            try body()
            waitIfInterrupted()
        } catch let error as any CategorizedError {
            waitIfInterrupted()
            if error.category == .io, standardOutputReaderGone() { endLikeABrokenPipe() }
            warn("error: \(error)\(CommandHints.hint(for: error))")
            throw ExitCode(exitCode(for: error))
        } catch {
            waitIfInterrupted()
            throw error
        }
    }
}

extension Runtime {
    /// True when standard output is a pipe or socket whose reading end is closed (`coffer … | head`
    /// after head exited): poll(2) reports POLLERR (pipe) or POLLHUP (socket) on the writing end.
    static func standardOutputReaderGone() -> Bool {
        var st = stat()
        guard fstat(1, &st) == 0, (st.st_mode & S_IFMT) == S_IFIFO || (st.st_mode & S_IFMT) == S_IFSOCK else { return false }
        var descriptor = pollfd(fd: 1, events: 0, revents: 0)
        guard poll(&descriptor, 1, 0) == 1 else { return false }
        return descriptor.revents & Int16(POLLERR | POLLHUP) != 0
    }

    /// Ends the way other Unix tools end when their reader went away: no message, killed by
    /// SIGPIPE (a shell reports nothing; with `set -o pipefail` the pipeline's status is 141).
    /// Temporary outputs are removed first, as on an interrupt.
    static func endLikeABrokenPipe() -> Never {
        TemporaryFiles.removeAll()
        signal(SIGPIPE, SIG_DFL)
        raise(SIGPIPE)
        exit(128 + SIGPIPE)
    }
}

/// A command-line usage problem found while running rather than while parsing (exit 64).
struct UsageError: CategorizedError {
    let description: String
    init(_ description: String) { self.description = description }
    var category: ErrorCategory { .usage }
}

/// "1 file", "2 files": a count and its noun, singular or plural.
func counted<N: BinaryInteger>(_ count: N, _ singular: String, plural: String? = nil) -> String {
    "\(count) \(count == 1 ? singular : plural ?? singular + "s")"
}

/// prctl(2): variadic in C, so Swift does not import it; called with its four unsigned-long arguments.
@_silgen_name("prctl")
private func linuxPrctl(_ option: Int32, _ arg2: UInt, _ arg3: UInt, _ arg4: UInt, _ arg5: UInt) -> Int32
