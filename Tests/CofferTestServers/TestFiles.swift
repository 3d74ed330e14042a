import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writing the files tests make, safely while other tests of the same process spawn children.
///
/// Every test suite runs in one process, in parallel. A descriptor a test holds while another test
/// spawns a child reaches that child unless it is close-on-exec (Foundation's `Data.write` and
/// `FileManager.createFile` open without O_CLOEXEC); and a file that any process holds open for
/// writing cannot be executed (execve fails with ETXTBSY, "Text file busy"). Both happened: a
/// test's fake tool, still open for writing in a child of another test, could not be started.
///
/// - ``write(_:to:mode:)`` opens with O_CLOEXEC, so no child keeps the descriptor past its exec;
/// - ``writeExecutable(_:to:mode:)`` goes further: a file that will be executed is written by a
///   child process (`/bin/sh -c 'cat > FILE'`), so this process never holds a descriptor open for
///   writing to it at all. O_CLOEXEC alone leaves a window: a child forked by another thread holds
///   a copy of every descriptor from its fork until its exec, and a test that execs the file just
///   then still meets ETXTBSY.
/// - every spawn helper adds ``TestSpawn/closeInheritedDescriptors(_:)`` (descriptors 3 and up are
///   closed in the child), so a descriptor some other code opened without O_CLOEXEC does not
///   outlive the child's start either.
public enum TestFiles {
    /// Writes `bytes` to `path` (created or truncated; the directory must exist), then sets `mode`.
    /// A file that will be executed goes through ``writeExecutable(_:to:mode:)`` instead.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ServerError("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try writeAll(fd, bytes, path)
        guard fchmod(fd, mode) == 0 else { throw ServerError("cannot chmod \(path): \(String(cString: strerror(errno)))") }
    }

    /// Writes a file that will be executed (a fake tool, a wrapper script): through a child shell,
    /// which alone ever holds it open for writing and has exited when this returns.
    public static func writeExecutable(_ bytes: [UInt8], to path: String, mode: mode_t = 0o755) throws {
        let argv = ["/bin/sh", "-c", "umask 077 && cat > \"$1\" && chmod \"$2\" \"$1\"", "sh", path, String(mode, radix: 8)]
        let (pid, input) = try TestSpawn.startWithInput(argv, environment: ["PATH=/usr/bin:/bin"])
        // A child that exits early must not kill the test process with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let written = Result { try writeAll(input, bytes, path) }
        close(input)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        try written.get()
        guard status == 0 else { throw ServerError("cannot write \(path): /bin/sh ended with wait status \(status)") }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ServerError("cannot write \(path): \(String(cString: strerror(errno)))") }
                done += n
            }
        }
    }

    /// A pipe whose two ends are close-on-exec (a spawn then passes on only what it dup2s).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard testFilesPipe2(&fds, O_CLOEXEC) == 0 else { throw ServerError("pipe: \(String(cString: strerror(errno)))") }
        return (fds[0], fds[1])
    }
}

extension TestSpawn {
    /// Starts `argv` (argv[0] a path) with `environment` ("NAME=value"), standard input from a new
    /// pipe whose write end is returned (close-on-exec; the caller writes and closes it), standard
    /// output and error to /dev/null, descriptors 3 and up closed.
    public static func startWithInput(_ argv: [String], environment: [String]) throws -> (pid: pid_t, input: Int32) {
        let pipe = try TestFiles.pipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipe.read, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        guard closeInheritedDescriptors(&actions) else {
            close(pipe.read); close(pipe.write)
            throw ServerError("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later)")
        }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        close(pipe.read)
        guard rc == 0 else { close(pipe.write); throw ServerError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        return (pid, pipe.write)
    }
}

/// pipe2(2) is behind _GNU_SOURCE in Glibc's headers, so Swift does not import it.
@_silgen_name("pipe2")
private func testFilesPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
