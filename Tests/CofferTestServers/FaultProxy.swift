import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/1.1 proxy on 127.0.0.1 between a client (Coffer's S3 client) and a real server (moto),
/// that spoils a fraction of the requests the way object stores and networks do: HTTP 500
/// InternalError, HTTP 503 SlowDown, a connection reset before any answer, a stall (no answer for
/// `stallSeconds`, then a close), an answer cut in the middle of its body, and a request forwarded
/// (so the server applied it) whose answer is then dropped with a reset.
///
/// Deterministic: of every `period` requests, the last is spoiled, with the faults taken in turn,
/// so a run of a few hundred requests meets every fault many times. One thread per connection,
/// one request per connection (`Connection: close` both ways).
public final class FaultProxy: @unchecked Sendable {
    public enum Fault: String, CaseIterable, Sendable {
        case internalError, slowDown, reset, stall, truncate, dropAfterForward
    }

    public let port: Int
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    public let upstreamPort: Int
    private let fd: Int32
    private let period: Int
    private let faults: [Fault]
    private let stallSeconds: Double
    private let lock = NSLock()
    private var requestCount = 0
    private var faultCounts: [Fault: Int] = [:]
    private var enabled = true
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    /// `period`: one request in `period` is spoiled (0 or 1: none).
    public init(upstreamPort: Int, period: Int, faults: [Fault] = Fault.allCases, stallSeconds: Double = 4) throws {
        self.upstreamPort = upstreamPort
        self.period = period
        self.faults = faults
        self.stallSeconds = stallSeconds
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
                bind(fd, $0, length) == 0 && listen(fd, 128) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { close(fd); throw ServerError("bind/listen: \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        signal(SIGPIPE, SIG_IGN)
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    deinit { stop() }

    /// Requests seen so far, and how many of each fault were injected.
    public var requests: Int { lock.withLock { requestCount } }
    public var injected: [Fault: Int] { lock.withLock { faultCounts } }
    public var totalInjected: Int { lock.withLock { faultCounts.values.reduce(0, +) } }

    /// Turns fault injection on or off (requests are still forwarded).
    public func setEnabled(_ on: Bool) { lock.withLock { enabled = on } }

    public func stop() {
        let already = lock.withLock { () -> Bool in defer { stopped = true }; return stopped }
        if already { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        _ = done.wait(timeout: .now() + 10)
    }

    private func acceptLoop() {
        defer { done.signal() }
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            if lock.withLock({ stopped }) { close(client); return }
            let thread = Thread { [self] in
                handle(client)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private func nextFault() -> Fault? {
        lock.withLock {
            let n = requestCount
            requestCount += 1
            guard enabled, period > 1, !faults.isEmpty, n % period == period - 1 else { return nil }
            let fault = faults[(n / period) % faults.count]
            faultCounts[fault, default: 0] += 1
            return fault
        }
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let raw = Self.readRequest(client) else { close(client); return }
        switch nextFault() {
        case nil:
            Self.writeAll(client, forward(raw))
            close(client)
        case .internalError?:
            Self.answer(client, status: 500, code: "InternalError")
            close(client)
        case .slowDown?:
            Self.answer(client, status: 503, code: "SlowDown")
            close(client)
        case .reset?:
            Self.reset(client)
        case .stall?:
            usleep(UInt32(stallSeconds * 1e6))
            close(client)
        case .truncate?:
            let answer = forward(raw)
            // Headers intact (Content-Length promises the whole body), half of the body, then a close.
            if let end = Self.find([13, 10, 13, 10], in: answer) {
                let bodyLength = answer.count - end - 4
                Self.writeAll(client, Array(answer[..<(end + 4 + bodyLength / 2)]))
            }
            Self.reset(client)
        case .dropAfterForward?:
            _ = forward(raw)
            Self.reset(client)
        }
    }

    static func answer(_ client: Int32, status: Int, code: String) {
        let body = Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\(code)</Code><Message>injected by the test proxy</Message></Error>".utf8)
        let head = "HTTP/1.1 \(status) \(status == 503 ? "Slow Down" : "Internal Server Error")\r\nContent-Type: application/xml\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        writeAll(client, Array(head.utf8) + body)
    }

    /// Closes with a TCP reset (SO_LINGER 0).
    static func reset(_ client: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(client)
    }

    /// The request's head and its Content-Length body.
    static func readRequest(_ fd: Int32) -> [UInt8]? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Int?
        while headerEnd == nil {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
            if n <= 0 { return nil }
            data += buffer[0..<n]
            headerEnd = find([13, 10, 13, 10], in: data, from: max(0, data.count - n - 3))
        }
        let head = String(decoding: data[..<headerEnd!], as: UTF8.self).lowercased()
        let length = head.components(separatedBy: "\r\n").first { $0.hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        let total = headerEnd! + 4 + length
        data.reserveCapacity(total)
        while data.count < total {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 65536) }
            if n <= 0 { return nil }
            data += buffer[0..<n]
        }
        return data
    }

    /// Sends the request upstream with `Connection: close`; returns the whole answer (read to EOF).
    func forward(_ raw: [UInt8]) -> [UInt8] {
        guard let headerEnd = Self.find([13, 10, 13, 10], in: raw) else { return [] }
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
        address.sin_port = UInt16(upstreamPort).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return [] }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(upstream, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        Self.writeAll(upstream, request)
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(upstream, $0.baseAddress!, 65536) }
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return answer
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
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
