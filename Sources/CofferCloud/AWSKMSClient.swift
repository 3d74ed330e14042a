import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// AWS KMS over its JSON 1.1 protocol: `POST /` with `X-Amz-Target: TrentService.OPERATION`,
/// signed with SigV4 for service `kms` in the key's region.
public struct AWSKMSClient: Sendable {
    public let key: AWSKeyURI
    public let credentials: AWSCredentials
    let http: CloudHTTP
    /// The clock for signatures; tests leave it alone.
    var now: @Sendable () -> Date = { Date() }

    /// Credentials from the URI (AUTH=specified) or the chain (AUTH=implicit).
    public init(key: AWSKeyURI, environment: [String: String] = ProcessInfo.processInfo.environment,
                policy: RetryPolicy? = nil) throws(KeyServiceError) {
        self.key = key
        if let given = key.credentials {
            credentials = given
        } else {
            credentials = try AWSCredentialChain.resolve(environment: environment)
        }
        http = CloudHTTP(policy: policy ?? .fromEnvironment(environment))
    }

    public struct Encrypted: Sendable {
        public var ciphertext: [UInt8]
        /// The key's ARN, as KMS reports it (an alias resolves to its key).
        public var keyARN: String
    }

    /// Encrypts up to 4 KiB under the key, bound to `context` (KMS's EncryptionContext: the same
    /// map must be given to decrypt, and it appears in CloudTrail).
    public func encrypt(_ plaintext: [UInt8], context: [String: String]) async throws(KeyServiceError) -> Encrypted {
        let body: [String: Any] = ["KeyId": key.keyID, "Plaintext": Data(plaintext).base64EncodedString(),
                                   "EncryptionContext": context]
        return try await call("Encrypt", body) { json throws(KeyServiceError) in
            guard let blob = (json["CiphertextBlob"] as? String).flatMap({ Data(base64Encoded: $0) }), !blob.isEmpty else {
                throw KeyServiceError(.invalidResponse, "Encrypt answered without a CiphertextBlob")
            }
            return Encrypted(ciphertext: Array(blob), keyARN: json["KeyId"] as? String ?? key.keyID)
        }
    }

