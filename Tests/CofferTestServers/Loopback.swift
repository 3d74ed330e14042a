import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// TCP on 127.0.0.1 for the test servers (``LoggingListener``, ``FaultProxy``, ``TestServer``'s
/// readiness probe): addresses, connecting, a listening socket with its accept thread, and the
/// little HTTP/1.1 they read and relay.
public enum Loopback {
    /// 127.0.0.1:`port` (0: the kernel picks a port when binding).
    static func address(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// A connected socket (close-on-exec), or nil when nothing listens on `port`.
    static func connect(port: Int, receiveTimeoutSeconds: Int? = nil) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = address(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { close(fd); return nil }
        if let receiveTimeoutSeconds { setReceiveTimeout(fd, seconds: receiveTimeoutSeconds) }
        return fd
    }

    static func setReceiveTimeout(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A socket (close-on-exec) bound to 127.0.0.1 on a port the kernel picked, listening when
    /// `backlog` is given; returns it and the port.
    public static func bind(listen backlog: Int32?) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = address(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, length) == 0 && (backlog.map { Glibc.listen(fd, $0) == 0 } ?? true) && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { let code = errno; close(fd); throw ServerError("bind/listen: \(code)") }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}

/// A listening socket on 127.0.0.1 whose thread accepts connections and hands each to `handle`
/// (which must close it) until ``stop()``; ``stop()`` closes the socket and waits for the thread.
final class LoopbackServerSocket: @unchecked Sendable {
    let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    init(backlog: Int32, handle: @escaping @Sendable (Int32) -> Void) throws {
        (fd, port) = try Loopback.bind(listen: backlog)
        let fd = self.fd
        let thread = Thread { [self] in
            defer { done.signal() }
            while true {
                let client = loopbackAccept4(fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                if isStopped { close(client); return }
                handle(client)
            }
        }
        thread.start()
    }

    var isStopped: Bool { lock.withLock { stopped } }

    func stop() {
        let already = lock.withLock { () -> Bool in defer { stopped = true }; return stopped }
        if already { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        _ = done.wait(timeout: .now() + 10)
    }
}

/// The HTTP/1.1 the test servers speak: one request per connection, bodies by Content-Length.
enum HTTPWire {
    struct Request {
        /// The request line and the header lines.
        var lines: [String]
        var headers: [(String, String)]
        /// Head (with its blank line) and as much of the body as Content-Length says, or as came.
        var raw: [UInt8]
        var body: [UInt8]
        /// Whether the whole body came before the connection ended.
        var complete: Bool
    }

    /// Reads a request's head and its Content-Length body; nil when the connection ends (or its
    /// receive timeout passes) before the end of the head.
    static func readRequest(_ fd: Int32) -> Request? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Int?
        while headerEnd == nil {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
            if n <= 0 { return nil }
            data += buffer[0..<n]
            headerEnd = find([13, 10, 13, 10], in: data, from: max(0, data.count - n - 3))
        }
        let lines = String(decoding: data[..<headerEnd!], as: UTF8.self).components(separatedBy: "\r\n")
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
        let bodyStart = headerEnd! + 4
        while data.count < bodyStart + length {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        let end = min(bodyStart + length, data.count)
        return Request(lines: lines, headers: headers, raw: Array(data[..<end]), body: Array(data[min(bodyStart, end)..<end]),
                       complete: data.count >= bodyStart + length)
    }

    /// Sends the request to 127.0.0.1:`port` with `Connection: close` and returns its answer: up
    /// to the end of a Content-Length body, or everything until the upstream closes (or is silent
    /// for `timeoutSeconds`); empty when it cannot connect.
    static func forward(_ raw: [UInt8], port: Int, timeoutSeconds: Int) -> [UInt8] {
        guard let headerEnd = find([13, 10, 13, 10], in: raw) else { return [] }
        var lines = String(decoding: raw[..<headerEnd], as: UTF8.self).components(separatedBy: "\r\n")
        lines.removeAll { $0.lowercased().hasPrefix("connection:") }
        lines.append("Connection: close")
        let request = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) + raw[(headerEnd + 4)...]
        guard let upstream = Loopback.connect(port: port, receiveTimeoutSeconds: timeoutSeconds) else { return [] }
        defer { close(upstream) }
        writeAll(upstream, request)
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(upstream, $0.baseAddress!, 65536) }
            if n <= 0 { break }
            answer += buffer[0..<n]
            // Stop at the end of a Content-Length answer even if the upstream keeps the connection.
            if let end = find([13, 10, 13, 10], in: answer) {
                let head = String(decoding: answer[..<end], as: UTF8.self).lowercased()
                if let line = head.components(separatedBy: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                   let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
                   answer.count >= end + 4 + length {
                    break
                }
            }
        }
        return answer
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            // send with MSG_NOSIGNAL: a peer that has gone must not kill the test process with SIGPIPE.
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            done += n
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int = 0) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for i in start...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }
}

/// accept4(2) is behind _GNU_SOURCE in Glibc's headers, so Swift does not import it: the accepted
/// socket is close-on-exec from the start (a process another test spawns at that moment keeps none).
@_silgen_name("accept4")
private func loopbackAccept4(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?, _ flags: Int32) -> Int32
