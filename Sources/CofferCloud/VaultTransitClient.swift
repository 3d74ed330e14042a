import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Vault's (and OpenBao's) Transit engine: encrypt, decrypt and rewrap under a named key that
/// never leaves the server. `POST ADDR/v1/MOUNT/{encrypt,decrypt,rewrap}/KEY` with `X-Vault-Token`.
public struct VaultTransitClient: Sendable {
    public let key: VaultKeyURI
    let token: String
    let http: CloudHTTP

    /// The token from VAULT_TOKEN or ~/.vault-token.
    public init(key: VaultKeyURI, environment: [String: String] = ProcessInfo.processInfo.environment,
                policy: RetryPolicy? = nil) throws(KeyServiceError) {
        self.key = key
        token = try VaultTokenSource.resolve(environment: environment)
        http = CloudHTTP(policy: policy ?? .fromEnvironment(environment))
    }

    /// A Transit ciphertext: `vault:vVERSION:BASE64`.
    public struct Ciphertext: Sendable, Equatable {
        public var version: Int
        public var bytes: [UInt8]

        public init(version: Int, bytes: [UInt8]) {
            self.version = version
            self.bytes = bytes
        }

        public init?(_ text: String) {
            let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "vault", parts[1].hasPrefix("v"),
                  let version = Int(parts[1].dropFirst()), version >= 1,
                  let bytes = Data(base64Encoded: String(parts[2])) else { return nil }
            self.version = version
            self.bytes = Array(bytes)
        }

        public var text: String { "vault:v\(version):\(Data(bytes).base64EncodedString())" }
    }

    public func encrypt(_ plaintext: [UInt8]) async throws(KeyServiceError) -> Ciphertext {
        let data = try await call("encrypt", ["plaintext": Data(plaintext).base64EncodedString()])
        return try Self.ciphertext(in: data, operation: "encrypt")
    }

    public func decrypt(_ ciphertext: Ciphertext) async throws(KeyServiceError) -> [UInt8] {
        let data = try await call("decrypt", ["ciphertext": ciphertext.text])
        guard let plaintext = (data["plaintext"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw KeyServiceError(.invalidResponse, "decrypt answered without a plaintext")
        }
        return Array(plaintext)
    }

    /// Re-encrypts under the key's newest version without the plaintext leaving the server.
    public func rewrap(_ ciphertext: Ciphertext) async throws(KeyServiceError) -> Ciphertext {
        let data = try await call("rewrap", ["ciphertext": ciphertext.text])
        return try Self.ciphertext(in: data, operation: "rewrap")
    }

    /// Any other request under `v1/` (mounting Transit, making, rotating and configuring keys):
    /// for tests and tools. Returns the answer's `data` object, flattened to strings.
    public func raw(_ method: String, _ path: String, _ body: [String: String] = [:]) async throws(KeyServiceError) -> [String: String] {
        let segments = path.split(separator: "/").map(String.init)
        guard segments.allSatisfy(HTTPEndpoint.isPathSegment) else { throw KeyServiceError(.refused, "raw path \(path) has an unsafe segment") }
        let data = try await send("raw \(method)", method: HTTPMethod(rawValue: method), url: key.server.url(["v1"] + segments),
                                  JSONBody.encode(body.mapValues { value -> Any in Int(value) ?? value }))
        var flat: [String: String] = [:]
        for (name, value) in data { flat[name] = "\(value)" }
        return flat
    }

    static func ciphertext(in data: [String: Any], operation: String) throws(KeyServiceError) -> Ciphertext {
        guard let text = data["ciphertext"] as? String, let ciphertext = Ciphertext(text) else {
            throw KeyServiceError(.invalidResponse, "\(operation) answered without a vault:vN: ciphertext")
        }
        return ciphertext
    }

    /// `POST ADDR/v1/MOUNT/OPERATION/KEY`, built from typed parts (each segment percent-encoded).
    func call(_ operation: String, _ body: [String: String]) async throws(KeyServiceError) -> [String: Any] {
        let segments = ["v1"] + key.mount.split(separator: "/").map(String.init) + [operation, key.key]
        return try await send("vault \(operation)", method: .POST, url: key.server.url(segments), JSONBody.encode(body))
    }

    func send(_ operation: String, method: HTTPMethod, url: String, _ payload: [UInt8]) async throws(KeyServiceError) -> [String: Any] {
        var headers = [("X-Vault-Token", token), ("Content-Type", "application/json")]
        if let namespace = key.namespace { headers.append(("X-Vault-Namespace", namespace)) }
        let keyName = key.key
        let sent = headers
        let result: SendableJSON = try await http.perform(operation: operation, url: url) { () throws(KeyServiceError) in
            (method, sent, method == .GET ? [] : payload)
        } interpret: { response throws(KeyServiceError) in
            if (200..<300).contains(response.status) {
                let json = JSONBody.object(response.body) ?? [:]
                return .done(SendableJSON(value: json["data"] as? [String: Any] ?? [:]))
            }
            let error = Self.error(from: response, key: keyName, url: url)
            if error.isTransient { return .retry(error) }
            throw error
        }
        return result.value
    }

    static func error(from response: CloudHTTP.Response, key: String, url: String) -> KeyServiceError {
        let messages = (JSONBody.object(response.body)?["errors"] as? [String]) ?? []
        let message = messages.isEmpty ? "HTTP \(response.status)" : messages.joined(separator: "; ")
        let detail = "Vault \(url) (key \(key)): \(message)"
        let lower = message.lowercased()
        switch response.status {
        case 403:
            return KeyServiceError(.accessDenied, status: response.status, code: messages.first, detail + " (is VAULT_TOKEN valid, and does its policy allow this key?)")
        case 429:
            return KeyServiceError(.throttled, status: response.status, code: messages.first, detail)
        case 500...:
            // A sealed or standby server answers 503: another try (or another server) may work.
            return KeyServiceError(.serverError, status: response.status, code: messages.first, detail)
        default:
            if lower.contains("not found") { return KeyServiceError(.keyNotFound, status: response.status, code: messages.first, detail) }
            if lower.contains("disallowed by policy") || lower.contains("too old") {
                return KeyServiceError(.keyDisabled, status: response.status, code: messages.first, detail + " (the key version is retired: min_decryption_version)")
            }
            if lower.contains("authentication failed") || lower.contains("invalid ciphertext") {
                return KeyServiceError(.invalidCiphertext, status: response.status, code: messages.first, detail)
            }
            return KeyServiceError(.refused, status: response.status, code: messages.first, detail)
        }
    }
}

/// The `data` object of a Vault answer, carried out of a retry closure. JSONSerialization's
/// objects are immutable value trees once parsed.
struct SendableJSON: @unchecked Sendable {
    let value: [String: Any]
}