    /// Decrypts a blob made by ``encrypt(_:context:)`` with the same context. `keyID` (the ARN
    /// recorded at encryption) makes KMS refuse a blob made under another key.
    public func decrypt(_ ciphertext: [UInt8], context: [String: String], keyID: String?) async throws(KeyServiceError) -> [UInt8] {
        var body: [String: Any] = ["CiphertextBlob": Data(ciphertext).base64EncodedString(), "EncryptionContext": context]
        if let keyID { body["KeyId"] = keyID }
        return try await call("Decrypt", body) { json throws(KeyServiceError) in
            guard let plaintext = (json["Plaintext"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
                throw KeyServiceError(.invalidResponse, "Decrypt answered without a Plaintext")
            }
            return Array(plaintext)
        }
    }

    /// Any other operation (CreateKey, CreateAlias, DescribeKey…), for tests and tools; returns the JSON answer.
    package func rawCall(_ operation: String, _ body: [String: Any]) async throws(KeyServiceError) -> [String: String] {
        try await call(operation, body) { json throws(KeyServiceError) in
            var flat: [String: String] = [:]
            for (name, value) in json {
                if let text = value as? String { flat[name] = text }
                if let nested = value as? [String: Any] {
                    for (inner, innerValue) in nested { if let text = innerValue as? String { flat["\(name).\(inner)"] = text } }
                }
            }
            return flat
        }
    }

    func call<T: Sendable>(_ operation: String, _ body: [String: Any],
                           _ decode: @Sendable ([String: Any]) throws(KeyServiceError) -> T) async throws(KeyServiceError) -> T {
        let payload = JSONBody.encode(body)
        let endpoint = key.endpointAddress
        let hostHeader = endpoint.hostHeader
        let path = endpoint.requestPath([])
        let signer = SigV4Signer(credentials: credentials, region: key.region, service: "kms")
        let now = self.now
        let region = key.region
        let keyName = key.keyID
        return try await http.perform(operation: "aws-kms \(operation)", url: endpoint.url([])) {
            () throws(KeyServiceError) in
            let headers = [("Host", hostHeader), ("Content-Type", "application/x-amz-json-1.1"),
                           ("X-Amz-Target", "TrentService.\(operation)")]
            let request = SigV4Signer.Request(method: "POST", path: path, headers: headers, body: payload)
            let signature = signer.signHeaders(request, date: now())
            return (.POST, headers + signature.headersToAdd, payload)
        } interpret: { response throws(KeyServiceError) in
            if response.status == 200 {
                // Real KMS says application/x-amz-json-1.1, moto says text/html: the body decides.
                // Some operations (CreateAlias) answer with no JSON at all; the decoder of an
                // operation that needs fields says which one is missing.
                return .done(try decode(JSONBody.object(response.body) ?? [:]))
            }
            let error = Self.error(from: response, operation: operation, region: region, key: keyName)
            if error.isTransient { return .retry(error) }
            throw error
        }
    }

    /// Maps an error answer (JSON `__type`/`message`, the X-Amzn-ErrorType header, or an XML
    /// `<Code>`/`<Message>` for signature errors) to a ``KeyServiceError``.
    static func error(from response: CloudHTTP.Response, operation: String, region: String, key: String) -> KeyServiceError {
        var code = response.header("X-Amzn-ErrorType")?.split(separator: ":").first.map(String.init)
        var message: String?
        if let json = JSONBody.object(response.body) {
            if let type = json["__type"] as? String { code = type }
            message = (json["message"] as? String) ?? (json["Message"] as? String)
        } else if let xmlCode = XMLBody.element("Code", in: response.body) {
            code = xmlCode
            message = XMLBody.element("Message", in: response.body)
        }
        // "com.amazonaws.kms#NotFoundException" → "NotFoundException"
        let name = code.map { String($0.split(separator: "#").last ?? Substring($0)) } ?? "HTTP \(response.status)"
        let detail = "\(operation) with key \(key) in \(region): \(name)" + (message.map { ": \($0)" } ?? "")
        switch name {
        case "AccessDeniedException", "AccessDenied":
            return KeyServiceError(.accessDenied, status: response.status, code: code == nil ? nil : name, detail)
        case "NotFoundException":
            return KeyServiceError(.keyNotFound, status: response.status, code: code == nil ? nil : name, detail)
        case "DisabledException", "KMSInvalidStateException", "KeyUnavailableException":
            return KeyServiceError(.keyDisabled, status: response.status, code: code == nil ? nil : name, detail)
        case "InvalidCiphertextException", "IncorrectKeyException", "InvalidKeyUsageException":
            return KeyServiceError(.invalidCiphertext, status: response.status, code: code == nil ? nil : name, detail + " (a wrong key, a wrong encryption context, or an altered blob)")
        case "InvalidArnException":
            return KeyServiceError(.wrongRegion, status: response.status, code: code == nil ? nil : name, detail + " (is the key in \(region)?)")
        case "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature",
             "MissingAuthenticationToken", "ExpiredTokenException", "InvalidSignatureException":
            return KeyServiceError(.badCredentials, status: response.status, code: code == nil ? nil : name, detail)
        case "ThrottlingException", "LimitExceededException", "RequestLimitExceeded", "TooManyRequestsException":
            return KeyServiceError(.throttled, status: response.status, code: code == nil ? nil : name, detail)
        case "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable", "InternalFailure":
            return KeyServiceError(.serverError, status: response.status, code: code == nil ? nil : name, detail)
        default:
            if response.status == 429 { return KeyServiceError(.throttled, status: response.status, code: code == nil ? nil : name, detail) }
            if response.status >= 500 { return KeyServiceError(.serverError, status: response.status, code: code == nil ? nil : name, detail) }
            if response.status == 403 { return KeyServiceError(.accessDenied, status: response.status, code: code == nil ? nil : name, detail) }
            return KeyServiceError(.refused, status: response.status, code: code == nil ? nil : name, detail)
        }
    }
}

/// One signed form-encoded request to an AWS query-protocol API (IAM, STS), without retries:
/// for tools and tests that set up users and access keys. Returns the status and the body.
package enum AWSQueryRequest {
    package static func post(endpoint: String, service: String, region: String, credentials: AWSCredentials,
                            parameters: [(String, String)]) async throws(KeyServiceError) -> (status: Int, body: String) {
        guard let url = URL(string: endpoint), let host = url.host else { throw KeyServiceError(.refused, "\(endpoint) is not a URL") }
        let hostHeader = url.port.map { "\(host):\($0)" } ?? host
        let body = Array(parameters.map {
            "\(SigV4Signer.percentEncode(Array($0.0.utf8), keepSlash: false))=\(SigV4Signer.percentEncode(Array($0.1.utf8), keepSlash: false))"
        }.joined(separator: "&").utf8)
        let signer = SigV4Signer(credentials: credentials, region: region, service: service)
        let http = CloudHTTP(policy: RetryPolicy(attempts: 1))
        return try await http.perform(operation: "\(service) query", url: endpoint.hasSuffix("/") ? endpoint : endpoint + "/") {
            () throws(KeyServiceError) in
            let headers = [("Host", hostHeader), ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]
            let signature = signer.signHeaders(.init(method: "POST", path: "/", headers: headers, body: body), date: Date())
            return (.POST, headers + signature.headersToAdd, body)
        } interpret: { response throws(KeyServiceError) in
            .done((response.status, String(decoding: response.body, as: UTF8.self)))
        }
    }
}
