@testable import CofferCloud
import CofferFormat
import Foundation
import Testing

@Suite("Key URIs")
struct KeyURITests {
    @Test("aws:/// with a key id, region and implicit credentials")
    func awsImplicit() throws {
        guard case .aws(let key) = try KMSKeyURI.parse("aws:///1234abcd-12ab-34cd-56ef-1234567890ab?REGION=us-east-1&AUTH=implicit") else {
            Issue.record("not an AWS key"); return
        }
        #expect(key.keyID == "1234abcd-12ab-34cd-56ef-1234567890ab")
        #expect(key.region == "us-east-1")
        #expect(key.auth == .implicit)
        #expect(key.credentials == nil)
        #expect(key.endpointURL == "https://kms.us-east-1.amazonaws.com")
    }

    @Test("aws-kms:/// is an alias; key ARN, alias name and alias ARN are accepted")
    func awsKeyForms() throws {
        for key in ["arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", "alias/backups",
                    "arn:aws:kms:eu-west-1:123456789012:alias/backups"] {
            guard case .aws(let parsed) = try KMSKeyURI.parse("aws-kms:///\(key)?REGION=eu-west-1") else {
                Issue.record("not an AWS key"); continue
            }
            #expect(parsed.keyID == key)
        }
    }

    @Test("AUTH=specified carries credentials, which the redacted form hides")
    func awsSpecified() throws {
        let text = "aws:///alias/k?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=AKID&AWS_SECRET_ACCESS_KEY=s3cr%2Bt&AWS_SESSION_TOKEN=tok&AWS_ENDPOINT=http://127.0.0.1:4566"
        let uri = try KMSKeyURI.parse(text)
        guard case .aws(let key) = uri else { Issue.record("not an AWS key"); return }
        #expect(key.credentials?.accessKeyID == "AKID")
        #expect(key.credentials?.secretAccessKey == "s3cr+t")
        #expect(key.credentials?.sessionToken == "tok")
        #expect(key.endpointURL == "http://127.0.0.1:4566")
        #expect(!uri.redacted.contains("s3cr"))
        #expect(!uri.redacted.contains("tok"))
        #expect(uri.redacted.contains("AWS_ACCESS_KEY_ID=AKID"))
    }

    @Test("vault:/// with address, default mount, namespace")
    func vault() throws {
        guard case .vault(let key) = try KMSKeyURI.parse("vault:///backup-kek?ADDR=http://127.0.0.1:8200/&NAMESPACE=team") else {
            Issue.record("not a Vault key"); return
        }
        #expect(key.key == "backup-kek")
        #expect(key.address == "http://127.0.0.1:8200")
        #expect(key.mount == "transit")
        #expect(key.namespace == "team")
    }

    /// Each malformed URI and the part its error must name.
    @Test("malformed URIs are refused naming the wrong part", arguments: [
        ("kms:///k?REGION=us-east-1", "scheme 'kms'"),
        ("alias/k", "scheme"),
        ("aws://host/k?REGION=us-east-1", "host 'host'"),
        ("aws:///?REGION=us-east-1", "key"),
        ("aws:///k", "REGION"),
        ("aws:///k?REGION=us east", "REGION 'us east'"),
        ("aws:///k?REGION=us-east-1&REGION=eu-west-1", "REGION"),
        ("aws:///k?REGION=us-east-1&region=x", "parameter region"),
        ("aws:///k?REGION=us-east-1&AUTH=maybe", "AUTH=maybe"),
        ("aws:///k?REGION=us-east-1&AUTH=specified&AWS_SECRET_ACCESS_KEY=x", "AWS_ACCESS_KEY_ID"),
        ("aws:///k?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY"),
        ("aws:///k?REGION=us-east-1&AUTH=implicit&AWS_ACCESS_KEY_ID=x", "AWS_ACCESS_KEY_ID"),
        ("aws:///arn:aws:kms:us-east-1:123456789012:key/k?REGION=eu-west-1", "REGION=eu-west-1"),
        ("aws:///arn:aws:s3:::bucket?REGION=us-east-1", "key ARN 'arn:aws:s3:::bucket'"),
        ("aws:///k?REGION=us-east-1&AWS_ENDPOINT=ftp://x", "AWS_ENDPOINT=ftp://x"),
        ("aws:///k%2?REGION=us-east-1", "key"),
        ("aws:///k?REGION", "parameter 'REGION'"),
        ("vault:///k", "ADDR"),
        ("vault:///k?ADDR=http://127.0.0.1:8200&TOKEN=root", "parameter TOKEN"),
        ("vault:///a/b?ADDR=http://127.0.0.1:8200", "key 'a/b'"),
        ("vault:///k?ADDR=127.0.0.1:8200", "ADDR=127.0.0.1:8200"),
        ("vault:///k?ADDR=http://127.0.0.1:8200&MOUNT=/transit", "MOUNT=/transit"),
    ])
    func malformed(text: String, part: String) {
        do {
            let parsed = try KMSKeyURI.parse(text)
            Issue.record("accepted \(text) as \(parsed)")
        } catch {
            #expect(error.part == part, "\(text): \(error)")
        }
    }

