@testable import CofferCloud
import CofferTestServers
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

@Suite("AWS KMS against moto_server", .serialized)
struct AWSKMSServerTests {
    @Test("Encrypt and Decrypt with an encryption context; the key ARN comes back")
    func roundTrip() async throws {
        let server = try TestServer.moto()
        defer { server.stop() }
        let arn = try await Moto.createKey(server, alias: "backups")
        let client = try Moto.client("alias/backups", server)
        let fileKey = (0..<32).map { UInt8($0) }
        let sealed = try await client.encrypt(fileKey, context: ["coffer-wrap-id": "w1"])
        #expect(sealed.keyARN == arn)
        #expect(sealed.ciphertext != fileKey)
        let opened = try await client.decrypt(sealed.ciphertext, context: ["coffer-wrap-id": "w1"], keyID: arn)
        #expect(opened == fileKey)
    }

    @Test("a wrong encryption context is refused as an invalid ciphertext")
    func wrongContext() async throws {
        let server = try TestServer.moto()
        defer { server.stop() }
        _ = try await Moto.createKey(server, alias: "k")
        let client = try Moto.client("alias/k", server)
        let sealed = try await client.encrypt([UInt8](repeating: 7, count: 32), context: ["coffer-wrap-id": "a"])
        do {
            _ = try await client.decrypt(sealed.ciphertext, context: ["coffer-wrap-id": "b"], keyID: nil)
            Issue.record("decrypted under another context")
        } catch {
            #expect(error.kind == .invalidCiphertext)
        }
    }

    @Test("an unknown alias is 'key not found', with KMS's message")
    func keyNotFound() async throws {
        let server = try TestServer.moto()
        defer { server.stop() }
        let client = try Moto.client("alias/nope", server)
        do {
            _ = try await client.encrypt([1, 2, 3], context: [:])
            Issue.record("encrypted under a missing key")
        } catch {
            #expect(error.kind == .keyNotFound)
            #expect(error.message.contains("alias/nope"))
        }
    }

    @Test("a key made in one region is not found in another (moto keeps one key store per region)")
    func otherRegion() async throws {
        let server = try TestServer.moto()
        defer { server.stop() }
        _ = try await Moto.createKey(server, region: "us-east-1", alias: "east")
        let client = try Moto.client("alias/east", server, region: "eu-west-1")
        do {
            _ = try await client.encrypt([1], context: [:])
            Issue.record("found a us-east-1 key in eu-west-1")
        } catch {
            #expect(error.kind == .keyNotFound)
        }
    }

    @Test("a stopped server is reported as unreachable, naming the endpoint")
    func serverDown() async throws {
        let server = try TestServer.moto()
        let endpoint = server.endpoint
        server.stop()
        #expect(TestServer.httpStatus(port: server.port, path: "/moto-api/") == nil)
        let client = try Moto.client("alias/k", server, attempts: 3)
        do {
            _ = try await client.encrypt([1], context: [:])
            Issue.record("a stopped server answered")
        } catch {
            #expect(error.kind == .unreachable || error.kind == .timeout)
            #expect(error.message.contains("after 3 attempts"))
            #expect(error.message.contains(endpoint))
        }
    }

