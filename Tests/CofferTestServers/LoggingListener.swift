import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 server on 127.0.0.1 that records every connection and every request (method,
/// path, headers, body, arrival time) and answers as its `reply` function says: a canned answer,
/// a redirect, closing the connection without an answer, or forwarding to a real server (moto,
/// bao). Tests use it as the attacker's server (it must receive nothing), and as a flaky server
/// in front of a real one (it fails N times, then forwards).
///
/// One connection at a time, one request per connection (answers carry `Connection: close`).
public final class LoggingListener: @unchecked Sendable {
    public struct Request: Sendable {
        public let method: String
        public let path: String
        public let headers: [(String, String)]
        public let body: [UInt8]
        /// Seconds since an arbitrary start (monotonic clock).
        public let receivedAt: Double

        public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        /// Everything received, as text: for "no token anywhere" checks.
        public var text: String {
            "\(method) \(path)\n" + headers.map { "\($0.0): \($0.1)" }.joined(separator: "\n") + "\n\n" + String(decoding: body, as: UTF8.self)
        }
    }

    public enum Reply: Sendable {
        case answer(status: Int, headers: [(String, String)], body: [UInt8])
        /// Close the connection without answering.
        case close
        /// Send the request to 127.0.0.1:port and relay its answer.
        case forward(port: Int)

        public static func json(_ status: Int, _ object: [String: Any]) -> Reply {
            let body = (try? JSONSerialization.data(withJSONObject: object)).map { Array($0) } ?? []
            return .answer(status: status, headers: [("Content-Type", "application/json")], body: body)
        }

        public static func redirect(to location: String, status: Int = 307) -> Reply {
            .answer(status: status, headers: [("Location", location)], body: [])
        }
    }

    public let port: Int
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    private let fd: Int32
    private let reply: @Sendable (Int, Request) -> Reply
    private let lock = NSLock()
    private var log: [Request] = []
    private var connectionCount = 0
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)
    private var stopped = false

    /// `reply(n, request)` decides the answer to the n-th request (from 0).
    public init(reply: @escaping @Sendable (Int, Request) -> Reply = { _, _ in .answer(status: 404, headers: [], body: []) }) throws {
        self.reply = reply
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { close(fd); throw ServerError("bind/listen: \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    deinit { stop() }

    /// Every request received so far.
    public var requests: [Request] { lock.withLock { log } }
    /// Every connection accepted so far (a connection closed before a request counts too).
    public var connections: Int { lock.withLock { connectionCount } }

    public func stop() {
        let already = lock.withLock { () -> Bool in defer { stopped = true }; return stopped }
        if already { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        _ = done.wait(timeout: .now() + 10)
    }

    private func serve() {
        defer { done.signal() }
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let index = lock.withLock { () -> Int? in
                if stopped { return nil }
                connectionCount += 1
                return log.count
            }
            guard let index else { close(client); return }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            handle(client, index: index)
            close(client)
        }
    }

    private func handle(_ client: Int32, index: Int) {
        guard let (request, raw) = Self.readRequest(client) else { return }
        lock.withLock { log.append(request) }
        switch reply(index, request) {
        case .close:
            return
        case .answer(let status, let headers, let body):
            var text = "HTTP/1.1 \(status) \(status < 400 ? "OK" : "Error")\r\n"
            for (name, value) in headers { text += "\(name): \(value)\r\n" }
            text += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            Self.writeAll(client, Array(text.utf8) + body)
        case .forward(let upstreamPort):
            Self.writeAll(client, Self.forward(raw, port: upstreamPort))
        }
    }

    static func readRequest(_ fd: Int32) -> (Request, [UInt8])? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Int?
        while headerEnd == nil {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
            if n <= 0 { return nil }
            data += buffer[0..<n]
            headerEnd = find([13, 10, 13, 10], in: data)
        }
        let head = String(decoding: data[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        let headers = lines.compactMap { line -> (String, String)? in
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
        let body = Array(data[min(bodyStart, data.count)..<min(bodyStart + length, data.count)])
        let request = Request(method: requestLine.first.map(String.init) ?? "", path: requestLine.count > 1 ? String(requestLine[1]) : "",
                              headers: headers, body: body, receivedAt: Double(DispatchTime.now().uptimeNanoseconds) / 1e9)
        return (request, Array(data[..<min(bodyStart + length, data.count)]))
    }

    /// Sends the request with `Connection: close` and returns everything the upstream answers.
    static func forward(_ raw: [UInt8], port: Int) -> [UInt8] {
        guard let headerEnd = find([13, 10, 13, 10], in: raw) else { return [] }
        var lines = String(decoding: raw[..<headerEnd], as: UTF8.self).components(separatedBy: "\r\n")
        lines.removeAll { $0.lowercased().hasPrefix("connection:") }
        lines.append("Connection: close")
        let request = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) + raw[(headerEnd + 4)...]
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard upstream >= 0 else { return [] }
        defer { close(upstream) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return [] }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(upstream, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }
}
