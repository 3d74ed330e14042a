import CofferCloud
import CofferFormat
import Crypto
import Foundation

/// The KMS stanzas (docs/FORMAT.md, "KMS stanzas"). The file key is wrapped by a key that never
/// leaves its service; the stanza records where to find that key again, never a secret:
///
/// ```
/// -> aws-kms REGION KEY_ARN WRAP_ID [ENDPOINT]
/// body = the CiphertextBlob of KMS Encrypt(file key, EncryptionContext)
///
/// -> vault-transit ADDR MOUNT KEY VERSION WRAP_ID [NAMESPACE]
/// body = the bytes of the Transit ciphertext vault:vVERSION:BASE64(body)
/// ```
/// WRAP_ID is 16 random bytes (hex) drawn once per wrap, so once per directory run. The
/// encryption context `{"coffer-format": "v1", "coffer-wrap-id": WRAP_ID}` is bound to the blob by
/// KMS and shows up in its audit log; Transit's rewrap endpoint does not take associated data, so
/// for Vault the context's hash is sealed with the file key instead (plaintext = file key ‖
/// SHA-256("coffer/v1 vault-transit context" ‖ 0x00 ‖ WRAP_ID)) and checked after decrypting.
public enum KMSStanza {
    public static let awsType = "aws-kms"
    public static let vaultType = "vault-transit"
    public static let types = [awsType, vaultType]

    public static func context(wrapID: String) -> [String: String] {
        ["coffer-format": "v1", "coffer-wrap-id": wrapID]
    }

    static func vaultContextHash(wrapID: String) -> [UInt8] {
        Array(SHA256.hash(data: Array("coffer/v1 vault-transit context".utf8) + [0] + Array(wrapID.utf8)))
    }

    static func newWrapID() -> String {
        Hex.encode(SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })
    }

    /// A parsed KMS stanza.
    enum Parsed {
        case aws(region: String, keyARN: String, wrapID: String, endpoint: String?)
        case vault(address: String, mount: String, key: String, version: Int, wrapID: String, namespace: String?)
    }

    static func parse(_ stanza: Stanza) throws -> Parsed? {
        func bad(_ reason: String) -> CofferError { .malformedStanza(type: stanza.type, reason: reason) }
        func checkWrapID(_ id: String) throws {
            guard id.count == 32, id == id.lowercased(), Hex.decode(id) != nil else { throw bad("WRAP_ID must be 32 lower-case hex digits") }
        }
        switch stanza.type {
        // Every field is checked for what it can hold before anything is built from it: a
        // header is attacker-controlled until its MAC is checked, and these fields choose where
        // a request goes (docs/KEYS.md, "Where KMS credentials go").
        case awsType:
            guard (3...4).contains(stanza.arguments.count) else { throw bad("expected REGION KEY_ARN WRAP_ID [ENDPOINT]") }
            let region = stanza.arguments[0], arn = stanza.arguments[1]
            guard HTTPEndpoint.isAWSRegion(region) else { throw bad("REGION is not a region name such as us-east-1") }
            guard KeyURIFields.isKeyARN(arn, region: region) else {
                throw bad("KEY_ARN is not arn:PARTITION:kms:\(region):ACCOUNT:key/ID")
            }
            try checkWrapID(stanza.arguments[2])
            guard !stanza.body.isEmpty else { throw bad("empty ciphertext blob") }
            let endpoint = stanza.arguments.count == 4 ? stanza.arguments[3] : nil
            if let endpoint {
                do { _ = try HTTPEndpoint(parsing: endpoint) } catch { throw bad("ENDPOINT \(error)") }
            }
            return .aws(region: region, keyARN: arn, wrapID: stanza.arguments[2], endpoint: endpoint)
        case vaultType:
            guard (5...6).contains(stanza.arguments.count) else { throw bad("expected ADDR MOUNT KEY VERSION WRAP_ID [NAMESPACE]") }
            let address = stanza.arguments[0], mount = stanza.arguments[1], key = stanza.arguments[2]
            let namespace = stanza.arguments.count == 6 ? stanza.arguments[5] : nil
            do { _ = try HTTPEndpoint(parsing: address) } catch { throw bad("ADDR \(error)") }
            guard KeyURIFields.isPath(mount) else { throw bad("MOUNT must be a path of letters, digits, '-', '.', '_' or '~'") }
            guard HTTPEndpoint.isPathSegment(key) else { throw bad("KEY must be a name of letters, digits, '-', '.', '_' or '~'") }
            if let namespace, !KeyURIFields.isPath(namespace) {
                throw bad("NAMESPACE must be a path of letters, digits, '-', '.', '_' or '~'")
            }
            guard let version = Int(stanza.arguments[3]), version >= 1, String(version) == stanza.arguments[3] else {
                throw bad("VERSION must be a positive decimal number")
            }
            try checkWrapID(stanza.arguments[4])
            guard !stanza.body.isEmpty else { throw bad("empty ciphertext") }
            return .vault(address: address, mount: mount, key: key, version: version,
                          wrapID: stanza.arguments[4], namespace: namespace)
        default:
            return nil
        }
    }

    /// The key id `coffer inspect` shows and `rewrap --remove` takes: 16 hex digits of
    /// SHA-256("coffer/v1 kms key id" ‖ 0 ‖ type ‖ 0 ‖ key ARN, or ADDR/MOUNT/KEY). The Vault key
    /// version is not part of it: a rotated key is the same key.
    public static func keyID(of stanza: Stanza) -> String? {
        guard let parsed = try? parse(stanza) else { return nil }
        let name: String
        switch parsed {
        case .aws(_, let arn, _, _): name = arn
        case .vault(let address, let mount, let key, _, _, _): name = "\(address)/\(mount)/\(key)"
        }
        var hasher = SHA256()
        hasher.update(data: Array("coffer/v1 kms key id".utf8) + [0] + Array(stanza.type.utf8) + [0] + Array(name.utf8))
        return Hex.encode(Array(hasher.finalize()).prefix(8))
    }

    /// The key URI that finds this stanza's key again (no secrets: there are none in a stanza).
    public static func uri(of stanza: Stanza) -> String? {
        guard let parsed = try? parse(stanza) else { return nil }
        switch parsed {
        case .aws(let region, let arn, _, let endpoint):
            return "aws-kms:///\(arn)?REGION=\(region)" + (endpoint.map { "&AWS_ENDPOINT=\($0)" } ?? "")
        case .vault(let address, let mount, let key, _, _, let namespace):
            return "vault:///\(key)?ADDR=\(address)&MOUNT=\(mount)" + (namespace.map { "&NAMESPACE=\($0)" } ?? "")
        }
    }

    public static func registerDescription() {
        for type in types {
            StanzaDescriptions.register(type: type) { stanza in
                guard let parsed = try? parse(stanza) else { return "a '\(stanza.type)' key" }
                switch parsed {
                case .aws(let region, let arn, _, _): return "AWS KMS key \(arn) (\(region))"
                case .vault(let address, let mount, let key, let version, _, _): return "Vault Transit key \(mount)/\(key) v\(version) at \(address)"
                }
            }
        }
    }

    static func serviceError(_ error: KMSError, _ what: String) -> CofferError {
        .keyServiceFailed("\(what): \(error)")
    }
}

