import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file's identity on disk (device and inode), to tell whether a name still holds the file
/// that was read.
public struct FileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// An open directory. Everything a run does below its root goes through directory descriptors
/// (`openat`, `fstatat`, `renameat`, `unlinkat`) with `O_NOFOLLOW`, so a directory swapped for
/// a symbolic link while the run goes on is never followed: a race cannot make a run read,
/// write or delete a file outside the tree it was given.
public final class DirectoryHandle: @unchecked Sendable {
    public let fd: Int32
    /// The directory's path, for messages only (never opened again by name).
    public let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { Glibc.close(fd) }

    /// Opens a directory the user named (a symbolic link the user gave is followed, as any path
    /// on the command line is).
    public static func open(path: String) throws -> DirectoryHandle {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw CofferError.readFailed(path: path, reason: code == ENOTDIR ? "not a directory" : String(cString: strerror(code)))
        }
        return DirectoryHandle(fd: fd, path: path)
    }

    /// The directory that holds a path the user named, and the path's last component.
    public static func parent(of path: String) throws -> (DirectoryHandle, String) {
        let slash = path.lastIndex(of: "/")
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty, name != ".", name != ".." else {
            throw CofferError.readFailed(path: path, reason: "not a file name")
        }
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        return (try open(path: directory), name)
    }

    func child(_ name: String) -> String { path.hasSuffix("/") ? path + name : "\(path)/\(name)" }

    /// Opens the subdirectory `name`; a symbolic link (or anything not a directory) is refused.
    public func subdirectory(_ name: String) throws -> DirectoryHandle {
        let fd = openat(self.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            let reason = code == ELOOP || code == ENOTDIR
                ? "no longer a directory (replaced by a symbolic link or a file?): not followed"
                : String(cString: strerror(code))
            throw CofferError.readFailed(path: child(name), reason: reason)
        }
        return DirectoryHandle(fd: fd, path: child(name))
    }

    /// Opens the regular file `name` for reading (or reading and writing); a symbolic link, a
    /// FIFO or a device is refused without blocking.
    public func openRegularFile(_ name: String, writable: Bool = false) throws -> ByteSource {
        let fd = openat(self.fd, name, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            let reason = code == ELOOP ? "is a symbolic link: not followed" : String(cString: strerror(code))
            throw CofferError.readFailed(path: child(name), reason: reason)
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw CofferError.readFailed(path: child(name), reason: "not a regular file")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return ByteSource(fd: fd, path: child(name))
    }

    /// `lstat` of `name` in this directory, nil when it does not exist.
    public func status(_ name: String) -> stat? {
        var st = stat()
        return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    /// The identity of the file `name` in this directory (not following a symbolic link).
    public func identity(of name: String) throws -> FileIdentity {
        guard let st = status(name) else {
            throw CofferError.readFailed(path: child(name), reason: String(cString: strerror(errno)))
        }
        return FileIdentity(st)
    }

    public var identity: FileIdentity {
        var st = stat()
        fstat(fd, &st)
        return FileIdentity(st)
    }

    /// Removes `name`, but only while it is still the file identified by `expected` (the one
    /// that was read and whose replacement was verified); then makes the removal durable.
    public func removeOriginal(_ name: String, expected: FileIdentity) throws {
        guard let st = status(name), (st.st_mode & S_IFMT) == S_IFREG, FileIdentity(st) == expected else {
            throw CofferError.writeFailed(path: child(name),
                                          reason: "output is complete, but the original was replaced during the run: it was not removed")
        }
        guard unlinkat(fd, name, 0) == 0 else {
            throw CofferError.writeFailed(path: child(name),
                                          reason: "output is complete but the original could not be removed: \(String(cString: strerror(errno)))")
        }
        sync()
    }

    /// Makes renames and removals in this directory durable.
    public func sync() { fsync(fd) }
}

extension ByteSource {
    /// The identity of the open file.
    var identity: FileIdentity {
        var st = stat()
        fstat(fd, &st)
        return FileIdentity(st)
    }
}

/// The regular files of a directory tree, listed through directory descriptors. Each file is
/// later reached again from the root, component by component with `O_NOFOLLOW`, and its
/// directory must still be the one listed.
public struct DirectoryTree: Sendable {
    public struct Entry: Sendable {
        /// The path relative to the root, `/`-separated.
        public let relative: String
        public let size: UInt64
        public let mode: mode_t
        let directories: [String]
        public let name: String
        let parentIdentity: FileIdentity
    }

    public let root: DirectoryHandle
    public let entries: [Entry]

    static let temporaryMarker = ".coffer-tmp-"

    /// Lists `path` (symbolic links are not followed and are reported as skipped, as are
    /// temporary files, which are removed when no live process owns them (``Leftovers``), and
    /// anything not a regular file), sorted by path.
    public static func list(_ path: String, skipped: inout [(path: String, reason: String)]) throws -> DirectoryTree {
        try list(path, skipped: &skipped, pausing: true)
    }

    static func list(_ path: String, skipped: inout [(path: String, reason: String)], pausing: Bool) throws -> DirectoryTree {
        let root = try DirectoryHandle.open(path: path)
        var entries: [Entry] = []
        try walk(root, directories: [], into: &entries, skipped: &skipped)
        if pausing { TestHooks.pauseAfterListing() }
        return DirectoryTree(root: root, entries: entries.sorted { $0.relative < $1.relative })
    }

    private static func walk(_ directory: DirectoryHandle, directories: [String], into entries: inout [Entry],
                             skipped: inout [(path: String, reason: String)]) throws {
        let parentIdentity = directory.identity
        for name in try names(in: directory) {
            let relative = (directories + [name]).joined(separator: "/")
            guard let st = directory.status(name) else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                if name.contains(temporaryMarker) {
                    skipped.append((relative, Leftovers.removeIfAbandoned(name, in: directory).reason))
                } else {
                    entries.append(Entry(relative: relative, size: UInt64(st.st_size), mode: st.st_mode & 0o7777,
                                         directories: directories, name: name, parentIdentity: parentIdentity))
                }
            case S_IFDIR:
                let sub: DirectoryHandle
                do {
                    sub = try directory.subdirectory(name)
                } catch {
                    skipped.append((relative, "directory could not be opened: \(error)"))
                    continue
                }
                try walk(sub, directories: directories + [name], into: &entries, skipped: &skipped)
            case S_IFLNK: skipped.append((relative, "symbolic link (not followed)"))
            default: skipped.append((relative, "not a regular file"))
            }
        }
    }

    /// The names in a directory, without "." and "..".
    static func names(in directory: DirectoryHandle) throws -> [String] {
        let copy = dup(directory.fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { Glibc.close(copy) }
            throw CofferError.readFailed(path: directory.path, reason: "cannot list the directory: \(String(cString: strerror(errno)))")
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The directory holding `entry`, reached again from the root without following any
    /// symbolic link, and still the directory that was listed.
    public func directory(of entry: Entry) throws -> DirectoryHandle {
        var directory = root
        for name in entry.directories { directory = try directory.subdirectory(name) }
        guard directory.identity == entry.parentIdentity else {
            throw CofferError.readFailed(path: directory.path, reason: "the directory was replaced during the run: not followed")
        }
        return directory
    }
}

/// Hooks that make races reproducible in tests. Compiled into debug builds only (the test suite
/// runs a debug build); a release build ignores these variables.
///
/// `COFFER_TEST_PAUSE_AFTER_LISTING=DIR`: once a directory tree is listed, and before any of its
/// files is opened, create `DIR/listed` and wait until `DIR/continue` exists (at most 60 s). A
/// test waits for `listed`, changes the tree (swaps a directory for a symbolic link, say), then
/// creates `continue`.
///
/// `COFFER_TEST_DAMAGE_READBACK=1`: flip the last byte of each new file just before it is read
/// back and verified (as a failing disk would), so that the read-back fails.
enum TestHooks {
    static func pauseAfterListing() {
        #if DEBUG
        guard let directory = ProcessInfo.processInfo.environment["COFFER_TEST_PAUSE_AFTER_LISTING"] else { return }
        let fd = Glibc.open("\(directory)/listed", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { Glibc.close(fd) }
        for _ in 0..<6000 {
            if access("\(directory)/continue", F_OK) == 0 { return }
            usleep(10_000)
        }
        #endif
    }

    static var damageReadBack: Bool {
        #if DEBUG
        return ProcessInfo.processInfo.environment["COFFER_TEST_DAMAGE_READBACK"] == "1"
        #else
        return false
        #endif
    }
}
