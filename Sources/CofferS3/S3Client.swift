import AsyncHTTPClient
import CofferCloud
import CofferFormat
import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// S3's failures: the repository's storage could not be used, an I/O failure (exit 5).
public enum S3ErrorKind: String, ServiceErrorKind {
    case noCredentials = "no credentials"
    case badCredentials = "bad credentials"
    case accessDenied = "access denied"
    case noSuchBucket = "no such bucket"
    case notFound = "not found"
    case preconditionFailed = "precondition failed"
    case wrongRegion = "wrong region"
    case badDigest = "checksum mismatch"
    case throttled = "throttled"
    case serverError = "server error"
    case unreachable = "unreachable"
    case timeout = "timed out"
    case invalidResponse = "invalid response"
    case refused = "refused"

    public static let transient: Set<S3ErrorKind> = [.throttled, .serverError, .unreachable, .timeout, .badDigest, .invalidResponse]
    public static var category: ErrorCategory { .io }
    public static var label: String { "S3 " }
}

/// What went wrong talking to S3 (see ``ServiceError``).
public typealias S3Error = ServiceError<S3ErrorKind>

/// Retries with exponential backoff and equal jitter, a deadline per request, and a bound on the
/// requests in flight. COFFER_S3_ATTEMPTS, COFFER_S3_TIMEOUT (seconds) override the defaults.
public struct S3Options: Sendable {
    /// Requests in flight at once (`--connections`).
    public var connections: Int = 8
    /// Tries per request, the first included.
    public var attempts: Int = 6
    /// Seconds a request may take to answer, and a body may stall.
    public var timeoutSeconds: Int64 = 120
    public var baseDelay: Double = 0.2
    public var maxDelay: Double = 10
    /// Objects larger than this are uploaded in parts.
    public var multipartThreshold: Int = 16 << 20
    /// Size of each part but the last (S3's minimum is 5 MiB).
    public var partSize: Int = 8 << 20
    /// Most keys asked for per ListObjectsV2 page (S3 answers at most 1000).
    public var pageSize: Int = 1000
    /// `save` without overwrite uses `If-None-Match: *` (AWS S3 since 2024, MinIO, moto). When off,
    /// it checks with HEAD first, which two racing writers can both pass.
    public var conditionalWrites: Bool = true
    /// The client's connections in a pool of its own, closed by ``S3Client/shutdown()`` (for a
    /// process that opens and closes many repositories, and for tests that count descriptors);
    /// otherwise they are in the process-wide pool, which lives as long as the process.
    public var ownConnectionPool: Bool = false

    public init() {}

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> S3Options {
        var options = S3Options()
        if let value = environment["COFFER_S3_ATTEMPTS"].flatMap(Int.init), value >= 1 { options.attempts = value }
        if let value = environment["COFFER_S3_TIMEOUT"].flatMap(Int64.init), value >= 1 { options.timeoutSeconds = value }
        return options
    }

    /// The retries and deadline of each request, as the key services' clients run them.
    var retryPolicy: RetryPolicy {
        RetryPolicy(attempts: attempts, timeoutSeconds: timeoutSeconds, baseDelay: baseDelay, maxDelay: maxDelay)
    }
}

/// Counts S3 requests of this process by operation (retries included); `COFFER_S3_STATS=1` makes
/// the CLI print them, which is how the benchmark reports requests per GB.
public final class S3RequestStats: @unchecked Sendable {
    public static let shared = S3RequestStats()
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    private var retried = 0
    private var sent: Int64 = 0
    private var received: Int64 = 0

    func record(_ operation: String, sent: Int, received: Int) {
        lock.withLock {
            counts[operation, default: 0] += 1
            self.sent += Int64(sent)
            self.received += Int64(received)
        }
    }
    func recordRetry() { lock.withLock { retried += 1 } }

    public var requests: [String: Int] { lock.withLock { counts } }
    public var totalRequests: Int { lock.withLock { counts.values.reduce(0, +) } }
    public var retries: Int { lock.withLock { retried } }

    public var summary: String {
        let (c, r, s, g) = lock.withLock { (counts, retried, sent, received) }
        let parts = c.keys.sorted().map { "\($0)=\(c[$0]!)" }
        return "s3 requests: \(c.values.reduce(0, +)) (\(parts.isEmpty ? "none" : parts.joined(separator: ", "))), retries: \(r), bytes sent: \(s), received: \(g)"
    }
}

