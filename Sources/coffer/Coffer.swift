import ArgumentParser
import CofferCloud
import CofferFiles
import CofferFormat
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
        Keys and passphrases are never taken from command-line arguments: they come from files
        (--key-file, --passphrase-file), descriptors (--key-fd), the environment (COFFER_KEY,
        COFFER_PASSPHRASE) or a prompt on the terminal.

        Exit codes:
          0    success
          1    any other failure
          2    key problem: no key given, no given key opens the file, unusable or insecure key file
          3    integrity failure: tampered, truncated, reordered or swapped data, malformed header
          4    not a Coffer file, or a Coffer version this build does not read
          5    I/O failure: unreadable input, unwritable output, disk full
          64   invalid command-line usage
          130  interrupted (temporary output files are removed)
        """,
        version: "0.1.0 (format \(Limits.versionLine))",
        subcommands: [Keygen.self, Encrypt.self, Decrypt.self, Verify.self, Inspect.self, Rewrap.self, Reencrypt.self, Migrate.self, KMSBench.self,
                      RepoInit.self,
                      RepoCheck.self,
                      RepoPrune.self,
                      RepoKey.self,
                      RepoBackup.self,
                      RepoSnapshots.self,
                      RepoLs.self,
                      RepoRestore.self,
                      RepoDump.self,
                      RepoDiff.self,
                      RepoForget.self,
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
        // A closed pipe must surface as a write error, not kill the process mid-file.
        signal(SIGPIPE, SIG_IGN)
        installInterruptHandler()
        KeyTypes.registerAll()
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

    /// On SIGINT or SIGTERM: remove temporary outputs, then exit 130 (or 143).
    static func installInterruptHandler() {
        for (sig, code) in [(SIGINT, Int32(130)), (SIGTERM, Int32(143))] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
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
        } catch let error as any CategorizedError {
            warn("error: \(error)")
            throw ExitCode(exitCode(for: error))
        }
    }
}

/// prctl(2): variadic in C, so Swift does not import it; called with its four unsigned-long arguments.
@_silgen_name("prctl")
private func linuxPrctl(_ option: Int32, _ arg2: UInt, _ arg3: UInt, _ arg4: UInt, _ arg5: UInt) -> Int32
