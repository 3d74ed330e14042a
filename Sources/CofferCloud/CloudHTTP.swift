import AsyncHTTPClient
import CofferFormat
import Foundation
import NIOCore
import NIOHTTP1

/// What went wrong talking to a key service, in words a user can act on, with its cause kept:
/// the HTTP status and the service's own error code (AWS's `__type`, Vault's first error) when
/// the service answered, the transport error's text when it did not.
public struct KeyServiceError: CategorizedError, Equatable {
    public enum Kind: String, Sendable, Equatable {
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
    }

    public let kind: Kind
    public let message: String
    /// The HTTP status of the service's answer, when there was one.
    public let httpStatus: Int?
    /// The service's error code ("NotFoundException", "InvalidCiphertextException"), when it gave one.
    public let serviceCode: String?

    public init(_ kind: Kind, _ message: String, httpStatus: Int? = nil, serviceCode: String? = nil) {
        self.kind = kind
        self.message = message
        self.httpStatus = httpStatus
        self.serviceCode = serviceCode
    }

    /// An error answer of a service: `status` is its HTTP status, `code` its error code.
    init(_ kind: Kind, status: Int, code: String?, _ message: String) {
        self.init(kind, message, httpStatus: status, serviceCode: code)
    }

    init(_ kind: Kind, httpStatus: Int, _ message: String) {
        self.init(kind, message, httpStatus: httpStatus, serviceCode: nil)
    }

    /// The same error with more words, its cause unchanged.
    func with(message: String) -> KeyServiceError {
        KeyServiceError(kind, message, httpStatus: httpStatus, serviceCode: serviceCode)
    }

    /// Worth another try: the next one may succeed.
    public var isTransient: Bool { [.throttled, .serverError, .unreachable, .timeout].contains(kind) }

    /// Every key-service failure is a key error: the key could not be used.
    public var category: ErrorCategory { .key }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// Retries with exponential backoff and full jitter, and a deadline per attempt.
/// COFFER_KMS_ATTEMPTS and COFFER_KMS_TIMEOUT (seconds) override the defaults.
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
    func delay(afterAttempt attempt: Int) -> Double {
        let cap = min(maxDelay, baseDelay * pow(2, Double(attempt)))
        return Double.random(in: (cap / 2)...cap)
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
    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    enum Outcome<T: Sendable>: Sendable {
        case done(T)
        case retry(KeyServiceError)
    }

    var policy: RetryPolicy

    /// One client for the process (never shut down: it lives as long as the process). The pool's
    /// own connection retries are off: they would keep retrying a refused connection until the
    /// request's deadline, where failing fast lets ``perform`` back off and the caller move on
    /// to the next region or server. Redirects are never followed: a request carries a token or
    /// a signature, and a redirect would take it to an address the user did not give.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(5)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// Sends the request made by `build` (called again for each attempt, so a signature is fresh)
    /// and lets `interpret` decide: a result, a transient error to retry, or a final error (thrown).
    func perform<T: Sendable>(operation: String, url: String,
                              build: @Sendable () throws(KeyServiceError) -> (method: HTTPMethod, headers: [(String, String)], body: [UInt8]),
                              interpret: @Sendable (Response) throws(KeyServiceError) -> Outcome<T>) async throws(KeyServiceError) -> T {
        var last = KeyServiceError(.unreachable, "no attempt made")
        for attempt in 0..<policy.attempts {
            if attempt > 0 {
                try? await Task.sleep(nanoseconds: UInt64(policy.delay(afterAttempt: attempt - 1) * 1e9))
            }
            let (method, headers, body) = try build()
            var request = HTTPClientRequest(url: url)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            KMSCallStats.shared.recordRequest()
            let response: Response
            do {
                let raw = try await Self.client.execute(request, timeout: policy.timeout)
                var buffer = try await raw.body.collect(upTo: 1 << 20)
                response = Response(status: Int(raw.status.code), headers: raw.headers.map { ($0.name, $0.value) },
                                    body: buffer.readBytes(length: buffer.readableBytes) ?? [])
            } catch {
                last = Self.transportError(error, url: url)
                continue
            }
            if (300..<400).contains(response.status) {
                // Not followed (see ``client``), and not retried: the same request gets the same answer.
                let target = response.header("Location").map { " to \($0.prefix(200))" } ?? ""
                KMSCallStats.shared.record("\(operation) (failed)")
                throw KeyServiceError(.refused, httpStatus: response.status, "\(url) answered HTTP \(response.status), a redirect\(target); redirects are not followed (credentials go only to the address given)")
            }
            switch try interpret(response) {
            case .done(let value):
                KMSCallStats.shared.record(operation)
                return value
            case .retry(let error):
                last = error
            }
        }
        KMSCallStats.shared.record("\(operation) (failed)")
        if policy.attempts > 1 {
            throw last.with(message: "\(last.message) (after \(policy.attempts) attempts)")
        }
        throw last
    }

    static func transportError(_ error: Error, url: String) -> KeyServiceError {
        if let client = error as? HTTPClientError {
            if client == .deadlineExceeded || client == .readTimeout || client == .connectTimeout {
                return KeyServiceError(.timeout, "\(url) did not answer in time")
            }
            return KeyServiceError(.unreachable, "\(url): \(client)")
        }
        let text = "\(error)"
        if text.lowercased().contains("refused") {
            return KeyServiceError(.unreachable, "\(url): connection refused")
        }
        return KeyServiceError(.unreachable, "\(url): \(text)")
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
