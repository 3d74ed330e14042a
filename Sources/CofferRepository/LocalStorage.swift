import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A repository in a local directory.
///
/// Layout: `ROOT/KIND/NAME`, except data packs, which are sharded by the first two characters of
/// their name: `ROOT/data/ab/abcdef…` (256 directories for hex names, so no directory grows past a
/// few thousand entries in a multi-terabyte repository).
///
/// Saving writes `DIR/.tmp-NAME-RANDOM` in the object's own directory (same file system, so the
/// final step is atomic), fsyncs it, then publishes it with `link(2)` (which fails if the name exists:
/// no overwrite, even against a concurrent save) or, when overwriting is asked for, `rename(2)`;
/// removes the temporary name and fsyncs the directory. A temporary file can never be listed or
/// loaded: `.` is not allowed in object names. Objects are opened with `O_NOFOLLOW` and must be
/// regular files; blocking system calls run on Dispatch's global queue, not on Swift's cooperative
/// threads.
public final class LocalStorage: Storage {
    public let root: String

    public let properties = StorageProperties(connections: 4, hasAtomicReplace: true)

    /// Tests only: called by `save` after the temporary file is written and fsynced, just before it
    /// is published under its name (to look at the storage at that moment, or to fail there).
    let beforePublish: (@Sendable (_ temporaryPath: String) throws -> Void)?

    /// Opens an existing repository directory (it must be a directory; kind directories are made when
    /// first needed).
    public convenience init(path: String) throws {
        try self.init(path: path, beforePublish: nil)
    }

    init(path: String, beforePublish: (@Sendable (String) throws -> Void)?) throws {
        self.beforePublish = beforePublish
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else {
            throw StorageError.io(operation: "open repository", target: path, errno: errno, reason: errnoText())
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StorageError.io(operation: "open repository", target: path, errno: ENOTDIR,
                                  reason: "not a directory")
        }
        root = path
    }

    /// Creates the repository directory (mode 0700, parent must exist) with one directory per kind.
    public static func create(path: String) throws -> LocalStorage {
        if mkdir(path, 0o700) != 0 {
            throw StorageError.io(operation: "create repository", target: path, errno: errno, reason: errnoText())
        }
        for kind in ObjectKind.allCases {
            let dir = path + "/" + kind.rawValue
            if mkdir(dir, 0o700) != 0 {
                throw StorageError.io(operation: "create", target: dir, errno: errno, reason: errnoText())
            }
            try fsyncDirectory(dir)
        }
        try fsyncDirectory(path)
        try fsyncDirectory(parentDirectory(of: path))
        return try LocalStorage(path: path)
    }

    /// The directory holding `name`.
    func directory(for name: ObjectName) -> String {
        let kindDir = root + "/" + name.kind.rawValue
        return name.kind.isSharded ? kindDir + "/" + String(name.name.prefix(2)) : kindDir
    }

    /// The path of an object (its name was validated, so it cannot leave its directory).
    public func path(for name: ObjectName) -> String { directory(for: name) + "/" + name.name }

    // MARK: Storage

