import AsyncHTTPClient
import CofferFormat
import Foundation
import NIOCore
import NIOHTTP1

/// The kinds of failure of one HTTP service (a key service, S3), and what they mean for retries
/// and exit codes.
public protocol ServiceErrorKind: RawRepresentable, Hashable, Sendable where RawValue == String {
    /// The kinds worth another try: the next one may succeed.
    static var transient: Set<Self> { get }
    /// The category of every failure of this service.
    static var category: ErrorCategory { get }
    /// What a description starts with ("S3 "), or "".
    static var label: String { get }
}

/// What went wrong talking to an HTTP service, in words a user can act on, with its cause kept:
/// the HTTP status and the service's own error code (AWS's `__type`, Vault's first error, S3's
/// `<Code>`) when the service answered, the transport's reason when it did not. Never a secret,
/// a signature or a request header.
public struct ServiceError<K: ServiceErrorKind>: CategorizedError, Equatable {
    public typealias Kind = K

    public let kind: Kind
    public let message: String
    /// The HTTP status of the service's answer, when there was one.
    public let httpStatus: Int?
    /// The service's error code ("NotFoundException", "SlowDown"), when it gave one.
    public let serviceCode: String?

    public init(_ kind: Kind, _ message: String, httpStatus: Int? = nil, serviceCode: String? = nil) {
        self.kind = kind
        self.message = message
        self.httpStatus = httpStatus
        self.serviceCode = serviceCode
    }

    /// Worth another try: the next one may succeed.
    public var isTransient: Bool { Kind.transient.contains(kind) }

    public var category: ErrorCategory { Kind.category }

    public var description: String { "\(Kind.label)\(kind.rawValue): \(message)" }

    /// The same error with more words, its cause unchanged.
    public func with(message: String) -> ServiceError {
        ServiceError(kind, message, httpStatus: httpStatus, serviceCode: serviceCode)
    }
}

/// A key service's failures (AWS KMS, Vault/OpenBao Transit): every one is a key error, the key
/// could not be used.
public enum KeyServiceErrorKind: String, ServiceErrorKind {
    case noCredentials = "no credentials"
    case badCredentials = "bad credentials"
    case accessDenied = "access denied"
    case keyNotFound = "key not found"
    case keyDisabled = "key disabled"
    case invalidCiphertext = "invalid ciphertext"
    case wrongRegion = "wrong region"
    case throttled = "throttled"
    case serverError = "server error"
    case unreachable = "unreachable"
    case timeout = "timed out"
    case invalidResponse = "invalid response"
    case refused = "refused"

    public static let transient: Set<KeyServiceErrorKind> = [.throttled, .serverError, .unreachable, .timeout]
    public static var category: ErrorCategory { .key }
    public static var label: String { "" }
}

public typealias KeyServiceError = ServiceError<KeyServiceErrorKind>

extension ServiceError where K == KeyServiceErrorKind {
    /// An error answer of a service: `status` is its HTTP status, `code` its error code.
    init(_ kind: Kind, status: Int, code: String?, _ message: String) {
        self.init(kind, message, httpStatus: status, serviceCode: code)
    }

    init(_ kind: Kind, httpStatus: Int, _ message: String) {
        self.init(kind, message, httpStatus: httpStatus, serviceCode: nil)
    }
}

/// Retries with exponential backoff and equal jitter, and a deadline per attempt: the policy of
/// every HTTP service Coffer speaks to (key services here, S3 in CofferS3, with its own defaults).
/// For key services, COFFER_KMS_ATTEMPTS and COFFER_KMS_TIMEOUT (seconds) override the defaults.
public struct RetryPolicy: Sendable {
    public var attempts: Int
    public var timeout: TimeAmount
    public var baseDelay: Double
    public var maxDelay: Double