    @Test("a mistyped secret parameter is redacted whatever its spelling", arguments: [
        "aws_secret_access_key=hunter2", "AWS_SECRET_ACCESS_KEY =hunter2", "Aws_Session_Token=hunter2", "VAULT_TOKEN=hunter2",
        "token=hunter2", "Token=hunter2", "AWS%5FSECRET%5FACCESS%5FKEY=hunter2", "aws-secret-access-key=hunter2",
        "AWS_SECRET_ACCESS_KEY%3Dhunter2", "AWS_SECRET_ACCESS_KEY:hunter2", "X-Vault-Token=hunter2", "secret=hunter2",
        "AWS_SECRET_KEY=hunter2", "password=hunter2", "hunter2",
    ])
    func mistypedSecretRedacted(parameter: String) {
        for prefix in ["aws:///alias/k?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=AKID&",
                       "aws-kms:///alias/k?REGION=us-east-1&", "vault:///k?ADDR=http://127.0.0.1:8200&"] {
            for text in [prefix + parameter, prefix + parameter + "&MOUNT=x", prefix + parameter + "#frag"] {
                do {
                    let parsed = try KMSKeyURI.parse(text)
                    Issue.record("accepted \(parsed.redacted)")
                } catch {
                    #expect(!error.description.contains("hunter2"), "\(error.description)")
                    #expect(!error.uri.contains("hunter2"))
                    #expect(!error.part.contains("hunter2"), "\(error.part)")
                    // What is not secret is still shown.
                    #expect(error.description.contains("alias/k") || error.description.contains("ADDR=http://127.0.0.1:8200"), "\(error.description)")
                }
            }
        }
    }

    @Test("the hint names the parameter meant, whatever the case, spaces, dashes or escapes")
    func mistypedHint() {
        for name in ["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY%20", "Aws-Session-Token", "AWS%5FSECRET%5FACCESS%5FKEY"] {
            do {
                _ = try KMSKeyURI.parse("aws:///k?REGION=us-east-1&\(name)=hunter2")
                Issue.record("accepted \(name)")
            } catch {
                #expect(error.reason.contains("did you mean AWS_"), "\(name): \(error)")
                #expect(!error.description.contains("hunter2"))
            }
        }
    }