/// Wraps the file key with a KMS key named by a URI: one service call per wrap.
public struct KMSRecipient: Recipient {
    public let uri: KMSKeyURI
    let environment: [String: String]

    public init(uri: KMSKeyURI, environment: [String: String] = ProcessInfo.processInfo.environment) {
        KeyTypes.registerAll()
        self.uri = uri
        self.environment = environment
    }

    /// Parses a `--kms` value; a malformed URI is refused with the part that is wrong.
    public init(parsing text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        do {
            self.init(uri: try KMSKeyURI.parse(text), environment: environment)
        } catch {
            throw CofferError.invalidParameter("\(error)")
        }
    }

    /// AUTH=specified puts secrets in the URI, hence in shell history and process lists.
    public var warning: String? {
        if case .aws(let key) = uri, key.auth == .specified {
            return "warning: \(uri.redacted) carries AWS credentials (AUTH=specified): they end up in shell history and process lists; prefer AUTH=implicit with AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        }
        return nil
    }

    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        let uri = self.uri, environment = self.environment, bytes = fileKey.bytes
        do {
            return try BlockingBridge.run { () throws(KMSError) in
                try await Self.wrap(bytes, uri: uri, environment: environment)
            }
        } catch {
            throw KMSStanza.serviceError(error, "cannot wrap the file key with \(uri.redacted)")
        }
    }

    static func wrap(_ fileKey: [UInt8], uri: KMSKeyURI, environment: [String: String]) async throws(KMSError) -> Stanza {
        let wrapID = KMSStanza.newWrapID()
        switch uri {
        case .aws(let key):
            let client = try AWSKMSClient(key: key, environment: environment)
            let sealed = try await client.encrypt(fileKey, context: KMSStanza.context(wrapID: wrapID))
            var arguments = [key.region, sealed.keyARN, wrapID]
            if let endpoint = key.endpoint { arguments.append(endpoint.description) }
            return Stanza(type: KMSStanza.awsType, arguments: arguments, body: sealed.ciphertext)
        case .vault(let key):
            let client = try VaultTransitClient(key: key, environment: environment)
            let sealed = try await client.encrypt(fileKey + KMSStanza.vaultContextHash(wrapID: wrapID))
            var arguments = [key.address, key.mount, key.key, String(sealed.version), wrapID]
            if let namespace = key.namespace { arguments.append(namespace) }
            return Stanza(type: KMSStanza.vaultType, arguments: arguments, body: sealed.bytes)
        }
    }
}