/// An S3 bucket spoken to over its REST API, SigV4-signed (service `s3`), path-style or
/// virtual-hosted as the URI says. Every request goes through ``perform(_:)``: a slot among
/// `connections`, a fresh signature, a deadline, and retries of what may succeed next time
/// (5xx, SlowDown, 429, RequestTimeout, dropped or truncated answers).
public final class S3Client: Sendable {
    public let uri: S3URI
    public let options: S3Options
    let credentials: AWSCredentials
    /// Bounds the requests in flight.
    let slots: AsyncLimiter
    public let stats: S3RequestStats

    /// The process-wide HTTP client (see ``HTTPTransport/makeClient(connectTimeout:connectionsPerHost:)``):
    /// a pool big enough for any `--connections`; ``slots`` bounds the requests.
    static let sharedHTTP = makeHTTPClient()
    static func makeHTTPClient() -> HTTPClient { HTTPTransport.makeClient(connectTimeout: .seconds(10), connectionsPerHost: 64) }

    /// ``sharedHTTP``, or this client's own (``S3Options/ownConnectionPool``).
    let http: HTTPClient

    /// Credentials from the URI (AUTH=specified) or the chain (environment, AWS_PROFILE, ~/.aws).
    public init(uri: S3URI, options: S3Options = S3Options(),
                environment: [String: String] = ProcessInfo.processInfo.environment,
                stats: S3RequestStats = .shared) throws(S3Error) {
        self.uri = uri
        self.options = options
        if let given = uri.credentials {
            credentials = given
        } else {
            do { credentials = try AWSCredentialChain.resolve(environment: environment) } catch {
                throw S3Error(.noCredentials, error.message)
            }
        }
        slots = AsyncLimiter(options.connections)
        self.stats = stats
        http = options.ownConnectionPool ? Self.makeHTTPClient() : Self.sharedHTTP
    }

    deinit {
        // An own pool not shut down yet closes in the background (a second shutdown is refused, harmlessly).
        if options.ownConnectionPool { http.shutdown(queue: .global()) { _ in } }
    }

    /// Closes this client's own connections (``S3Options/ownConnectionPool``); the process-wide
    /// pool is left alone. The client cannot send after it.
    public func shutdown() async throws {
        guard options.ownConnectionPool else { return }
        try await http.shutdown()
    }

    // MARK: Requests

    struct Request: Sendable {
        var method: HTTPMethod
        /// The object key (PREFIX/…), or nil for the bucket itself.
        var key: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        /// Largest body accepted in the answer.
        var bodyLimit = 1 << 20
        /// For counting: "PUT", "GET", "LIST"…
        var operation: String
    }

    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        /// How many tries it took (1 = the first).
        var attempts: Int

