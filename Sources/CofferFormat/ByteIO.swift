#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Where the engine writes its output, in order.
public protocol ByteSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// A sink that drops everything (for `verify`).
public final class DiscardingSink: ByteSink {
    public init() {}
    public func write(_ bytes: UnsafeRawBufferPointer) throws {}
}

/// A sink that collects bytes in memory (for tests and small objects).
public final class MemorySink: ByteSink {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// Writes to a file descriptor, mapping ENOSPC to ``CofferError/diskFull(path:)``.
public final class FileDescriptorSink: ByteSink {
    public let fd: Int32
    public let path: String

    public init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == ENOSPC || code == EDQUOT { throw CofferError.diskFull(path: path) }
                throw CofferError.writeFailed(path: path, reason: errnoText(code))
            }
            done += n
        }
    }
}

/// Reads a file descriptor: lines for the header, then whole chunks; sequential or positioned.
public final class ByteSource {
    public let fd: Int32
    public let path: String
    /// Bytes read ahead while looking for the end of the header.
    private var pending: [UInt8] = []
    private var pendingStart = 0
    /// Bytes consumed so far from the start of the stream.
    public private(set) var position: UInt64 = 0

    /// The descriptor's file offset when this source was made (nil for pipes and terminals).
    let initialOffset: UInt64?

    /// Whether this source closes its descriptor when it goes away (``close()`` not called).
    private let ownsDescriptor: Bool
    private var closed = false

    /// A source on `fd`; with `ownsDescriptor`, the source closes it when it goes away if
    /// ``close()`` has not (the descriptor must then be this source's alone).
    public init(fd: Int32, path: String, ownsDescriptor: Bool = false) {
        self.fd = fd
        self.path = path
        self.ownsDescriptor = ownsDescriptor
        let offset = lseek(fd, 0, SEEK_CUR)
        initialOffset = offset >= 0 ? UInt64(offset) : nil
    }

    deinit {
        if ownsDescriptor { close() }
    }

    /// For a regular file: its size, and the file offset of the next byte this source will yield.
    /// Positioned reads from there on let several threads read a file at once.
    public var positionedReadStart: (size: UInt64, offset: UInt64)? {
        guard let size = regularFileSize, let start = initialOffset else { return nil }
        return (size, start + position)
    }

    /// Opens a path for reading ("-" is standard input).
    public static func open(path: String) throws -> ByteSource {
        if path == "-" { return ByteSource(fd: 0, path: "standard input") }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.readFailed(path: path, reason: errnoText()) }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            Glibc.close(fd)
            throw CofferError.readFailed(path: path, reason: "is a directory")
        }
        return ByteSource(fd: fd, path: path)
    }

    /// Closes the descriptor (not 0, 1 or 2); a second call does nothing.
    public func close() {
        if fd > 2 && !closed { Glibc.close(fd) }
        closed = true
    }

    /// The size of a regular file, or nil for pipes, terminals and sockets.
    public var regularFileSize: UInt64? {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return UInt64(st.st_size)
    }

    private func rawRead(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw CofferError.readFailed(path: path, reason: errnoText())
        }
    }

    /// Reads one line including its line feed, at most `limit` bytes. Returns what is left
    /// without a line feed at end of input, and nil at end of input.
    public func readLine(limit: Int) throws -> [UInt8]? {
        var line: [UInt8] = []
        while true {
            if pendingStart == pending.count {
                pending = [UInt8](repeating: 0, count: 4096)
                let n = try pending.withUnsafeMutableBytes { try rawRead($0.baseAddress!, 4096) }
                pending.removeSubrange(n...)
                pendingStart = 0
                if n == 0 { return line.isEmpty ? nil : line }
            }
            while pendingStart < pending.count {
                let b = pending[pendingStart]
                pendingStart += 1
                position += 1
                line.append(b)
                if b == 0x0A { return line }
                if line.count >= limit { return line }
            }
        }
    }

    /// The next `count` bytes (fewer at the end of the input), without consuming them: for telling
    /// formats apart before choosing a reader.
    public func peek(_ count: Int) throws -> [UInt8] {
        if pending.count - pendingStart < count {
            var more = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                let n = try more.withUnsafeMutableBytes { try rawRead($0.baseAddress! + got, count - got) }
                if n == 0 { break }
                got += n
            }
            pending = Array(pending[pendingStart...]) + more[0..<got]
            pendingStart = 0
        }
        return Array(pending[pendingStart..<min(pending.count, pendingStart + count)])
    }

    /// With a withheld tail, the last `tailLength` bytes of the stream seen so far, never yielded
    /// by ``readFully(into:)`` (a signature trailer behind a payload read from a pipe).
    private var tail: [UInt8] = []
    private var tailLength = 0

    /// From now on, ``readFully(into:)`` keeps the stream's last `count` bytes back; read them with
    /// ``withheldTail()`` once it returns less than asked for.
    public func withholdTail(_ count: Int) {
        precondition(tailLength == 0 && count > 0)
        tailLength = count
    }

    /// The withheld bytes: the stream's last `count` bytes once the input has ended (fewer when the
    /// whole stream after ``withholdTail(_:)`` was shorter).
    public func withheldTail() -> [UInt8] { tail }

    /// Fills `buffer` completely unless the input ends first; returns the byte count read.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard tailLength > 0 else { return try readStream(into: buffer) }
        // Stream order: the held bytes, then fresh ones. Fill the buffer from both, then top the
        // held bytes back up to tailLength; if the stream ends first, the buffer's last bytes
        // become part of the tail instead of being yielded.
        let held = min(tail.count, buffer.count)
        tail.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: held) }
        var rest = Array(tail[held...])
        var filled = held
        if rest.isEmpty {
            filled += try readStream(into: UnsafeMutableRawBufferPointer(rebasing: buffer[held...]))
        }
        let wanted = tailLength - rest.count
        if wanted > 0 {
            var extra = [UInt8](repeating: 0, count: wanted)
            let got = try extra.withUnsafeMutableBytes { try readStream(into: $0) }
            rest += extra[0..<got]
        }
        let give = min(tailLength - rest.count, filled)
        tail = Array(UnsafeRawBufferPointer(rebasing: buffer[(filled - give)..<filled])) + rest
        return filled - give
    }

    private func readStream(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        if pendingStart < pending.count {
            let n = min(buffer.count, pending.count - pendingStart)
            pending.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + pendingStart, byteCount: n)
            }
            pendingStart += n
            done = n
        }
        while done < buffer.count {
            let n = try rawRead(buffer.baseAddress! + done, buffer.count - done)
            if n == 0 { break }
            done += n
        }
        position += UInt64(done)
        return done
    }

    /// Reads exactly `buffer.count` bytes at `offset` unless the file ends first (positioned read:
    /// random access without moving the stream).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CofferError.readFailed(path: path, reason: errnoText())
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