/// Unwraps KMS stanzas. With URIs (`--kms`), only stanzas of those keys are tried, with the
/// URIs' endpoints and credentials; without, every KMS stanza whose credentials are found
/// (AWS: the credential chain, at the endpoint the stanza records; Vault: VAULT_TOKEN, sent only
/// to the address in VAULT_ADDR, since a token is a bearer secret and a header is not trusted
/// before it is opened).
///
/// A failing service is not an error here: the next stanza (another region, another server) is
/// tried, and every attempt is kept for the message when none works. Results are cached per
/// stanza, so a directory run makes one call per distinct stanza, failures included.
public final class KMSIdentity: Identity, @unchecked Sendable {
    public let uris: [KMSKeyURI]
    let environment: [String: String]
    private let lock = NSLock()
    /// Outcomes by the stanza's encoding.
    private var unwrapped: [[UInt8]: Result<FileKey, CofferError>] = [:]
    private var attemptLog: [String] = []

    public init(uris: [KMSKeyURI], environment: [String: String] = ProcessInfo.processInfo.environment) {
        KeyTypes.registerAll()
        self.uris = uris
        self.environment = environment
    }

    /// Every attempt so far and its outcome.
    public var attempts: [String] { lock.withLock { attemptLog } }

    public var label: String {
        let given = uris.isEmpty ? "KMS keys found in the header" : "KMS keys " + uris.map(\.redacted).joined(separator: ", ")
        let log = attempts
        if log.isEmpty {
            return uris.isEmpty ? "no key (and no KMS stanza to try)" : "\(given) (no KMS stanza of these keys)"
        }
        return "\(given) (attempts: \(log.joined(separator: "; ")))"
    }

    public func unwrap(_ stanza: Stanza) throws -> FileKey? {
        guard let parsed = try KMSStanza.parse(stanza) else { return nil }
        if let known = lock.withLock({ unwrapped[stanza.encoded()] }) {
            if case .success(let key) = known { return key }
            return nil
        }
        let outcome: Result<FileKey, CofferError>
        let description = StanzaDescriptions.describe(stanza)
        switch client(for: parsed) {
        case .none:
            return nil
        case .failed(let reason):
            outcome = .failure(.keyServiceFailed(reason))
            record("\(description): \(reason)")
        case .found(let client):
            do {
                let bytes = try BlockingBridge.run { () throws(KMSError) in try await client.unwrap(stanza, parsed) }
                outcome = .success(try FileKey(bytes: bytes))
                record("\(description): unwrapped")
            } catch let error as KMSError {
                outcome = .failure(.keyServiceFailed("\(error)"))
                record("\(description): \(error)")
            } catch let error as CofferError {
                outcome = .failure(error)
                record("\(description): \(error)")
            }
        }
        lock.withLock { unwrapped[stanza.encoded()] = outcome }
        if case .success(let key) = outcome { return key }
        return nil
    }

    /// Vault stanzas: the same ciphertext re-encrypted under the key's newest version (Transit's
    /// rewrap; the plaintext never leaves the server), or nil when it already is the newest.
    /// AWS KMS stanzas are left as they are: KMS rotates key material behind the same key ARN.
    public func rewrapToNewestVersion(_ stanza: Stanza) throws -> Stanza? {
        guard let parsed = try KMSStanza.parse(stanza), case .vault(_, _, _, let version, _, _) = parsed else { return nil }
        switch client(for: parsed) {
        case .none:
            throw CofferError.keyServiceFailed("\(StanzaDescriptions.describe(stanza)): no --kms URI names this key")
        case .failed(let reason):
            throw CofferError.keyServiceFailed("\(StanzaDescriptions.describe(stanza)): \(reason)")
        case .found(let client):
            guard case .vault(let vault) = client else { return nil }
            let old = VaultTransitClient.Ciphertext(version: version, bytes: stanza.body)
            let new: VaultTransitClient.Ciphertext
            do throws(KMSError) {
                new = try BlockingBridge.run { () throws(KMSError) in try await vault.rewrap(old) }
            } catch {
                throw KMSStanza.serviceError(error, "cannot rewrap \(StanzaDescriptions.describe(stanza))")
            }
            guard new.version != version else { return nil }
            var arguments = stanza.arguments
            arguments[3] = String(new.version)
            return Stanza(type: stanza.type, arguments: arguments, body: new.bytes)
        }
    }

    private func record(_ line: String) { lock.withLock { attemptLog.append(line) } }

    enum ServiceClient: Sendable {
        case aws(AWSKMSClient)
        case vault(VaultTransitClient)

