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

    public var port: Int { socket.port }
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    private var socket: LoopbackServerSocket!
    private let reply: @Sendable (Int, Request) -> Reply
    private let lock = NSLock()
    private var log: [Request] = []
    private var connectionCount = 0

    /// `reply(n, request)` decides the answer to the n-th request (from 0).
    public init(reply: @escaping @Sendable (Int, Request) -> Reply = { _, _ in .answer(status: 404, headers: [], body: []) }) throws {
        self.reply = reply
        // One connection at a time: the socket's thread handles each before it accepts the next.
        socket = try LoopbackServerSocket(backlog: 16) { [unowned self] client in
            let index = self.lock.withLock { () -> Int in
                self.connectionCount += 1
                return self.log.count
            }
            Loopback.setReceiveTimeout(client, seconds: 10)
            self.handle(client, index: index)
            close(client)
        }
    }

    deinit { stop() }

    /// Every request received so far.
    public var requests: [Request] { lock.withLock { log } }
    /// Every connection accepted so far (a connection closed before a request counts too).
    public var connections: Int { lock.withLock { connectionCount } }

    public func stop() { socket.stop() }

    private func handle(_ client: Int32, index: Int) {
        guard let wire = HTTPWire.readRequest(client) else { return }
        let requestLine = wire.lines[0].split(separator: " ")
        let request = Request(method: requestLine.first.map(String.init) ?? "", path: requestLine.count > 1 ? String(requestLine[1]) : "",
                              headers: wire.headers, body: wire.body, receivedAt: Double(DispatchTime.now().uptimeNanoseconds) / 1e9)
        lock.withLock { log.append(request) }
        switch reply(index, request) {
        case .close:
            return
        case .answer(let status, let headers, let body):
            var text = "HTTP/1.1 \(status) \(status < 400 ? "OK" : "Error")\r\n"
            for (name, value) in headers { text += "\(name): \(value)\r\n" }
            text += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            HTTPWire.writeAll(client, Array(text.utf8) + body)
        case .forward(let upstreamPort):
            HTTPWire.writeAll(client, HTTPWire.forward(wire.raw, port: upstreamPort, timeoutSeconds: 10))
        }
    }
}