    @Test("an endpoint with user information is refused without showing its password")
    func endpointPasswordHidden() {
        for text in ["aws:///k?REGION=us-east-1&AWS_ENDPOINT=https://user:hunter2@kms.example",
                     "aws:///k?REGION=us-east-1&AWS_ENDPOINT=https://user%3Ahunter2%40kms.example",
                     "vault:///k?ADDR=https://user:hunter2@vault.example:8200"] {
            do {
                _ = try KMSKeyURI.parse(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect(!error.description.contains("hunter2"), "\(error.description)")
            }
        }
    }

    @Test("a valid URI's redacted form shows only values known not to be secret")
    func redactedForm() throws {
        let uri = try KMSKeyURI.parse("aws:///alias/k?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=AKID&AWS_SECRET_ACCESS_KEY=hunter2&AWS_SESSION_TOKEN=tok2")
        #expect(uri.redacted == "aws:///alias/k?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=AKID&AWS_SECRET_ACCESS_KEY=REDACTED&AWS_SESSION_TOKEN=REDACTED")
        let vault = try KMSKeyURI.parse("vault:///k?ADDR=http://127.0.0.1:8200&MOUNT=t&NAMESPACE=ns")
        #expect(vault.redacted == "vault:///k?ADDR=http://127.0.0.1:8200&MOUNT=t&NAMESPACE=ns")
    }

    @Test("a refused URI's message does not repeat its secret")
    func errorRedacts() {
        do {
            _ = try KMSKeyURI.parse("aws:///k?REGION=us-east-1&AUTH=specified&AWS_SECRET_ACCESS_KEY=hunter2&BOGUS=1")
            Issue.record("accepted")
        } catch {
            #expect(!error.description.contains("hunter2"))
            #expect(error.part == "parameter BOGUS")
        }
    }
}

@Suite("Credentials")
struct CredentialTests {
    func home() throws -> String {
        let dir = NSTemporaryDirectory() + "coffer-home-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: "\(dir)/.aws", withIntermediateDirectories: true)
        return dir
    }

    @Test("environment variables come first")
    func environment() throws {
        let credentials = try AWSCredentialChain.resolve(
            environment: ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T", "AWS_PROFILE": "x"],
            home: "/nonexistent")
        #expect(credentials == AWSCredentials(accessKeyID: "A", secretAccessKey: "S", sessionToken: "T",
                                              source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"))
    }

    @Test("a key id without its secret is an error, not a fall-through")
    func halfEnvironment() {
        #expect(throws: KeyServiceError.self) {
            try AWSCredentialChain.resolve(environment: ["AWS_ACCESS_KEY_ID": "A"], home: "/nonexistent")
        }
    }

    @Test("AWS_PROFILE in ~/.aws/credentials, then [profile NAME] in ~/.aws/config")
    func profiles() throws {
        let home = try home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        try """
        # comment
        [default]
        aws_access_key_id = DEFAULTID
        aws_secret_access_key = defaultsecret

        [prod]
        aws_access_key_id=PRODID
        aws_secret_access_key=prodsecret
        aws_session_token = prodtoken
        """.write(toFile: "\(home)/.aws/credentials", atomically: true, encoding: .utf8)
        try """
        [profile ci]
        region = eu-west-1
        aws_access_key_id = CIID
        aws_secret_access_key = cisecret
        """.write(toFile: "\(home)/.aws/config", atomically: true, encoding: .utf8)
        #expect(try AWSCredentialChain.resolve(environment: [:], home: home).accessKeyID == "DEFAULTID")
        let prod = try AWSCredentialChain.resolve(environment: ["AWS_PROFILE": "prod"], home: home)
        #expect(prod.accessKeyID == "PRODID" && prod.secretAccessKey == "prodsecret" && prod.sessionToken == "prodtoken")
        #expect(try AWSCredentialChain.resolve(environment: ["AWS_PROFILE": "ci"], home: home).accessKeyID == "CIID")
        do {
            _ = try AWSCredentialChain.resolve(environment: ["AWS_PROFILE": "nope"], home: home)
            Issue.record("an unknown profile was accepted")
        } catch {
            #expect(error.kind == .noCredentials)
            #expect(error.message.contains("profile nope"))
        }
    }

    @Test("no credentials anywhere")
    func none() {
        do {
            _ = try AWSCredentialChain.resolve(environment: [:], home: "/nonexistent")
            Issue.record("credentials from nowhere")
        } catch {
            #expect(error.kind == .noCredentials)
        }
    }

    @Test("Vault token: VAULT_TOKEN, then ~/.vault-token (trimmed)")
    func vaultToken() throws {
        let home = try home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try VaultTokenSource.resolve(environment: ["VAULT_TOKEN": "env-token"], home: home) == "env-token")
        #expect(throws: KeyServiceError.self) { try VaultTokenSource.resolve(environment: [:], home: home) }
        try "file-token\n".write(toFile: "\(home)/.vault-token", atomically: true, encoding: .utf8)
        #expect(try VaultTokenSource.resolve(environment: [:], home: home) == "file-token")
    }
}