    public init(attempts: Int = 4, timeoutSeconds: Int64 = 10, baseDelay: Double = 0.1, maxDelay: Double = 2) {
        self.attempts = max(1, attempts)
        self.timeout = .seconds(timeoutSeconds)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> RetryPolicy {
        var policy = RetryPolicy()
        if let value = environment["COFFER_KMS_ATTEMPTS"].flatMap(Int.init), value >= 1 { policy.attempts = value }
        if let value = environment["COFFER_KMS_TIMEOUT"].flatMap(Int64.init), value >= 1 { policy.timeout = .seconds(value) }
        return policy
    }

    /// Equal jitter: a uniform delay in [cap/2, cap] with cap = min(max, base·2^attempt), so
    /// clients that failed together do not retry together, and every retry does wait (at least
    /// half the cap: full jitter's delays near zero would hit a struggling server at once).
    public func delay(afterAttempt attempt: Int) -> Double {
        let cap = min(maxDelay, baseDelay * pow(2, Double(attempt)))
        return Double.random(in: (cap / 2)...cap)
    }

    /// Runs `attempt` (given its number, from 0) up to ``attempts`` times, sleeping
    /// ``delay(afterAttempt:)`` before each retry (`beforeRetry` is told first). The first `.done`
    /// is the result; an error `attempt` throws ends the loop at once (not worth retrying); when
    /// every attempt asked for a retry, the last one's error, passed through `exhausted`, is thrown
    /// (`firstError` when no attempt ran).
    public func retrying<T, E: Error>(firstError: E, beforeRetry: () -> Void = {}, exhausted: (E) -> E,
                                      _ attempt: (Int) async throws(E) -> RetryStep<T, E>) async throws(E) -> T {
        var last = firstError
        for number in 0..<attempts {
            if number > 0 {
                beforeRetry()
                try? await Task.sleep(nanoseconds: UInt64(delay(afterAttempt: number - 1) * 1e9))
            }
            switch try await attempt(number) {
            case .done(let value): return value
            case .retry(let error): last = error
            }
        }
        throw exhausted(last)
    }
}

/// What one attempt of ``RetryPolicy/retrying(firstError:beforeRetry:exhausted:_:)`` came to.
public enum RetryStep<T, E: Error> {
    case done(T)
    /// A transient failure: the next attempt may succeed.
    case retry(E)
}

extension RetryStep: Sendable where T: Sendable, E: Sendable {}

/// An HTTP answer read whole: status, headers, body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// The answer's Content-Length, when it gave one.
    public var declaredLength: Int?

    public init(status: Int, headers: [(String, String)], body: [UInt8], declaredLength: Int? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.declaredLength = declaredLength
    }

    /// The first header of that name (any case).
    public func header(_ name: String) -> String? { Self.header(name, in: headers) }