    public func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        try await blocking { try self.saveNow(name, contents: contents, overwrite: overwrite) }
    }

    public func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] {
        try await blocking { try self.loadNow(name, range: range) }
    }

    public func stat(_ name: ObjectName) async throws -> ObjectInfo {
        try await blocking { try self.statNow(name) }
    }

    public func remove(_ name: ObjectName) async throws {
        try await blocking { try self.removeNow(name) }
    }

    public func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> {
        precondition(batchSize > 0)
        let (stream, continuation) = AsyncThrowingStream<[ObjectInfo], Error>.makeStream()
        let cancelled = CancelFlag()
        continuation.onTermination = { _ in cancelled.set() }
        DispatchQueue.global().async {
            do {
                var batch: [ObjectInfo] = []
                try self.listNow(kind, cancelled: cancelled) { info in
                    batch.append(info)
                    if batch.count == batchSize {
                        continuation.yield(batch)
                        batch.removeAll(keepingCapacity: true)
                    }
                }
                if !batch.isEmpty { continuation.yield(batch) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        return stream
    }

    /// Temporary files of saves that never finished (`.tmp-…` in a kind or shard directory, a
    /// regular file, modified before `date`): a process killed between creating and publishing.
    public func leftovers(olderThan date: Date) async throws -> [Leftover] {
        try await blocking { try self.leftoversNow(olderThan: date) }
    }

    public func removeLeftover(_ leftover: Leftover) async throws {
        try await blocking { try self.removeLeftoverNow(leftover) }
    }

    // MARK: Blocking implementations

    func leftoversNow(olderThan date: Date) throws -> [Leftover] {
        var found: [Leftover] = []
        func scan(_ relative: String) throws {
            for entry in try directoryEntries(root + "/" + relative) where Self.isTemporaryName(entry) {
                var st = Glibc.stat()
                guard lstat(root + "/" + relative + "/" + entry, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
                let modified = modificationDate(st)
                if modified < date { found.append(Leftover(location: relative + "/" + entry, since: modified)) }
            }
        }
        for kind in ObjectKind.allCases {
            try scan(kind.rawValue)
            if kind.isSharded {
                for shard in try directoryEntries(root + "/" + kind.rawValue)
                where shard.utf8.count == 2 && ObjectName.invalidReason(shard, kind: kind) == nil {
                    try scan(kind.rawValue + "/" + shard)
                }
            }
        }
        return found.sorted { $0.location < $1.location }
    }

    /// `.tmp-` followed by characters of names and `-`: what ``saveNow`` makes, nothing else.
    static func isTemporaryName(_ entry: String) -> Bool {
        guard entry.hasPrefix(".tmp-"), entry.utf8.count > 5, entry.utf8.count <= ObjectName.maxLength + 40 else { return false }
        return entry.utf8.dropFirst(5).allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }

    func removeLeftoverNow(_ leftover: Leftover) throws {
        // The location came from our own scan, but check its shape again: KIND[/XY]/.tmp-…, nothing
        // else (no other directory, no "..").
        let parts = leftover.location.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let kind = parts.first.flatMap(ObjectKind.init(rawValue:)), let last = parts.last, Self.isTemporaryName(last),
              parts.count == 2 || (parts.count == 3 && kind.isSharded && parts[1].utf8.count == 2
                                   && ObjectName.invalidReason(parts[1], kind: kind) == nil) else {
            throw StorageError.io(operation: "remove leftover", target: ObjectName.printable(leftover.location), errno: EINVAL,
                                  reason: "not a temporary file of this repository")
        }
        let path = root + "/" + leftover.location
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw ioError("stat", path)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return }
        guard unlink(path) == 0 || errno == ENOENT else { throw ioError("remove", path) }
        try fsyncDirectory(parentDirectory(of: path))
    }

    func saveNow(_ name: ObjectName, contents: [UInt8], overwrite: Bool) throws {
        let dir = directory(for: name)
        let final = dir + "/" + name.name
        try makeDirectory(dir)
        let temp = dir + "/.tmp-" + name.name + "-" + String(UInt64.random(in: .min ... .max), radix: 16)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ioError("create", temp) }
        var published = false
        defer { if !published { unlink(temp) } }
        do {
            defer { close(fd) }
            try contents.withUnsafeBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let n = write(fd, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw ioError("write", temp)
                    }
                    done += n
                }
            }
            guard fsync(fd) == 0 else { throw ioError("fsync", temp) }
        }
        try beforePublish?(temp)
        if overwrite {
            guard rename(temp, final) == 0 else { throw ioError("rename to", final) }
            published = true
        } else {
            // link(2) fails with EEXIST when the name exists, atomically: two racing saves cannot
            // both succeed, and an existing object is never replaced.
            if link(temp, final) != 0 {
                if errno == EEXIST { throw StorageError.alreadyExists(name) }
                throw ioError("link to", final)
            }
            unlink(temp)
            published = true
        }
        try fsyncDirectory(dir)
    }

    func loadNow(_ name: ObjectName, range: Range<Int64>?) throws -> [UInt8] {
        let path = path(for: name)
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw openError(name, path) }
        defer { close(fd) }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { throw ioError("stat", path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw StorageError.unexpectedEntry(name, "not a regular file") }
        let size = Int64(st.st_size)
        let wanted = range ?? 0..<size
        guard wanted.lowerBound >= 0, wanted.upperBound <= size else {
            throw StorageError.rangeOutOfBounds(name, range: wanted, size: size)
        }
        let count = Int(wanted.count)
        var failure: StorageError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(wanted.lowerBound) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = ioError("read", path)
                    break
                }
                if n == 0 {
                    failure = .io(operation: "read", target: path, errno: 0, reason: "object shrank while being read")
                    break
                }
                done += n
            }
            initialized = failure == nil ? count : 0
        }
        if let failure { throw failure }
        return bytes
    }

    func statNow(_ name: ObjectName) throws -> ObjectInfo {
        let path = path(for: name)
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else { throw openError(name, path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw StorageError.unexpectedEntry(name, "not a regular file") }
        return ObjectInfo(name: name, size: Int64(st.st_size))
    }

    func removeNow(_ name: ObjectName) throws {
        let path = path(for: name)
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else { throw openError(name, path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw StorageError.unexpectedEntry(name, "not a regular file") }
        guard unlink(path) == 0 else { throw openError(name, path) }
        try fsyncDirectory(directory(for: name))
    }

    func listNow(_ kind: ObjectKind, cancelled: CancelFlag, _ yield: (ObjectInfo) throws -> Void) throws {
        let kindDir = root + "/" + kind.rawValue
        if kind.isSharded {
            for shard in try directoryEntries(kindDir) {
                if cancelled.isSet { return }
                // Only two-character shard directories of valid name characters are looked into.
                guard shard.utf8.count == 2, ObjectName.invalidReason(shard, kind: kind) == nil else { continue }
                try listFiles(in: kindDir + "/" + shard, kind: kind, shard: shard, cancelled: cancelled, yield)
            }
        } else {
            try listFiles(in: kindDir, kind: kind, shard: nil, cancelled: cancelled, yield)
        }
    }

    private func listFiles(in dir: String, kind: ObjectKind, shard: String?, cancelled: CancelFlag,
                           _ yield: (ObjectInfo) throws -> Void) throws {
        for entry in try directoryEntries(dir) {
            if cancelled.isSet { return }
            // Untrusted: skip anything that is not a valid name (temporary files, foreign or hostile
            // names), a name in the wrong shard, or not a regular file.
            guard let name = try? ObjectName(kind, entry) else { continue }
            if let shard, !entry.hasPrefix(shard) { continue }
            var st = Glibc.stat()
            guard lstat(dir + "/" + entry, &st) == 0 else {
                if errno == ENOENT { continue }  // removed since the directory was read
                throw ioError("stat", dir + "/" + entry)
            }
            guard (st.st_mode & S_IFMT) == S_IFREG else { continue }
            try yield(ObjectInfo(name: name, size: Int64(st.st_size), modified: modificationDate(st)))
        }
    }

    /// The names in a directory (not `.` and `..`); empty when the directory does not exist.
    private func directoryEntries(_ dir: String) throws -> [String] {
        guard let handle = opendir(dir) else {
            if errno == ENOENT { return [] }
            throw ioError("list", dir)
        }
        defer { closedir(handle) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(handle) else {
                if errno != 0 { throw ioError("list", dir) }
                break
            }
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Makes `dir` (and its kind directory) if missing; fsyncs the parent of each directory made.
    private func makeDirectory(_ dir: String) throws {
        if mkdir(dir, 0o700) == 0 {
            try fsyncDirectory(parentDirectory(of: dir))
            return
        }
        switch errno {
        case EEXIST:
            return
        case ENOENT where dir != root:
            try makeDirectory(parentDirectory(of: dir))
            try makeDirectory(dir)
        default:
            throw ioError("create directory", dir)
        }
    }

    private func openError(_ name: ObjectName, _ path: String) -> StorageError {
        switch errno {
        case ENOENT: return .notFound(name)
        case ELOOP: return .unexpectedEntry(name, "a symbolic link")
        case EISDIR: return .unexpectedEntry(name, "a directory")
        default: return ioError("open", path)
        }
    }
}

/// A file's modification time.
func modificationDate(_ st: Glibc.stat) -> Date {
    Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
}

/// Set once when a listing's consumer goes away.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// Runs blocking work on Dispatch's global queue, off Swift's cooperative thread pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

func ioError(_ operation: String, _ target: String) -> StorageError {
    let code = errno
    return .io(operation: operation, target: target, errno: code, reason: errnoText(code))
}

func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// fsync of a directory: makes the names created or removed in it durable.
func fsyncDirectory(_ dir: String) throws {
    let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw ioError("open directory", dir) }
    defer { close(fd) }
    if fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP { throw ioError("fsync directory", dir) }
}
