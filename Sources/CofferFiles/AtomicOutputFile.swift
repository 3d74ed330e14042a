import CofferFormat
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Temporary files still being written, removed on failure and by the interrupt handler,
/// so that an interrupted run leaves nothing behind.
public enum TemporaryFiles {
    nonisolated(unsafe) private static var files: [ObjectIdentifier: (DirectoryHandle, String)] = [:]
    private static let lock = NSLock()

    static func register(_ file: AtomicOutputFile) {
        lock.withLock { files[ObjectIdentifier(file)] = (file.directory, file.temporaryName) }
    }
    static func unregister(_ file: AtomicOutputFile) { lock.withLock { _ = files.removeValue(forKey: ObjectIdentifier(file)) } }

    /// Removes every registered temporary file (called from the SIGINT/SIGTERM handler).
    public static func removeAll() {
        lock.withLock {
            for (directory, name) in files.values { unlinkat(directory.fd, name, 0) }
            files.removeAll()
        }
    }
}

/// The permission bits of outputs (docs/FORMAT.md, "Files on disk").
public enum OutputMode {
    /// The process's umask, read once (from /proc/self/status, which does not change it).
    public static let umask: mode_t = {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Umask:") }),
           let value = mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8) {
            return value
        }
        let old = Glibc.umask(0o077)
        Glibc.umask(old)
        return old
    }()

    /// The mode of a new output made from a file of mode `source`: its read, write and execute
    /// bits only (never setuid, setgid or sticky, whoever owned the source), less the umask.
    public static func forNewFile(from source: mode_t) -> mode_t { source & 0o777 & ~umask }

    /// The mode of a file rewritten in place (rewrap's conversion, reencrypt): the file keeps its
    /// read, write and execute bits; setuid, setgid and sticky are dropped.
    public static func forReplacement(of existing: mode_t) -> mode_t { existing & 0o777 }
}

/// An output file written under a temporary name in the destination's directory, and renamed to
/// its final name only by ``commit()``: until then no file with the final name exists, so a failed
/// or interrupted run never leaves a partial or unauthenticated file that looks whole.
/// The temporary file is created, renamed and removed relative to a descriptor of its directory,
/// never by a path that a symbolic link could redirect.
public final class AtomicOutputFile {
    public let finalPath: String
    public let temporaryPath: String
    public let sink: FileDescriptorSink
    let directory: DirectoryHandle
    let finalName: String
    let temporaryName: String
    private let overwrite: Bool
    private var finished = false

    /// The output at `path`, a new file: its mode is `mode`'s permission bits less the umask
    /// (``OutputMode/forNewFile(from:)``). Refuses to replace an existing file unless `overwrite`.
    public convenience init(path: String, mode: mode_t = 0o600, overwrite: Bool = false) throws {
        let directory: DirectoryHandle, name: String
        do {
            (directory, name) = try DirectoryHandle.parent(of: path)
        } catch CofferError.readFailed(_, let reason) {
            throw CofferError.writeFailed(path: path, reason: reason)
        }
        try self.init(directory: directory, name: name, mode: OutputMode.forNewFile(from: mode), overwrite: overwrite,
                      displayPath: path)
    }

    /// The output `name` in `directory`, with exactly `mode`'s permission bits (callers pass
    /// ``OutputMode``'s result; setuid, setgid and sticky are never set).
    public init(directory: DirectoryHandle, name: String, mode: mode_t = 0o600, overwrite: Bool = false,
                displayPath: String? = nil) throws {
        let path = displayPath ?? directory.child(name)
        finalPath = path
        finalName = name
        self.directory = directory
        self.overwrite = overwrite
        if !overwrite, directory.status(name) != nil {
            throw FileError.alreadyExists(path: path)
        }
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        var fd: Int32 = -1
        var tempName = ""
        for _ in 0..<100 {
            var generator = SystemRandomNumberGenerator()
            let suffix = String(decoding: (0..<6).map { _ in alphabet.randomElement(using: &generator)! }, as: UTF8.self)
            tempName = ".\(name)\(DirectoryTree.temporaryMarker)\(suffix)"
            fd = openat(directory.fd, tempName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd >= 0, !Leftovers.claim(fd, name: tempName, in: directory) { close(fd); fd = -1; continue }  // owned while open
            if fd >= 0 || errno != EEXIST { break }
        }
        guard fd >= 0 else {
            let code = errno
            if code == ENOSPC || code == EDQUOT { throw CofferError.diskFull(path: path) }
            throw CofferError.writeFailed(path: path, reason: String(cString: strerror(code)))
        }
        temporaryName = tempName
        temporaryPath = directory.child(tempName)
        fchmod(fd, mode & 0o777)
        sink = FileDescriptorSink(fd: fd, path: path)
        TemporaryFiles.register(self)
    }

    /// Runs `body` with the sink and commits; on any error the temporary file is removed and the
    /// error rethrown, so the final name only ever holds a complete output.
    public func complete<T>(_ body: (FileDescriptorSink) throws -> T) throws -> T {
        do {
            let result = try body(sink)
            try commit()
            return result
        } catch {
            discard()
            throw error
        }
    }

    /// Opens the temporary file again, for reading back what was written.
    public func openTemporaryForReading() throws -> ByteSource {
        try directory.openRegularFile(temporaryName)
    }

    /// Flushes the data to disk, renames the file to its final name, and flushes the directory.
    public func commit() throws {
        precondition(!finished)
        finished = true
        defer { TemporaryFiles.unregister(self) }
        if fsync(sink.fd) != 0 {
            let code = errno
            close(sink.fd)
            unlinkat(directory.fd, temporaryName, 0)
            if code == ENOSPC || code == EDQUOT { throw CofferError.diskFull(path: finalPath) }
            throw CofferError.writeFailed(path: finalPath, reason: String(cString: strerror(code)))
        }
        close(sink.fd)
        if !overwrite, directory.status(finalName) != nil {
            unlinkat(directory.fd, temporaryName, 0)
            throw FileError.alreadyExists(path: finalPath)
        }
        guard renameat(directory.fd, temporaryName, directory.fd, finalName) == 0 else {
            let reason = String(cString: strerror(errno))
            unlinkat(directory.fd, temporaryName, 0)
            throw CofferError.writeFailed(path: finalPath, reason: reason)
        }
        directory.sync()
    }

    /// Removes the temporary file; nothing appears under the final name.
    public func discard() {
        guard !finished else { return }
        finished = true
        close(sink.fd)
        unlinkat(directory.fd, temporaryName, 0)
        TemporaryFiles.unregister(self)
    }

    deinit { discard() }

    /// Makes a rename or unlink in the directory durable.
    public static func syncDirectory(of path: String) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

extension AtomicOutputFile {
    /// Flips a byte in the middle of the written file (the read-back test hook).
    func damageForTest() {
        var st = stat()
        guard fstat(sink.fd, &st) == 0, st.st_size > 0 else { return }
        let check = openat(directory.fd, temporaryName, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard check >= 0 else { return }
        defer { close(check) }
        var byte: UInt8 = 0
        let offset = off_t(st.st_size - 1)
        guard pread(check, &byte, 1, offset) == 1 else { return }
        byte ^= 0x01
        _ = pwrite(check, &byte, 1, offset)
    }
}