        func unwrap(_ stanza: Stanza, _ parsed: KMSStanza.Parsed) async throws(KMSError) -> [UInt8] {
            switch (self, parsed) {
            case (.aws(let client), .aws(_, let arn, let wrapID, _)):
                return try await client.decrypt(stanza.body, context: KMSStanza.context(wrapID: wrapID), keyID: arn)
            case (.vault(let client), .vault(_, _, _, let version, let wrapID, _)):
                let plaintext = try await client.decrypt(.init(version: version, bytes: stanza.body))
                guard plaintext.count == 64, Array(plaintext[32...]) == KMSStanza.vaultContextHash(wrapID: wrapID) else {
                    throw KMSError(.invalidCiphertext, "the Transit plaintext is not this stanza's (its context hash differs)")
                }
                return Array(plaintext[..<32])
            default:
                throw KMSError(.refused, "internal: client and stanza kinds differ")
            }
        }
    }

    enum ClientLookup {
        /// No given URI names the stanza's key.
        case none
        /// Its credentials or address cannot be used, and why.
        case failed(String)
        case found(ServiceClient)
    }

    /// The client for a stanza. Without `--kms` URIs, a client is built from the stanza's typed
    /// fields (never from a URI pasted together from them), and only for an address the user
    /// gave: Vault's ADDR must be VAULT_ADDR; an AWS ENDPOINT must be AWS_ENDPOINT_URL_KMS,
    /// AWS_ENDPOINT_URL or the region's own https://kms.REGION.amazonaws.com.
    func client(for parsed: KMSStanza.Parsed) -> ClientLookup {
        do {
            switch parsed {
            case .aws(let region, let arn, _, let endpoint):
                if uris.isEmpty {
                    let official = HTTPEndpoint.awsKMS(region: region)
                    let given = try userAWSEndpoints()
                    let target: HTTPEndpoint
                    if let endpoint {
                        let recorded = try HTTPEndpoint(parsing: endpoint)
                        guard recorded == official || given.contains(recorded) else {
                            return .failed("not tried: credentials are sent only to an endpoint you gave (AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, a --kms URI's AWS_ENDPOINT) or to \(official), and this stanza names \(recorded); set AWS_ENDPOINT_URL_KMS=\(recorded) or give --kms to use it")
                        }
                        target = recorded
                    } else {
                        target = given.first ?? official
                    }
                    let key = try AWSKeyURI(keyARN: arn, region: region, endpoint: target == official ? nil : target)
                    return .found(.aws(try AWSKMSClient(key: key, environment: environment)))
                }
                for case .aws(let key) in uris where key.region == region && Self.names(key.keyID, arn: arn) {
                    return .found(.aws(try AWSKMSClient(key: key, environment: environment)))
                }
                return .none
            case .vault(let address, let mount, let key, _, _, let namespace):
                if uris.isEmpty {
                    let recorded = try HTTPEndpoint(parsing: address)
                    let trusted = environment["VAULT_ADDR"].flatMap { $0.isEmpty ? nil : try? HTTPEndpoint(parsing: $0) }
                    guard trusted == recorded else {
                        return .failed("not tried: the token is sent only to VAULT_ADDR (\(trusted?.description ?? "unset or not a URL")), and this stanza names \(recorded); give --kms vault:///\(key)?ADDR=\(recorded)&MOUNT=\(mount) to use it")
                    }
                    let uri = try VaultKeyURI(key: key, server: recorded, mount: mount, namespace: namespace)
                    return .found(.vault(try VaultTransitClient(key: uri, environment: environment)))
                }
                for case .vault(let uri) in uris where uri.key == key && uri.mount == mount {
                    return .found(.vault(try VaultTransitClient(key: uri, environment: environment)))
                }
                return .none
            }
        } catch {
            return .failed("\(error)")
        }
    }

    /// AWS_ENDPOINT_URL_KMS, then AWS_ENDPOINT_URL (the AWS SDKs' variables), when set.
    func userAWSEndpoints() throws -> [HTTPEndpoint] {
        var endpoints: [HTTPEndpoint] = []
        for name in ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"] {
            guard let value = environment[name], !value.isEmpty else { continue }
            do {
                endpoints.append(try HTTPEndpoint(parsing: value))
            } catch {
                throw KMSError(.refused, "\(name)=\(value) \(error)")
            }
        }
        return endpoints
    }

    /// Whether a URI's KEY (key id, key ARN, alias) can name the key of `arn`. An alias can name
    /// any key, so it is tried: KMS itself refuses a blob of another key (Decrypt's KeyId).
    static func names(_ keyID: String, arn: String) -> Bool {
        keyID == arn || arn.hasSuffix(":key/\(keyID)") || keyID.hasPrefix("alias/") || keyID.contains(":alias/")
    }
}