    /// moto checks SigV4 only in IAM mode: INITIAL_NO_AUTH_ACTION_COUNT lets the first three calls
    /// through to make a user, its access key and a policy; every later call is verified.
    @Test("with signatures checked, the real key works and a wrong secret is refused")
    func signaturesChecked() async throws {
        let server = try TestServer.moto(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"])
        defer { server.stop() }
        let user = try await Moto.createSigningUser(server)
        let id = user.accessKeyID, secret = user.secretAccessKey
        let good = ["AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret]
        let arn = try await Moto.createKey(server, alias: "signed", environment: good)
        let client = try Moto.client("alias/signed", server, environment: good)
        let sealed = try await client.encrypt([9, 9, 9], context: ["c": "1"])
        #expect(try await client.decrypt(sealed.ciphertext, context: ["c": "1"], keyID: arn) == [9, 9, 9])

        let wrong = try Moto.client("alias/signed", server, environment: ["AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret + "x"])
        do {
            _ = try await wrong.decrypt(sealed.ciphertext, context: ["c": "1"], keyID: arn)
            Issue.record("a wrong secret was accepted")
        } catch {
            #expect(error.kind == .badCredentials)
            #expect(error.message.contains("SignatureDoesNotMatch"))
        }
        let unknown = try Moto.client("alias/signed", server, environment: ["AWS_ACCESS_KEY_ID": "AKIDNOBODY", "AWS_SECRET_ACCESS_KEY": secret])
        do {
            _ = try await unknown.encrypt([1], context: [:])
            Issue.record("an unknown access key was accepted")
        } catch {
            #expect(error.kind == .badCredentials)
        }
    }
}

@Suite("Vault Transit against OpenBao", .serialized)
struct VaultTransitServerTests {
    @Test("encrypt/decrypt, rotation, rewrap to the newest version, and retired versions refused")
    func rotation() async throws {
        let server = try TestServer.openBao()
        defer { server.stop() }
        try await Bao.createKey(server, "backup-kek")
        let client = try Bao.client("backup-kek", server)
        let secret = (0..<64).map { UInt8($0 * 3 & 0xFF) }
        let v1 = try await client.encrypt(secret)
        #expect(v1.version == 1)
        #expect(try await client.decrypt(v1) == secret)

        _ = try await client.raw("POST", "transit/keys/backup-kek/rotate")
        let v2 = try await client.rewrap(v1)
        #expect(v2.version == 2)
        #expect(v2.bytes != v1.bytes)
        #expect(try await client.decrypt(v2) == secret)

        _ = try await client.raw("POST", "transit/keys/backup-kek/config", ["min_decryption_version": "2"])
        do {
            _ = try await client.decrypt(v1)
            Issue.record("a retired version decrypted")
        } catch {
            #expect(error.kind == .keyDisabled)
            #expect(error.message.contains("too old"))
        }
        #expect(try await client.decrypt(v2) == secret)
    }

    @Test("a wrong token is access denied; a missing key is not found; a stopped server is unreachable")
    func failures() async throws {
        let server = try TestServer.openBao()
        try await Bao.createKey(server, "k")
        let sealed = try await Bao.client("k", server).encrypt([1, 2, 3])
        let wrongToken = try Bao.client("k", server, token: "wrong")
        let missingKey = try Bao.client("missing", server)
        let client = try Bao.client("k", server)
        do {
            _ = try await wrongToken.decrypt(sealed)
            Issue.record("a wrong token decrypted")
        } catch {
            #expect(error.kind == .accessDenied)
        }
        do {
            _ = try await missingKey.decrypt(sealed)
            Issue.record("a missing key decrypted")
        } catch {
            #expect(error.kind == .keyNotFound)
        }
        server.stop()
        do {
            _ = try await client.decrypt(sealed)
            Issue.record("a stopped server answered")
        } catch {
            #expect(error.kind == .unreachable)
        }
    }

    @Test("Transit ciphertext text form")
    func ciphertextText() {
        let c = VaultTransitClient.Ciphertext("vault:v12:AAEC")
        #expect(c?.version == 12 && c?.bytes == [0, 1, 2])
        #expect(c?.text == "vault:v12:AAEC")
        #expect(VaultTransitClient.Ciphertext("vault:vx:AAEC") == nil)
        #expect(VaultTransitClient.Ciphertext("vault:v0:AAEC") == nil)
        #expect(VaultTransitClient.Ciphertext("other:v1:AAEC") == nil)
    }
}

@Suite("Retries and timeouts against real sockets", .serialized)
struct RetryTests {
    static func awsClient(_ listener: LoggingListener, attempts: Int, baseDelay: Double = 0.01, maxDelay: Double = 0.05) throws -> AWSKMSClient {
        guard case .aws(let key) = try KMSKeyURI.parse("aws:///alias/k?REGION=us-east-1&AWS_ENDPOINT=\(listener.endpoint)") else {
            throw ServerError("not an AWS URI")
        }
        return try AWSKMSClient(key: key, environment: Moto.environment,
                                policy: RetryPolicy(attempts: attempts, timeoutSeconds: 5, baseDelay: baseDelay, maxDelay: maxDelay))
    }

    @Test("a 5xx answer is retried: the server receives exactly the policy's number of requests, then it is a server error")
    func serverErrorRetried() async throws {
        let server = try LoggingListener { _, _ in .answer(status: 500, headers: [], body: Array("<html>boom</html>".utf8)) }
        defer { server.stop() }
        let client = try Self.awsClient(server, attempts: 3)
        do {
            _ = try await client.encrypt([1], context: [:])
            Issue.record("a failing server's answer was accepted")
        } catch {
            #expect(error.kind == .serverError, "\(error)")
            #expect(error.message.contains("after 3 attempts"))
        }
        #expect(server.requests.count == 3)
        #expect(server.requests.allSatisfy { $0.header("X-Amz-Target") == "TrentService.Encrypt" })
    }

    @Test("a connection closed without an answer is retried: exactly the policy's number of connections")
    func connectionClosedRetried() async throws {
        let server = try LoggingListener { _, _ in .close }
        defer { server.stop() }
        let client = try Self.awsClient(server, attempts: 3)
        do {
            _ = try await client.encrypt([1], context: [:])
            Issue.record("a server that answers nothing was accepted")
        } catch {
            #expect(error.kind == .unreachable || error.kind == .timeout, "\(error)")
            #expect(error.message.contains("after 3 attempts"))
        }
        #expect(server.connections == 3)
        #expect(server.requests.count == 3)
    }

    @Test("an access-denied answer is not retried: one request")
    func permanentNotRetried() async throws {
        let server = try LoggingListener { _, _ in .json(400, ["__type": "AccessDeniedException", "message": "no"]) }
        defer { server.stop() }
        let client = try Self.awsClient(server, attempts: 4)
        await #expect(throws: KeyServiceError.self) { _ = try await client.encrypt([1], context: [:]) }
        #expect(server.requests.count == 1)
    }

    @Test("backoff waits between attempts: measured at the server, each gap is at least half its cap")
    func backoffMeasured() async throws {
        let server = try LoggingListener { _, _ in .answer(status: 503, headers: [], body: []) }
        defer { server.stop() }
        // Caps: 0.2 s after the first attempt, 0.4 s after the second; equal jitter waits at
        // least half of each.
        let client = try Self.awsClient(server, attempts: 3, baseDelay: 0.2, maxDelay: 1)
        await #expect(throws: KeyServiceError.self) { _ = try await client.encrypt([1], context: [:]) }
        let times = server.requests.map(\.receivedAt)
        try #require(times.count == 3)
        #expect(times[1] - times[0] >= 0.1, "first gap \(times[1] - times[0]) s")
        #expect(times[2] - times[1] >= 0.2, "second gap \(times[2] - times[1]) s")
    }

    @Test("a KMS retry that recovers: two 500s, then moto answers; encrypt and decrypt succeed after exactly 3 requests each")
    func retryRecovers() async throws {
        let moto = try TestServer.moto()
        defer { moto.stop() }
        let arn = try await Moto.createKey(moto, alias: "flaky")
        // Requests 0, 1 fail; 2 goes to moto; 3, 4 fail; 5 goes to moto.
        let flaky = try LoggingListener { index, _ in index % 3 == 2 ? .forward(port: moto.port) : .answer(status: 500, headers: [], body: []) }
        defer { flaky.stop() }
        guard case .aws(let key) = try KMSKeyURI.parse("aws:///alias/flaky?REGION=us-east-1&AWS_ENDPOINT=\(flaky.endpoint)") else { return }
        let client = try AWSKMSClient(key: key, environment: Moto.environment, policy: RetryPolicy(attempts: 4, baseDelay: 0.01, maxDelay: 0.05))
        let fileKey = (0..<32).map { UInt8($0 ^ 0x5A) }
        let sealed = try await client.encrypt(fileKey, context: ["coffer-wrap-id": "w"])
        #expect(sealed.keyARN == arn)
        #expect(flaky.requests.count == 3)
        #expect(try await client.decrypt(sealed.ciphertext, context: ["coffer-wrap-id": "w"], keyID: arn) == fileKey)
        #expect(flaky.requests.count == 6)
        #expect(flaky.requests.map { $0.header("X-Amz-Target") ?? "" } == Array(repeating: "TrentService.Encrypt", count: 3) + Array(repeating: "TrentService.Decrypt", count: 3))
    }

    @Test("a Vault retry that recovers: two 503s (a standby), then bao answers; exactly 3 requests")
    func vaultRetryRecovers() async throws {
        let bao = try TestServer.openBao()
        defer { bao.stop() }
        try await Bao.createKey(bao, "flaky")
        let flaky = try LoggingListener { index, _ in index % 3 == 2 ? .forward(port: bao.port) : .json(503, ["errors": ["Vault is sealed"]]) }
        defer { flaky.stop() }
        guard case .vault(let key) = try KMSKeyURI.parse("vault:///flaky?ADDR=\(flaky.endpoint)") else { return }
        let client = try VaultTransitClient(key: key, environment: ["VAULT_TOKEN": "root"], policy: RetryPolicy(attempts: 4, baseDelay: 0.01, maxDelay: 0.05))
        let sealed = try await client.encrypt([1, 2, 3])
        #expect(flaky.requests.count == 3)
        #expect(try await client.decrypt(sealed) == [1, 2, 3])
        #expect(flaky.requests.count == 6)
        #expect(flaky.requests.allSatisfy { $0.path.hasPrefix("/v1/transit/") })
    }

    @Test("a server that accepts but never answers times out")
    func silentServer() async throws {
        // A listening socket that is never read: connections complete, requests get no answer.
        let (fd, port) = try Loopback.bind(listen: 8)
        defer { close(fd) }
        guard case .aws(let key) = try KMSKeyURI.parse("aws:///alias/k?REGION=us-east-1&AWS_ENDPOINT=http://127.0.0.1:\(port)") else { return }
        let client = try AWSKMSClient(key: key, environment: Moto.environment, policy: RetryPolicy(attempts: 1, timeoutSeconds: 1))
        do {
            _ = try await client.encrypt([1], context: [:])
            Issue.record("a silent server answered")
        } catch {
            #expect(error.kind == .timeout, "\(error)")
        }
    }
}
