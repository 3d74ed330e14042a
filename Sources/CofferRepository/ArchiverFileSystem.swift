import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An open descriptor, closed when released. Everything the archiver and the restorer do below a
/// path the user named goes through directory descriptors (`openat`, `fstatat`, `readlinkat`,
/// `renameat`) with `O_NOFOLLOW`, in the style of CofferFiles' `DirectoryHandle`: a directory
/// swapped for a symbolic link while a run goes on is never followed.
final class Descriptor: @unchecked Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }
}

/// Calls `body` with `bytes` as a NUL-terminated C string.
func withCName<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    try (bytes + [0]).withUnsafeBufferPointer { buffer in
        try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
    }
}

enum FS {
    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// The names in an open directory (bytes, without "." and ".."), sorted by bytes.
    static func names(in directory: Int32, path: String) throws -> [[UInt8]] {
        let copy = dup(directory)
        guard copy >= 0, let stream = fdopendir(copy) else {
            let code = errno
            if copy >= 0 { Glibc.close(copy) }
            throw TreeError.readFailed(path: path, reason: "cannot list the directory: \(errorText(code))")
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [[UInt8]] = []
        while let entry = readdir(stream) {
            let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                let n = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                return Array(raw.prefix(n))
            }
            if name != [0x2e] && name != [0x2e, 0x2e] { names.append(name) }
        }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// `lstat` of `name` in a directory.
    static func status(_ directory: Int32, _ name: [UInt8]) -> stat? {
        var st = stat()
        return withCName(name) { fstatat(directory, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0 ? st : nil
    }

    static func status(fd: Int32) -> stat? {
        var st = stat()
        return fstat(fd, &st) == 0 ? st : nil
    }

    static func readLink(_ directory: Int32, _ name: [UInt8]) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: TreeLimits.maxLinkTargetLength + 1)
        let n = withCName(name) { cname in
            buffer.withUnsafeMutableBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { readlinkat(directory, cname, $0.baseAddress!, $0.count) }
            }
        }
        guard n > 0, n <= TreeLimits.maxLinkTargetLength else { return nil }
        return Array(buffer[..<n])
    }

    static func openAt(_ directory: Int32, _ name: [UInt8], _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        withCName(name) { openat(directory, $0, flags | O_CLOEXEC, mode) }
    }

    static func nanos(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }

    static func timespecOf(_ nanos: Int64) -> timespec {
        var seconds = nanos / 1_000_000_000, rest = nanos % 1_000_000_000
        if rest < 0 { seconds -= 1; rest += 1_000_000_000 }
        return timespec(tv_sec: Int(seconds), tv_nsec: Int(rest))
    }

    /// Reads until `buffer` is full or the input ends.
    static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        var total = 0
        while total < buffer.count {
            let n = Glibc.read(fd, buffer.baseAddress! + total, buffer.count - total)
            if n < 0 {
                if errno == EINTR { continue }
                throw TreeError.readFailed(path: path, reason: errorText())
            }
            if n == 0 { break }
            total += n
        }
        return total
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw TreeError.writeFailed(path: path, reason: errorText())
            }
            done += n
        }
    }
}

/// A descriptor as a chunker input.
struct DescriptorSource: ChunkSource {
    let fd: Int32
    let path: String
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try FS.readFully(fd, buffer, path: path)
    }
}

/// Owner and group names by id, looked up once each.
final class OwnerNames: @unchecked Sendable {
    private let lock = NSLock()
    private var users: [UInt32: [UInt8]] = [:]
    private var groups: [UInt32: [UInt8]] = [:]

    func user(_ uid: UInt32) -> [UInt8] {
        if let name = lock.withLock({ users[uid] }) { return name }
        var pw = passwd(), result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 4096)
        var name: [UInt8] = []
        if getpwuid_r(uid, &pw, &buffer, buffer.count, &result) == 0, result != nil, let n = pw.pw_name {
            name = Array(String(cString: n).utf8.prefix(TreeLimits.maxOwnerNameLength))
        }
        lock.withLock { users[uid] = name }
        return name
    }

    func group(_ gid: UInt32) -> [UInt8] {
        if let name = lock.withLock({ groups[gid] }) { return name }
        var gr = Glibc.group(), result: UnsafeMutablePointer<Glibc.group>? = nil
        var buffer = [CChar](repeating: 0, count: 4096)
        var name: [UInt8] = []
        if getgrgid_r(gid, &gr, &buffer, buffer.count, &result) == 0, result != nil, let n = gr.gr_name {
            name = Array(String(cString: n).utf8.prefix(TreeLimits.maxOwnerNameLength))
        }
        lock.withLock { groups[gid] = name }
        return name
    }
}

/// At most `limit` holders at once (files read or written concurrently: bounds memory and open
/// descriptors).
actor Limiter {
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ limit: Int) { available = max(1, limit) }

    func acquire() async {
        if available > 0 { available -= 1; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { available += 1 } else { waiters.removeFirst().resume() }
    }
}