    public static func header(_ name: String, in headers: [(String, String)]) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// An answer whose Content-Length is above the body limit of ``HTTPTransport/exchange(_:on:timeout:bodyLimit:refuseDeclaredOverLimit:)``:
/// its body was not read.
public struct HTTPAnswerTooLong: Error, Sendable {
    public let declaredLength: Int
    public let status: Int
}

/// The HTTP client set-up and exchange shared by the key services (``CloudHTTP``) and S3
/// (CofferS3's `S3Client`): each makes one client per process with ``makeClient(connectTimeout:connectionsPerHost:)``
/// and sends through ``exchange(_:on:timeout:bodyLimit:refuseDeclaredOverLimit:)``; a failure to
/// get an answer is sorted by ``TransportFailure``.
public enum HTTPTransport {
    /// A client that lives as long as the process (never shut down). The pool's own connection
    /// retries are off: they would keep retrying a refused connection until the request's
    /// deadline, where failing fast lets the caller's ``RetryPolicy`` back off (and a key client
    /// move on to the next region or server). Redirects are never followed: a request carries a
    /// token or a signature, and a redirect would take it to an address the user did not give.
    public static func makeClient(connectTimeout: TimeAmount, connectionsPerHost: Int? = nil) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool.retryConnectionEstablishment = false
        if let connectionsPerHost { configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connectionsPerHost }
        configuration.timeout.connect = connectTimeout
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Sends `request` and reads its answer whole, at most `bodyLimit` bytes of body (more is a
    /// `NIOTooManyBytesError`). With `refuseDeclaredOverLimit`, an answer whose Content-Length is
    /// above the limit is refused before its body is read (``HTTPAnswerTooLong``).
    public static func exchange(_ request: HTTPClientRequest, on client: HTTPClient, timeout: TimeAmount, bodyLimit: Int,
                                refuseDeclaredOverLimit: Bool = false) async throws -> HTTPAnswer {
        let raw = try await client.execute(request, timeout: timeout)
        let declared = raw.headers.first(name: "Content-Length").flatMap(Int.init)
        if refuseDeclaredOverLimit, let declared, declared > bodyLimit {
            throw HTTPAnswerTooLong(declaredLength: declared, status: Int(raw.status.code))
        }
        // A HEAD answer declares the object's length but has no body.
        let expected = request.method == .HEAD ? nil : declared
        if let expected, expected > bodyLimit { throw NIOTooManyBytesError(maxBytes: bodyLimit) }
        let body = try await readBody(raw.body, expected: expected, limit: bodyLimit)
        return HTTPAnswer(status: Int(raw.status.code), headers: raw.headers.map { ($0.name, $0.value) },
                          body: body, declaredLength: declared)
    }

    /// Appends the body's fragments to one array, sized from the Content-Length when the answer
    /// gave one within the limit: each byte is copied once, from NIO's receive buffer into the
    /// result (collecting into a `ByteBuffer` first grew it by doubling, so a 4 MiB pack briefly
    /// held 8 MiB, and then copied it out again). More than `limit` bytes is a
    /// `NIOTooManyBytesError`, as `collect(upTo:)` throws.
    static func readBody<Body: AsyncSequence>(_ body: Body, expected: Int?, limit: Int) async throws -> [UInt8]
    where Body.Element == ByteBuffer {
        var bytes: [UInt8] = []
        if let expected, expected > 0 { bytes.reserveCapacity(min(expected, limit)) }
        for try await fragment in body {
            guard fragment.readableBytes <= limit - bytes.count else { throw NIOTooManyBytesError(maxBytes: limit) }
            fragment.withUnsafeReadableBytes { bytes.append(contentsOf: $0) }
        }
        return bytes
    }
}

/// Why an exchange got no answer, sorted for messages and retries.
public enum TransportFailure: Sendable, Equatable {
    /// The connection or the answer took longer than allowed.
    case timedOut
    /// Another failure of the HTTP client (its own description).
    case client(String)
    /// The answer's body was longer than the limit (the error's description).
    case tooLong(String)
    /// The connection was refused.
    case refused
    /// Anything else (the error's description).
    case other(String)

    public init(_ error: Error) {
        if let client = error as? HTTPClientError {
            if client == .deadlineExceeded || client == .readTimeout || client == .connectTimeout {
                self = .timedOut
            } else {
                self = .client("\(client)")
            }
        } else if error is NIOTooManyBytesError {
            self = .tooLong("\(error)")
        } else if "\(error)".lowercased().contains("refused") {
            self = .refused
        } else {
            self = .other("\(error)")
        }
    }
}

/// Counts calls to key services in this process; `COFFER_KMS_STATS=1` makes the CLI print them,
/// which is how the benchmark checks "one wrap per URI per run".
public final class KMSCallStats: @unchecked Sendable {
    public static let shared = KMSCallStats()
    private let lock = NSLock()
    private var operations: [String: Int] = [:]
    private var requests = 0

    /// One logical call (after its retries): "aws-kms Encrypt", "vault decrypt".
    func record(_ operation: String) { lock.withLock { operations[operation, default: 0] += 1 } }
    /// One HTTP request, retries included.
    func recordRequest() { lock.withLock { requests += 1 } }

