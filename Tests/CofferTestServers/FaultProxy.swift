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

    public var port: Int { socket.port }
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    public let upstreamPort: Int
    private var socket: LoopbackServerSocket!
    private let period: Int
    private let faults: [Fault]
    private let stallSeconds: Double
    private let lock = NSLock()
    private var requestCount = 0
    private var faultCounts: [Fault: Int] = [:]
    private var enabled = true
    /// Connections being handled, each on a thread of its own; ``stop()`` waits for them.
    private let handlers = DispatchGroup()

    /// `period`: one request in `period` is spoiled (0 or 1: none).
    public init(upstreamPort: Int, period: Int, faults: [Fault] = Fault.allCases, stallSeconds: Double = 4) throws {
        self.upstreamPort = upstreamPort
        self.period = period
        self.faults = faults
        self.stallSeconds = stallSeconds
        signal(SIGPIPE, SIG_IGN)
        socket = try LoopbackServerSocket(backlog: 128) { [unowned self] client in
            self.handlers.enter()
            let thread = Thread { [self] in
                defer { self.handlers.leave() }
                self.handle(client)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit { stop() }

    /// Requests seen so far, and how many of each fault were injected.
    public var requests: Int { lock.withLock { requestCount } }
    public var injected: [Fault: Int] { lock.withLock { faultCounts } }
    public var totalInjected: Int { lock.withLock { faultCounts.values.reduce(0, +) } }

    /// Turns fault injection on or off (requests are still forwarded).
    public func setEnabled(_ on: Bool) { lock.withLock { enabled = on } }

    /// Stops accepting, and waits (a little longer than a stall) for the connections in hand.
    public func stop() {
        socket.stop()
        _ = handlers.wait(timeout: .now() + stallSeconds + 10)
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
        Loopback.setReceiveTimeout(client, seconds: 30)
        guard let request = HTTPWire.readRequest(client), request.complete else { close(client); return }
        let raw = request.raw
        switch nextFault() {
        case nil:
            HTTPWire.writeAll(client, forward(raw))
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
            if let end = HTTPWire.find([13, 10, 13, 10], in: answer) {
                let bodyLength = answer.count - end - 4
                HTTPWire.writeAll(client, Array(answer[..<(end + 4 + bodyLength / 2)]))
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
        HTTPWire.writeAll(client, Array(head.utf8) + body)
    }

    /// Closes with a TCP reset (SO_LINGER 0).
    static func reset(_ client: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(client)
    }

    /// Sends the request upstream with `Connection: close`; returns the whole answer.
    func forward(_ raw: [UInt8]) -> [UInt8] { HTTPWire.forward(raw, port: upstreamPort, timeoutSeconds: 60) }
}
