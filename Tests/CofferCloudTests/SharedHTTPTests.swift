@testable import CofferCloud
import CofferTestServers
import Foundation
import Testing

/// The pieces the key services and S3 share: the retry loop, the transport's failures, the URI query.
@Suite("Shared HTTP and URI pieces")
struct SharedHTTPTests {
    struct Failure: Error, Equatable { let n: Int }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int { lock.withLock { value += 1; return value } }
        var count: Int { lock.withLock { value } }
    }

    static let quick = RetryPolicy(attempts: 4, baseDelay: 0.001, maxDelay: 0.002)

    @Test("retrying: the first success is the result; each retry is announced once, after a failed attempt")
    func retrySucceeds() async throws {
        let retries = Counter()
        var seen: [Int] = []
        let value = try await Self.quick.retrying(firstError: Failure(n: -1), beforeRetry: { _ = retries.next() },
                                                  exhausted: { $0 }) { (attempt: Int) async throws(Failure) -> RetryStep<String, Failure> in
            seen.append(attempt)
            return attempt < 2 ? .retry(Failure(n: attempt)) : .done("third")
        }
        #expect(value == "third")
        #expect(seen == [0, 1, 2])
        #expect(retries.count == 2)
    }

    @Test("retrying: after every attempt asked for a retry, the last error goes through `exhausted`")
    func retryExhausted() async {
        do {
            _ = try await Self.quick.retrying(firstError: Failure(n: -1), exhausted: { Failure(n: $0.n + 100) }) {
                (attempt: Int) async throws(Failure) -> RetryStep<Int, Failure> in .retry(Failure(n: attempt))
            }
            Issue.record("no error")
        } catch {
            #expect(error == Failure(n: 103))
        }
    }

    @Test("retrying: an error thrown by an attempt ends the loop at once, unchanged")
    func retryFinalError() async {
        let attempts = Counter()
        do {
            _ = try await Self.quick.retrying(firstError: Failure(n: -1), exhausted: { _ in Failure(n: 999) }) {
                (_: Int) async throws(Failure) -> RetryStep<Int, Failure> in
                throw Failure(n: attempts.next())
            }
            Issue.record("no error")
        } catch {
            #expect(error == Failure(n: 1))
        }
        #expect(attempts.count == 1)
    }

    @Test("ServiceError: a key service's and S3's kinds keep their transience, category and wording")
    func serviceErrors() {
        let timeout = KeyServiceError(.timeout, "slow")
        #expect(timeout.isTransient && timeout.category == .key && timeout.description == "timed out: slow")
        #expect(!KeyServiceError(.invalidResponse, "x").isTransient)
        let denied = KeyServiceError(.accessDenied, status: 403, code: "AccessDeniedException", "no")
        #expect(denied.httpStatus == 403 && denied.serviceCode == "AccessDeniedException")
        #expect(denied.with(message: "no (more)") == KeyServiceError(.accessDenied, "no (more)", httpStatus: 403, serviceCode: "AccessDeniedException"))
    }

    @Test("an answer larger than the key services' 1 MiB limit is a transient failure, retried, never read whole")
    func oversizedAnswer() async throws {
        let big = [UInt8](repeating: 0x41, count: (1 << 20) + 1)
        let server = try LoggingListener { _, _ in .answer(status: 200, headers: [], body: big) }
        defer { server.stop() }
        let http = CloudHTTP(policy: RetryPolicy(attempts: 2, timeoutSeconds: 5, baseDelay: 0.01, maxDelay: 0.02))
        do {
            let _: Int = try await http.perform(operation: "test", url: server.endpoint + "/") { () throws(KeyServiceError) in
                (.GET, [], [])
            } interpret: { _ throws(KeyServiceError) in .done(1) }
            Issue.record("a 1 MiB + 1 answer was accepted")
        } catch {
            #expect(error.kind == .unreachable, "\(error)")
            #expect(error.message.contains("after 2 attempts"), "\(error)")
        }
        #expect(server.requests.count == 2)
    }

    @Test("an answer's body arrives whole and exact, from many TCP reads into one array sized by its Content-Length")
    func bodyReadWhole() async throws {
        let body = (0..<900_001).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let server = try LoggingListener { _, _ in .answer(status: 200, headers: [], body: body) }
        defer { server.stop() }
        let http = CloudHTTP(policy: RetryPolicy(attempts: 1, timeoutSeconds: 5, baseDelay: 0.01, maxDelay: 0.02))
        let answer: HTTPAnswer = try await http.perform(operation: "test", url: server.endpoint + "/") { () throws(KeyServiceError) in
            (.GET, [], [])
        } interpret: { answer throws(KeyServiceError) in .done(answer) }
        #expect(answer.declaredLength == body.count)
        #expect(answer.body == body)
    }

    // MARK: URI query

    @Test("URIQuery.parameters: pairs decoded; no '=', an empty name or a name given twice refused, unknown pairs not shown")
    func queryParameters() throws {
        let known: Set<String> = ["A", "B"]
        #expect(try URIQuery.parameters("A=1&B=x%2Fy", known: known) == ["A": "1", "B": "x/y"])
        #expect(throws: URIQuery.Problem(part: "parameter 'A'", "expected NAME=VALUE")) { try URIQuery.parameters("A", known: known) }
        #expect(throws: URIQuery.Problem(part: "parameter '(not shown)'", "expected NAME=VALUE")) { try URIQuery.parameters("s3cr3t", known: known) }
        #expect(throws: URIQuery.Problem(part: "parameter '(not shown)'", "expected NAME=VALUE")) { try URIQuery.parameters("=v", known: known) }
        #expect(throws: URIQuery.Problem(part: "A", "given twice")) { try URIQuery.parameters("A=1&A=2", known: known) }
        #expect(throws: URIQuery.Problem(part: "B", "has a '%' not followed by two hex digits")) { try URIQuery.parameters("B=%4", known: known) }
        #expect(throws: URIQuery.Problem(part: "B", "is not UTF-8")) { try URIQuery.parameters("B=%FF", known: known) }
    }

    @Test("redaction: values of unknown parameters, user information and names that are not plain never show")
    func redaction() {
        let uri = "aws:///k?REGION=us-east-1&AWS_ENDPOINT=http://u:pw@h&Secret%20Name=hunter2&aws_secret_access_key=hunter3&AUTH=specified#frag"
        let shown = URIQuery.redact(uri, shown: ["REGION", "AUTH", "AWS_ENDPOINT"])
        #expect(shown == "aws:///k?REGION=us-east-1&AWS_ENDPOINT=REDACTED&(name not shown: it has other characters)=REDACTED&aws_secret_access_key=REDACTED&AUTH=specified#REDACTED")
        #expect(KeyURIFields.redact(uri) == shown)
    }

    @Test("credentials in a URI: an empty session token is none; AUTH=specified names its source")
    func credentials() throws {
        let (auth, credentials) = try URIQuery.awsCredentials(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": ""], source: "here")
        #expect(auth == .specified)
        #expect(credentials?.sessionToken == nil && credentials?.source == "here" && credentials?.accessKeyID == "AKID")
        let (implicit, none) = try URIQuery.awsCredentials([:], source: "here")
        #expect(implicit == .implicit && none == nil)
    }
}