@Suite("KMS error bodies")
struct KeyServiceErrorParsingTests {
    func response(_ status: Int, _ headers: [(String, String)], _ body: String) -> CloudHTTP.Response {
        CloudHTTP.Response(status: status, headers: headers, body: Array(body.utf8))
    }

    @Test("JSON __type with a namespace, any content type")
    func json() {
        let error = AWSKMSClient.error(from: response(400, [("Content-Type", "text/html")],
                                                      #"{"__type":"com.amazonaws.kms#NotFoundException","message":"Key 'x' does not exist"}"#),
                                       operation: "Decrypt", region: "us-east-1", key: "x")
        #expect(error.kind == .keyNotFound)
        #expect(error.message.contains("Key 'x' does not exist"))
        // The cause is kept: the HTTP status and AWS's error code, and the error is a key error (exit 2).
        #expect(error.httpStatus == 400 && error.serviceCode == "NotFoundException")
        #expect(error.category == .key)
    }

    @Test("XML signature errors")
    func xml() {
        let body = "<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></Errors></ErrorResponse>"
        let error = AWSKMSClient.error(from: response(403, [], body), operation: "Encrypt", region: "us-east-1", key: "k")
        #expect(error.kind == .badCredentials)
        #expect(error.httpStatus == 403 && error.serviceCode == "SignatureDoesNotMatch")
        #expect(error.message.contains("SignatureDoesNotMatch"))
    }

    @Test("the X-Amzn-ErrorType header when the body says nothing")
    func headerOnly() {
        let error = AWSKMSClient.error(from: response(400, [("X-Amzn-ErrorType", "DisabledException:http://internal")], ""),
                                       operation: "Decrypt", region: "us-east-1", key: "k")
        #expect(error.kind == .keyDisabled)
    }

    @Test("throttling and 5xx are transient; access denied and bad ciphertext are not")
    func transient() {
        let throttled = AWSKMSClient.error(from: response(400, [], #"{"__type":"ThrottlingException"}"#), operation: "Decrypt", region: "r", key: "k")
        let server = AWSKMSClient.error(from: response(503, [], "<html>down</html>"), operation: "Decrypt", region: "r", key: "k")
        let denied = AWSKMSClient.error(from: response(400, [], #"{"__type":"AccessDeniedException"}"#), operation: "Decrypt", region: "r", key: "k")
        let invalid = AWSKMSClient.error(from: response(400, [], #"{"__type":"InvalidCiphertextException"}"#), operation: "Decrypt", region: "r", key: "k")
        #expect(throttled.isTransient && throttled.kind == .throttled)
        #expect(server.isTransient && server.kind == .serverError)
        #expect(!denied.isTransient && denied.kind == .accessDenied)
        #expect(!invalid.isTransient && invalid.kind == .invalidCiphertext)
    }

    @Test("Vault errors")
    func vault() {
        let retired = VaultTransitClient.error(from: response(400, [], #"{"errors":["ciphertext or signature version is disallowed by policy (too old)"]}"#), key: "k", url: "u")
        let denied = VaultTransitClient.error(from: response(403, [], #"{"errors":["permission denied"]}"#), key: "k", url: "u")
        let missing = VaultTransitClient.error(from: response(400, [], #"{"errors":["encryption key not found"]}"#), key: "k", url: "u")
        #expect(retired.kind == .keyDisabled)
        #expect(denied.kind == .accessDenied && denied.httpStatus == 403 && denied.serviceCode == "permission denied")
        #expect(missing.kind == .keyNotFound)
    }

    @Test("backoff delays lie between half their cap and their cap, and the cap doubles up to the maximum")
    func backoff() {
        let policy = RetryPolicy(attempts: 5, baseDelay: 0.1, maxDelay: 0.5)
        for attempt in 0..<10 {
            let cap = min(0.5, 0.1 * pow(2, Double(attempt)))
            for _ in 0..<50 {
                let delay = policy.delay(afterAttempt: attempt)
                #expect(delay >= cap / 2 && delay <= cap, "attempt \(attempt): \(delay)")
            }
        }
        // Jitter: not one fixed value.
        #expect(Set((0..<50).map { _ in policy.delay(afterAttempt: 3) }).count > 1)
    }
}
