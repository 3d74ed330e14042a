import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Temporary outputs left behind by a run that was killed (`kill -9`, a power cut): files named
/// `.NAME.coffer-tmp-XXXXXX` (``AtomicOutputFile``), removed by the next recursive run over their
/// directory once no live process owns them (docs/FORMAT.md, "Directory runs").
///
/// Ownership is an exclusive `flock(2)` lock: the process writing a temporary file holds it on the
/// file from just after creating it until the file is renamed or removed. The kernel drops the
/// lock when the last descriptor of that open file goes, that is when the writer (and any child it
/// gave the descriptor to, such as a decompressor) has exited, however it ended. So a temporary
/// file that can be locked is owned by no live process: nothing will rename it, and it is removed.
/// One that cannot be locked is being written, and is left alone.
///
/// The window between creating the file and locking it is closed from both sides: a remover holds
/// the lock while it checks that the name still refers to the file it locked and unlinks it; a
/// writer, once it holds the lock, checks that its name still refers to its file, and otherwise
/// (a remover took it in that window) creates another one.
public enum Leftovers {
    /// The characters of the random suffix after ``DirectoryTree/temporaryMarker``.
    static let suffixLength = 6

    /// True for names that ``AtomicOutputFile`` gives its temporary files: `.` NAME
    /// `.coffer-tmp-` and six ASCII letters or digits. Nothing else is ever removed.
    public static func isTemporaryName(_ name: String) -> Bool {
        guard name.hasPrefix("."), let marker = name.range(of: DirectoryTree.temporaryMarker, options: .backwards),
              marker.lowerBound > name.index(after: name.startIndex) else { return false }
        let suffix = name[marker.upperBound...]
        return suffix.utf8.count == suffixLength && suffix.utf8.allSatisfy { $0 < 0x80 && isalnum(Int32($0)) != 0 }
    }

    /// Called by the writer right after it created `name` in `directory` as `fd`: takes the lock
    /// that marks the file as owned. False when `name` no longer refers to that file (a concurrent
    /// run removed it before the lock was taken): the caller closes `fd` and picks another name.
    static func claim(_ fd: Int32, name: String, in directory: DirectoryHandle) -> Bool {
        while flock(fd, LOCK_EX) != 0 {
            // Locks unsupported here (some network file systems): a remover cannot lock the file
            // either, so it is never removed there; writing it goes on as before.
            if errno != EINTR { return true }
        }
        var st = stat()
        guard fstat(fd, &st) == 0, let named = directory.status(name) else { return false }
        return FileIdentity(named) == FileIdentity(st)
    }

    /// What happened to a temporary file found in a tree.
    public enum Outcome: Equatable, Sendable {
        /// No live process owned it: it was removed.
        case removed
        /// A live process holds its lock (a run in progress): left alone.
        case inUse
        /// It could not be checked or removed (permissions, a read-only file system): left alone.
        case kept(String)

        /// The reason given in a run's report of skipped files.
        public var reason: String {
            switch self {
            case .removed: return "temporary file of an interrupted run: removed"
            case .inUse: return "temporary file of a run in progress: left alone"
            case .kept(let why): return "temporary file: not removed (\(why))"
            }
        }
    }

    /// Removes the temporary file `name` in `directory` when no live process owns it.
    public static func removeIfAbandoned(_ name: String, in directory: DirectoryHandle) -> Outcome {
        guard isTemporaryName(name) else { return .kept("not a name Coffer gives its temporary files") }
        // Write access first: over NFS, flock is emulated with a byte-range lock, and an exclusive
        // one needs a descriptor open for writing.
        var fd = openat(directory.fd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM) {
            fd = openat(directory.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        }
        guard fd >= 0 else { return .kept(String(cString: strerror(errno))) }
        defer { close(fd) }  // releases the lock, after the unlink
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return .kept("not a regular file") }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            return errno == EAGAIN ? .inUse : .kept("cannot lock it: \(String(cString: strerror(errno)))")
        }
        // Still the file that was locked (not replaced since it was opened)?
        guard let named = directory.status(name), FileIdentity(named) == FileIdentity(st) else { return .inUse }
        guard unlinkat(directory.fd, name, 0) == 0 else { return .kept(String(cString: strerror(errno))) }
        directory.sync()
        return .removed
    }
}
