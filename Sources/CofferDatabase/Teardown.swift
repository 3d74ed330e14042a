import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every throwaway server this process started and has not torn down yet, so that a command can
/// tear them all down when it is interrupted (its SIGINT/SIGTERM handler calls ``tearDownAll()``
/// before exiting). Engines register their servers as soon as anything exists to clean up.
public final class ThrowawayRegistry: @unchecked Sendable {
    public static let shared = ThrowawayRegistry()

    private let lock = NSLock()
    private var servers: [ObjectIdentifier: any ThrowawayServer] = [:]

    /// Registers `server`; returns false (and tears it down at once) when the process was already
    /// interrupted (``interrupt()``), so a server started by a task still running then never survives.
    @discardableResult
    public func register(_ server: any ThrowawayServer) -> Bool {
        let accepted = lock.withLock { () -> Bool in
            if interruptedFlag { return false }
            servers[ObjectIdentifier(server)] = server
            return true
        }
        if !accepted { server.tearDown() }
        return accepted
    }

    public func unregister(_ server: any ThrowawayServer) {
        _ = lock.withLock { servers.removeValue(forKey: ObjectIdentifier(server)) }
    }

    /// Tears down every registered server (each ``ThrowawayServer/tearDown()`` is idempotent).
    public func tearDownAll() {
        let all = lock.withLock { () -> [any ThrowawayServer] in
            let list = Array(servers.values)
            servers.removeAll()
            return list
        }
        for server in all { server.tearDown() }
    }

    public var count: Int { lock.withLock { servers.count } }

    /// How many registered servers are of `engine` (tests of one engine run beside the other's).
    public func count(of engine: DatabaseInfo.Engine) -> Int {
        lock.withLock { servers.values.filter { $0.engine == engine }.count }
    }

    /// Set by ``interrupt()``: no new throwaway server starts. (Whether the command may still record
    /// an outcome is the CLI's interrupt flag, set before this registry is told.)
    private var interruptedFlag = false

    private var creations = 0

    /// Runs `body`, which creates a server's directory and registers the server, so that an
    /// interrupt waits for it: without this, a signal between the directory's creation and the
    /// registration found nothing to tear down and the process exited leaving the directory.
    /// Refused once the process is interrupted.
    public func creating<T>(_ body: () throws -> T) throws -> T {
        try lock.withLock {
            if interruptedFlag { throw DatabaseError.toolFailed(step: "starting a throwaway server", status: "interrupted", stderr: "") }
            creations += 1
        }
        defer { lock.withLock { creations -= 1 } }
        return try body()
    }

    /// For a SIGINT/SIGTERM handler: marks the process interrupted, waits (up to 10 s) for servers
    /// being created to be registered, then tears every server down.
    public func interrupt() {
        lock.withLock { interruptedFlag = true }
        for _ in 0..<1000 where lock.withLock({ creations }) > 0 { usleep(10_000) }
        tearDownAll()
    }
}

/// Removing a throwaway server's or a restore's work directory.
public enum WorkDirectory {
    /// Removes `path` and everything below it, going on past entries that vanish meanwhile, and
    /// trying again (up to 20 passes) while something is left (FileManager's removal stops at the
    /// first entry another remover took first). Works relative to directory descriptors opened
    /// with O_NOFOLLOW and unlinks names as bytes: a symbolic link is removed, never followed, and
    /// a name that is not UTF-8 is removed too.
    public static func remove(_ path: String) {
        for _ in 0..<20 {
            var st = stat()
            guard lstat(path, &st) == 0 else { return }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if fd >= 0 { emptyDirectory(fd, depth: 0) }
                _ = rmdir(path)
            } else {
                _ = unlink(path)
            }
            if lstat(path, &st) != 0 { return }
            usleep(5_000)
        }
    }

    /// Removes everything in the directory `fd` (closed here).
    private static func emptyDirectory(_ fd: Int32, depth: Int) {
        guard depth < 256, let dir = fdopendir(fd) else { close(fd); return }
        defer { closedir(dir) }
        var names: [[CChar]] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }).map { CChar(bitPattern: $0) } }
            if name == [46] || name == [46, 46] { continue }
            names.append(name + [0])
        }
        let parent = dirfd(dir)
        for name in names {
            if unlinkat(parent, name, 0) == 0 || errno == ENOENT { continue }
            let child = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard child >= 0 else { continue }
            emptyDirectory(child, depth: depth + 1)
            _ = unlinkat(parent, name, AT_REMOVEDIR)
        }
    }
}