        func header(_ name: String) -> String? { HTTPAnswer.header(name, in: headers) }
        var errorDocument: XMLElement? { body.isEmpty ? nil : try? S3XML.parse(body, maxBytes: 1 << 20) }
        var errorCode: String? { errorDocument.flatMap { $0.name == "Error" ? $0.childText("Code") : nil } }
    }

    /// The URL and the (decoded) path and query to sign.
    func target(_ key: String?, query: [(String, String)]) -> (url: String, host: String, path: String) {
        let base = uri.serviceEndpoint
        let keySegments = key.map { $0.split(separator: "/", omittingEmptySubsequences: false).map(String.init) } ?? []
        let endpoint: HTTPEndpoint
        let segments: [String]
        switch uri.addressing {
        case .path:
            endpoint = base
            segments = [uri.bucket] + keySegments
        case .virtual:
            endpoint = HTTPEndpoint(scheme: base.scheme, host: "\(uri.bucket).\(base.host)", port: base.port, path: base.path)
            segments = keySegments
        }
        var path = endpoint.requestPath(segments)
        if key == nil && uri.addressing == .virtual && !path.hasSuffix("/") { path += "/" }
        let queryText = query.map {
            SigV4Signer.percentEncode(Array($0.0.utf8), keepSlash: false) + "=" + SigV4Signer.percentEncode(Array($0.1.utf8), keepSlash: false)
        }.joined(separator: "&")
        let url = "\(endpoint.scheme)://\(endpoint.hostHeader)\(path)" + (queryText.isEmpty ? "" : "?" + queryText)
        return (url, endpoint.hostHeader, path)
    }

    /// What a message may say about a request: the operation and the object, never the query's
    /// tokens or the headers.
    func describe(_ request: Request) -> String {
        "\(request.operation) s3://\(uri.bucket)/\(request.key ?? "")"
    }

    /// Sends `request` with retries; returns the first answer that is not worth retrying (its
    /// status may be any: the caller interprets 404, 412…). `accept` may call an answer truncated
    /// or inconsistent (thrown as a transient ``S3Error``), which is retried too.
    func perform(_ request: Request, accept: @Sendable (Response) throws(S3Error) -> Void = { _ throws(S3Error) in }) async throws(S3Error) -> Response {
        let (url, host, path) = target(request.key, query: request.query)
        let signer = SigV4Signer(credentials: credentials, region: uri.region, service: "s3")
        let policy = options.retryPolicy
        let stats = self.stats
        return try await policy.retrying(firstError: S3Error(.unreachable, "\(describe(request)): no attempt made"),
                                         beforeRetry: { stats.recordRetry() }, exhausted: { last in
            S3Error(last.kind, "\(last.message) (after \(policy.attempts) attempt\(policy.attempts == 1 ? "" : "s"))",
                    httpStatus: last.httpStatus, serviceCode: last.serviceCode)
        }) { (attempt: Int) async throws(S3Error) -> RetryStep<Response, S3Error> in
            let signed = signer.signHeaders(
                SigV4Signer.Request(method: request.method.rawValue, path: path,
                                    query: request.query.map { (name: $0.0, value: $0.1) },
                                    headers: [("Host", host)] + request.headers.map { (name: $0.0, value: $0.1) }, body: request.body),
                date: Date(), options: .s3)
            var http = HTTPClientRequest(url: url)
            http.method = request.method
            for (name, value) in request.headers { http.headers.add(name: name, value: value) }
            for (name, value) in signed.headersToAdd { http.headers.replaceOrAdd(name: name, value: value) }
            if request.method == .PUT || request.method == .POST || !request.body.isEmpty {
                http.body = .stream(SlicedBody(request.body), length: .known(Int64(request.body.count)))
            }
            await slots.acquire()
            let answer: HTTPAnswer
            do {
                answer = try await HTTPTransport.exchange(http, on: self.http, timeout: policy.timeout, bodyLimit: request.bodyLimit,
                                                          refuseDeclaredOverLimit: request.method != .HEAD)
            } catch let tooLong as HTTPAnswerTooLong {
                await slots.release()
                stats.record(request.operation, sent: request.body.count, received: 0)
                throw S3Error(.invalidResponse, "\(describe(request)): answer of \(tooLong.declaredLength) bytes, more than the \(request.bodyLimit) expected",
                              httpStatus: tooLong.status)
            } catch {
                await slots.release()
                stats.record(request.operation, sent: request.body.count, received: 0)
                return .retry(transportError(error, request))
            }
            await slots.release()
            stats.record(request.operation, sent: request.body.count, received: answer.body.count)
            let response = Response(status: answer.status, headers: answer.headers, body: answer.body, attempts: attempt + 1)
            if let expected = answer.declaredLength, expected != answer.body.count, request.method != .HEAD {
                return .retry(S3Error(.invalidResponse, "\(describe(request)): answer truncated (\(answer.body.count) of \(expected) bytes)",
                                      httpStatus: response.status))
            }
            if (300..<400).contains(response.status) && response.status != 304 {
                let code = response.errorCode
                throw S3Error(code == "PermanentRedirect" ? .wrongRegion : .refused,
                              "\(describe(request)): HTTP \(response.status)\(code.map { " \($0)" } ?? ""), a redirect; redirects are not followed (is AWS_REGION the bucket's region?)",
                              httpStatus: response.status, serviceCode: code)
            }
            if let error = classify(response, request), error.isTransient {
                return .retry(error)
            }
            do throws(S3Error) {
                try accept(response)
            } catch where error.isTransient {
                return .retry(error)
            }
            return .done(response)
        }
    }

    func transportError(_ error: Error, _ request: Request) -> S3Error {
        switch TransportFailure(error) {
        case .timedOut:
            return S3Error(.timeout, "\(describe(request)): no answer within \(options.timeoutSeconds) s")
        case .client(let text):
            return S3Error(.unreachable, "\(describe(request)): \(uri.serviceEndpoint): \(text)")
        case .tooLong(let text):
            return S3Error(.invalidResponse, "\(describe(request)): answer longer than expected (\(text))")
        case .refused:
            return S3Error(.unreachable, "\(describe(request)): \(uri.serviceEndpoint): connection refused")
        case .other(let text):
            return S3Error(.unreachable, "\(describe(request)): \(uri.serviceEndpoint): \(text.prefix(200))")
        }
    }

    /// The error an answer stands for, or nil for a success (2xx) or for 404/412, which the
    /// caller interprets.
    func classify(_ response: Response, _ request: Request) -> S3Error? {
        let status = response.status
        if (200..<300).contains(status) { return nil }
        let document = response.errorDocument
        let code = document.flatMap { $0.name == "Error" ? $0.childText("Code") : nil }
        let serverMessage = document.flatMap { $0.name == "Error" ? $0.childText("Message") : nil }.map(Self.printable)
        let detail = "HTTP \(status)\(code.map { " \(Self.printable($0))" } ?? "")\(serverMessage.map { ": \($0)" } ?? "")"
        let what = describe(request)
        func error(_ kind: S3Error.Kind, _ hint: String = "") -> S3Error {
            S3Error(kind, "\(what): \(detail)\(hint)", httpStatus: status, serviceCode: code)
        }
        switch (status, code) {
        case (_, "SlowDown"), (429, _), (_, "Throttling"), (_, "RequestLimitExceeded"): return error(.throttled)
        case (_, "RequestTimeout"): return error(.serverError)
        case (_, "BadDigest"), (_, "InvalidDigest"), (_, "XAmzContentSHA256Mismatch"), (_, "IncompleteBody"): return error(.badDigest)
        case (500...599, _): return error(.serverError)
        case (_, "SignatureDoesNotMatch"), (_, "InvalidAccessKeyId"), (_, "InvalidClientTokenId"), (_, "ExpiredToken"),
             (_, "InvalidToken"), (_, "TokenRefreshRequired"):
            return error(.badCredentials, " (credentials from \(credentials.source.isEmpty ? "the chain" : credentials.source))")
        case (_, "RequestTimeTooSkewed"): return error(.badCredentials, " (is this machine's clock right?)")
        case (_, "AuthorizationHeaderMalformed"), (_, "IllegalLocationConstraintException"): return error(.wrongRegion, " (is AWS_REGION the bucket's region?)")
        case (_, "AccessDenied"), (403, _): return error(.accessDenied)
        case (_, "NoSuchBucket"): return error(.noSuchBucket)
        case (404, _): return nil
        case (412, _): return nil
        default: return error(.refused)
        }
    }

    /// Server text in a message: printable ASCII only, at most 200 characters.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(200) {
            out.unicodeScalars.append(scalar.value >= 0x20 && scalar.value < 0x7F ? scalar : "?")
        }
        return out
    }

    /// The answer must be 2xx; anything else becomes its error.
    func expectSuccess(_ response: Response, _ request: Request) throws(S3Error) {
        if (200..<300).contains(response.status) { return }
        if let error = classify(response, request) { throw error }
        if response.status == 404 { throw S3Error(.notFound, "\(describe(request)): HTTP 404", httpStatus: 404, serviceCode: response.errorCode) }
        throw S3Error(.preconditionFailed, "\(describe(request)): HTTP \(response.status)", httpStatus: response.status, serviceCode: response.errorCode)
    }

    // MARK: Bucket

    /// Whether the bucket exists (HEAD on the bucket).
    public func bucketExists() async throws(S3Error) -> Bool {
        let request = Request(method: .HEAD, key: nil, operation: "HEAD")
        let response = try await perform(request)
        if response.status == 404 { return false }
        try expectSuccess(response, request)
        return true
    }

    /// Creates the bucket in the URI's region (with object lock enabled when asked; that turns
    /// versioning on). A bucket this account already owns is fine.
    public func createBucket(objectLock: Bool = false) async throws(S3Error) {
        var body: [UInt8] = []
        if uri.region != "us-east-1" {
            body = Array(("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>"
                          + S3XML.escape(uri.region) + "</LocationConstraint></CreateBucketConfiguration>").utf8)
        }
        var headers: [(String, String)] = [("Content-Type", "application/xml")]
        if objectLock { headers.append(("x-amz-bucket-object-lock-enabled", "true")) }
        let request = Request(method: .PUT, key: nil, headers: headers, body: body, operation: "CREATE-BUCKET")
        let response = try await perform(request)
        if response.status == 409 && response.errorCode == "BucketAlreadyOwnedByYou" { return }
        try expectSuccess(response, request)
    }
}

/// Base64 of bytes (for Content-MD5 and x-amz-checksum-sha256).
func base64(_ bytes: some Sequence<UInt8>) -> String { Data(bytes).base64EncodedString() }

/// A request body handed to the connection in slices of 256 KiB, each copied into a `ByteBuffer`
/// only when the connection asks for it (async-http-client pulls the next slice when the socket
/// can take more). `.bytes(ByteBuffer(bytes:))` copied the whole body first: with three packs of
/// 4 MiB in flight, a backup to S3 held 12 MiB of copies next to the packs themselves.
struct SlicedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    static let sliceSize = 256 << 10
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    struct AsyncIterator: AsyncIteratorProtocol {
        let bytes: [UInt8]
        var offset = 0
        mutating func next() async -> ByteBuffer? {
            guard offset < bytes.count else { return nil }
            let end = Swift.min(offset + SlicedBody.sliceSize, bytes.count)
            defer { offset = end }
            return bytes.withUnsafeBytes { ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: $0[offset..<end])) }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes) }
}
