import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one way Coffer starts a child process (database tools, and — to be switched over — the
/// `--stdin-from-command` command and decompressors): `posix_spawn` of a path (no shell), with
///
/// - descriptors 0, 1 and 2 as the caller says (/dev/null, one of its descriptors, inherited, or
///   for standard error a pipe whose read end is returned), every other descriptor closed in the
///   child (`closefrom(3)` in the spawn actions), so nothing of this process leaks into a tool and
///   a process holding many descriptors cannot push the child past its open-file limit;
/// - default dispositions of SIGPIPE, SIGINT and SIGTERM and an empty signal mask (the CLI ignores
///   SIGINT/SIGTERM to handle them on a queue, and ignored signals survive exec);
/// - optionally a process group of its own (so a terminal's Ctrl-C reaches only Coffer, which
///   tears its children down in order);
/// - the environment given, by default ``ChildEnvironment/entries()`` (no Coffer secrets).
///
/// Lives beside ``ChildEnvironment`` so that every module above (CofferFiles, CofferRepository,
/// CofferDatabase) can use it.
public enum ChildSpawn {
    /// What a child's standard descriptor is.
    public enum Descriptor: Sendable, Equatable {
        /// /dev/null.
        case null
        /// This descriptor of the caller, duplicated (the caller keeps and closes its own).
        case fd(Int32)
        /// The caller's own descriptor of the same number.
        case inherit
    }

    /// Why a child could not be started: the call that failed and its errno.
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public let call: String
        public let code: Int32
        public var description: String { "\(call): \(String(cString: strerror(code)))" }
    }

    /// A started child: its pid, and the read end of its standard error pipe when one was asked
    /// for (close-on-exec; the caller reads and closes it).
    public struct Started: Sendable {
        public let pid: pid_t
        public let stderrPipe: Int32?
    }

    /// Starts `argv` (`argv[0]` an absolute or relative path, not looked up on PATH).
    /// `captureStderr`: standard error is a new pipe, its read end returned (overrides `stderr`).
    public static func start(_ argv: [String], environment: [String] = ChildEnvironment.entries(),
                             stdin: Descriptor = .null, stdout: Descriptor = .null, stderr: Descriptor = .inherit,
                             captureStderr: Bool = false, newProcessGroup: Bool = false) throws -> Started {
        precondition(!argv.isEmpty, "a child needs argv[0]")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        func set(_ descriptor: Descriptor, _ number: Int32, readOnly: Bool) {
            switch descriptor {
            case .null: posix_spawn_file_actions_addopen(&actions, number, "/dev/null", readOnly ? O_RDONLY : O_WRONLY, 0)
            case .fd(let fd): posix_spawn_file_actions_adddup2(&actions, fd, number)
            case .inherit: break
            }
        }
        set(stdin, 0, readOnly: true)
        set(stdout, 1, readOnly: false)
        var errPipe: (read: Int32, write: Int32)?
        if captureStderr {
            errPipe = try pipe()
            posix_spawn_file_actions_adddup2(&actions, errPipe!.write, 2)
        } else {
            set(stderr, 2, readOnly: false)
        }
        closeInheritedDescriptors(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        if newProcessGroup {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, cEnv)
        if let errPipe { close(errPipe.write) }
        guard rc == 0 else {
            if let errPipe { close(errPipe.read) }
            throw Failure(call: "posix_spawn \(argv[0])", code: rc)
        }
        return Started(pid: pid, stderrPipe: errPipe?.read)
    }

    /// A pipe whose two ends are closed on exec (a child gets only the end it is given as 0/1/2).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard childSpawnPipe2(&fds, O_CLOEXEC) == 0 else { throw Failure(call: "pipe", code: errno) }
        return (fds[0], fds[1])
    }

    /// Waits for `pid` (retrying on EINTR); its wait status, or -1 when it cannot be waited for.
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        return status
    }

    /// "exit status 3" / "killed by signal 9" / "could not be waited for".
    public static func describe(_ status: Int32) -> String {
        if status < 0 { return "could not be waited for" }
        if status & 0x7f == 0 { return "exit status \((status >> 8) & 0xff)" }
        return "killed by signal \(status & 0x7f)"
    }

    /// Adds "close every descriptor from 3 up" to a child's spawn actions (glibc's
    /// posix_spawn_file_actions_addclosefrom_np, 2.34+, looked up at run time because Swift's
    /// Glibc module does not declare it; on an older glibc the descriptors are close-on-exec only).
    public static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = addCloseFrom else { return }
        _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
    }

    nonisolated(unsafe) private static let addCloseFrom = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
}

/// pipe2(2) is behind _GNU_SOURCE in Glibc's headers, so Swift does not import it.
@_silgen_name("pipe2")
private func childSpawnPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