/// Extended attributes through glibc's `*xattr` calls, looked up with `dlsym` (Swift's Glibc
/// module does not import <sys/xattr.h>). Entries are named relative to an open directory through
/// `/proc/self/fd/DIR/NAME` with the `l*` calls (the last component is never followed), or by an
/// open descriptor with the `f*` calls.
enum Xattr {
    typealias ListPath = @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, Int) -> Int
    typealias GetPath = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int) -> Int
    typealias SetPath = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32
    typealias ListFD = @convention(c) (Int32, UnsafeMutablePointer<CChar>?, Int) -> Int
    typealias GetFD = @convention(c) (Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int) -> Int
    typealias SetFD = @convention(c) (Int32, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32

    private static func symbol<T>(_ name: String, _ type: T.Type) -> T? {
        guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(p, to: type)
    }
    static let llist = symbol("llistxattr", ListPath.self)
    static let lget = symbol("lgetxattr", GetPath.self)
    static let lset = symbol("lsetxattr", SetPath.self)
    static let flist = symbol("flistxattr", ListFD.self)
    static let fget = symbol("fgetxattr", GetFD.self)
    static let fset = symbol("fsetxattr", SetFD.self)

    /// Where an entry of an open directory is reached by path.
    static func procPath(_ directory: Int32, _ name: [UInt8]) -> [UInt8] {
        Array("/proc/self/fd/\(directory)/".utf8) + name
    }

    /// What reading an entry's attributes gave: the attributes kept, and why others were not.
    struct Read {
        var attributes: [ExtendedAttribute] = []
        var skipped: [String] = []
    }

    /// The attributes of `name` in `directory` (or of `fd` when given), sorted by name, bounded by
    /// ``ExtendedAttribute``'s limits: an attribute outside the known namespaces, too large, or
    /// past the total is skipped and said so. No attributes (or a file system without them): empty.
    static func read(directory: Int32, name: [UInt8], fd: Int32? = nil) -> Read {
        var out = Read()
        let path = procPath(directory, name)
        func list(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
            if let fd { return flist?(fd, buffer, size) ?? -1 }
            return withCName(path) { llist?($0, buffer, size) ?? -1 }
        }
        func get(_ attribute: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawPointer?, _ size: Int) -> Int {
            if let fd { return fget?(fd, attribute, buffer, size) ?? -1 }
            return withCName(path) { lget?($0, attribute, buffer, size) ?? -1 }
        }
        var names: [CChar] = []
        for _ in 0..<4 {
            let size = list(nil, 0)
            guard size > 0 else { return out }
            names = [CChar](repeating: 0, count: size)
            let n = names.withUnsafeMutableBufferPointer { list($0.baseAddress, size) }
            if n >= 0 { names.removeLast(size - n); break }
            if errno != ERANGE { return out }
            names = []
        }
        var total = 0
        for raw in names.split(separator: 0, omittingEmptySubsequences: true) {
            let attribute = raw.map { UInt8(bitPattern: $0) }
            let shown = TreeNode.display(attribute)
            if let reason = ExtendedAttribute.invalidNameReason(attribute) { out.skipped.append(reason); continue }
            var value: [UInt8] = []
            var ok = false, tooLarge = false
            withCName(attribute) { cname in
                for _ in 0..<4 {
                    let size = get(cname, nil, 0)
                    guard size >= 0 else { return }
                    guard size <= ExtendedAttribute.maxValueLength else { tooLarge = true; return }
                    value = [UInt8](repeating: 0, count: size)
                    let n = value.withUnsafeMutableBytes { get(cname, $0.baseAddress, size) }
                    if n >= 0 { value.removeLast(size - n); ok = true; return }
                    if errno != ERANGE { return }
                }
            }
            if tooLarge { out.skipped.append("attribute \(shown) is larger than \(ExtendedAttribute.maxValueLength) bytes") }
            guard ok else { continue }
            guard total + attribute.count + value.count <= ExtendedAttribute.maxTotalBytes, out.attributes.count < ExtendedAttribute.maxCount else {
                out.skipped.append("attribute \(shown) is past the limit of \(ExtendedAttribute.maxTotalBytes) bytes or \(ExtendedAttribute.maxCount) attributes per entry")
                continue
            }
            total += attribute.count + value.count
            out.attributes.append(ExtendedAttribute(name: attribute, value: value))
        }
        out.attributes.sort { $0.name.lexicographicallyPrecedes($1.name) }
        return out
    }

    /// Sets one attribute on `fd`, or on `name` in `directory` (not following it); the errno on failure.
    static func set(_ attribute: ExtendedAttribute, directory: Int32, name: [UInt8], fd: Int32?) -> Int32? {
        let rc: Int32 = withCName(attribute.name) { cname in
            attribute.value.withUnsafeBytes { value in
                if let fd { return fset?(fd, cname, value.baseAddress, value.count, 0) ?? -1 }
                return withCName(procPath(directory, name)) { lset?($0, cname, value.baseAddress, value.count, 0) ?? -1 }
            }
        }
        return rc == 0 ? nil : (lset == nil ? ENOTSUP : errno)
    }
}

extension Archiver {
    /// The recorded attributes of `name` in `directory` (or of the open `fd`), when the options ask
    /// for them; attributes left out are told to ``ArchiveOptions/xattrNotice``.
    func xattrs(of name: [UInt8], in directory: Int32, display: String) -> [ExtendedAttribute] {
        guard options.xattrs else { return [] }
        return noticed(Xattr.read(directory: directory, name: name), display)
    }

    func xattrs(of fd: Int32, display: String) -> [ExtendedAttribute] {
        guard options.xattrs else { return [] }
        return noticed(Xattr.read(directory: -1, name: [], fd: fd), display)
    }

    private func noticed(_ read: Xattr.Read, _ display: String) -> [ExtendedAttribute] {
        for reason in read.skipped { options.xattrNotice?("\(display): \(reason): not recorded") }
        return read.attributes
    }
}