    public var calls: [String: Int] { lock.withLock { operations } }
    public var httpRequests: Int { lock.withLock { requests } }
    public var totalCalls: Int { lock.withLock { operations.values.reduce(0, +) } }

    public var summary: String {
        let (ops, count) = lock.withLock { (operations, requests) }
        let parts = ops.keys.sorted().map { "\($0)=\(ops[$0]!)" }
        return "kms calls: \(ops.values.reduce(0, +)) (\(parts.isEmpty ? "none" : parts.joined(separator: ", "))), http requests: \(count)"
    }
}

/// One HTTP exchange with a key service, with retries.
struct CloudHTTP: Sendable {
    typealias Response = HTTPAnswer
    typealias Outcome<T> = RetryStep<T, KeyServiceError>

    var policy: RetryPolicy

    /// One client for the process (see ``HTTPTransport/makeClient(connectTimeout:connectionsPerHost:)``).
    static let client = HTTPTransport.makeClient(connectTimeout: .seconds(5))

    /// Sends the request made by `build` (called again for each attempt, so a signature is fresh)
    /// and lets `interpret` decide: a result, a transient error to retry, or a final error (thrown).
    func perform<T: Sendable>(operation: String, url: String,
                              build: @Sendable () throws(KeyServiceError) -> (method: HTTPMethod, headers: [(String, String)], body: [UInt8]),
                              interpret: @Sendable (Response) throws(KeyServiceError) -> Outcome<T>) async throws(KeyServiceError) -> T {
        let policy = self.policy
        return try await policy.retrying(firstError: KeyServiceError(.unreachable, "no attempt made"), exhausted: { last in
            KMSCallStats.shared.record("\(operation) (failed)")
            return policy.attempts > 1 ? last.with(message: "\(last.message) (after \(policy.attempts) attempts)") : last
        }) { (_: Int) async throws(KeyServiceError) -> Outcome<T> in
            let (method, headers, body) = try build()
            var request = HTTPClientRequest(url: url)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            KMSCallStats.shared.recordRequest()
            let response: Response
            do {
                response = try await HTTPTransport.exchange(request, on: Self.client, timeout: policy.timeout, bodyLimit: 1 << 20)
            } catch {
                return .retry(Self.transportError(error, url: url))
            }
            if (300..<400).contains(response.status) {
                // Not followed (see ``HTTPTransport/makeClient(connectTimeout:connectionsPerHost:)``),
                // and not retried: the same request gets the same answer.
                let target = response.header("Location").map { " to \($0.prefix(200))" } ?? ""
                KMSCallStats.shared.record("\(operation) (failed)")
                throw KeyServiceError(.refused, httpStatus: response.status, "\(url) answered HTTP \(response.status), a redirect\(target); redirects are not followed (credentials go only to the address given)")
            }
            let outcome = try interpret(response)
            if case .done = outcome { KMSCallStats.shared.record(operation) }
            return outcome
        }
    }

    static func transportError(_ error: Error, url: String) -> KeyServiceError {
        switch TransportFailure(error) {
        case .timedOut: return KeyServiceError(.timeout, "\(url) did not answer in time")
        case .refused: return KeyServiceError(.unreachable, "\(url): connection refused")
        case .client(let text), .tooLong(let text), .other(let text): return KeyServiceError(.unreachable, "\(url): \(text)")
        }
    }
}

/// Small JSON helpers: responses may come with any content type (moto answers text/html).
enum JSONBody {
    static func object(_ bytes: [UInt8]) -> [String: Any]? {
        guard !bytes.isEmpty else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
    }

    static func encode(_ object: [String: Any]) -> [UInt8] {
        // Sorted keys: the same request gives the same bytes (and the same signature input).
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }
}

/// The first `<Name>…</Name>` element's text in an XML error body (AWS's query-protocol errors).
enum XMLBody {
    static func element(_ name: String, in bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let open = text.range(of: "<\(name)>"),
              let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
