import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Temporary files still being written, removed on failure and by the interrupt handler,
/// so that an interrupted run leaves nothing behind.
public enum TemporaryFiles {
    nonisolated(unsafe) private static var paths: Set<String> = []
    private static let lock = NSLock()

    static func register(_ path: String) { lock.withLock { _ = paths.insert(path) } }
    static func unregister(_ path: String) { lock.withLock { _ = paths.remove(path) } }

    /// Removes every registered temporary file (called from the SIGINT/SIGTERM handler).
    public static func removeAll() {
        lock.withLock {
            for path in paths { unlink(path) }
            paths.removeAll()
        }
    }
}

/// An output file written under a temporary name in the destination's directory, and renamed to
/// its final name only by ``commit()``: until then no file with the final name exists, so a failed
/// or interrupted run never leaves a partial or unauthenticated file that looks whole.
public final class AtomicOutputFile {
    public let finalPath: String
    public let temporaryPath: String
    public let sink: FileDescriptorSink
    private var finished = false

    /// Creates the temporary file with `mode`. Refuses to replace an existing file unless `overwrite`.
    public init(path: String, mode: mode_t = 0o600, overwrite: Bool = false) throws {
        finalPath = path
        if !overwrite, access(path, F_OK) == 0 {
            throw CofferError.writeFailed(path: path, reason: "it already exists (pass --force to replace it)")
        }
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        var template = Array("\(directory)/.\(url.lastPathComponent).coffer-tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            let code = errno
            if code == ENOSPC { throw CofferError.diskFull(path: path) }
            throw CofferError.writeFailed(path: path, reason: String(cString: strerror(code)))
        }
        temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        TemporaryFiles.register(temporaryPath)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        fchmod(fd, mode)
        sink = FileDescriptorSink(fd: fd, path: path)
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

    /// Flushes the data to disk, renames the file to its final name, and flushes the directory.
    public func commit() throws {
        precondition(!finished)
        finished = true
        defer { TemporaryFiles.unregister(temporaryPath) }
        if fsync(sink.fd) != 0 {
            let code = errno
            close(sink.fd)
            unlink(temporaryPath)
            if code == ENOSPC { throw CofferError.diskFull(path: finalPath) }
            throw CofferError.writeFailed(path: finalPath, reason: String(cString: strerror(code)))
        }
        close(sink.fd)
        guard rename(temporaryPath, finalPath) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw CofferError.writeFailed(path: finalPath, reason: reason)
        }
        Self.syncDirectory(of: finalPath)
    }

    /// Removes the temporary file; nothing appears under the final name.
    public func discard() {
        guard !finished else { return }
        finished = true
        close(sink.fd)
        unlink(temporaryPath)
        TemporaryFiles.unregister(temporaryPath)
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
