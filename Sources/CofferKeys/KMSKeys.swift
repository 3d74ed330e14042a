import CofferCloud
import CofferFormat
import Crypto
import Foundation

/// What the two KMS stanzas share (docs/FORMAT.md, "KMS stanzas"): the key that wraps the file key
/// never leaves its service (``AWSKMSStanza``, ``VaultTransitStanza``), WRAP_ID is 16 random bytes
/// (hex) drawn once per wrap, so once per directory run, and the encryption context
/// `{"coffer-format": "v1", "coffer-wrap-id": WRAP_ID}` binds the wrapped key to that wrap.
public enum KMSStanza {
    public static let types = [AWSKMSStanza.stanzaType, VaultTransitStanza.stanzaType]

    public static func context(wrapID: String) -> [String: String] {
        ["coffer-format": "v1", "coffer-wrap-id": wrapID]
    }

    static func newWrapID() -> String {
        Hex.encode(SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })
    }

    static func checkWrapID(_ id: String, stanza: Stanza) throws {
        guard id.count == 32, id == id.lowercased(), Hex.decode(id) != nil else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "WRAP_ID must be 32 lower-case hex digits")
        }
    }

    /// The key id `coffer inspect` shows and `rewrap --remove` takes: 16 hex digits of
    /// SHA-256("coffer/v1 kms key id" ‖ 0 ‖ type ‖ 0 ‖ key ARN, or ADDR/MOUNT/KEY).
    static func keyID(type: String, name: String) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("coffer/v1 kms key id".utf8) + [0] + Array(type.utf8) + [0] + Array(name.utf8))
        return Hex.encode(Array(hasher.finalize()).prefix(8))
    }

    /// The key URI that finds this stanza's key again (no secrets: there are none in a stanza).
    public static func uri(of stanza: Stanza) -> String? {
        switch stanza.type {
        case AWSKMSStanza.stanzaType: return AWSKMSStanza.uri(of: stanza)
        case VaultTransitStanza.stanzaType: return VaultTransitStanza.uri(of: stanza)
        default: return nil
        }
    }
}

/// Wraps the file key with a KMS key named by a URI: one service call per wrap.
public struct KMSRecipient: Recipient {
    public let uri: KMSKeyURI
    let environment: [String: String]

    public init(uri: KMSKeyURI, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.uri = uri
        self.environment = environment
    }

    /// Parses a key URI; a malformed URI is refused with the part that is wrong.
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

    /// KMS stanzas carry Coffer's 32-byte file keys: age has no KMS stanza.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        guard fileKey.count == Limits.fileKeySize else {
            throw KeyError.invalid("a KMS key cannot be a recipient of an age file: age has no KMS stanza")
        }
        let uri = self.uri, environment = self.environment
        do {
            return [try BlockingBridge.run { () throws(KeyServiceError) in
                switch uri {
                case .aws(let key): return try await AWSKMSStanza.wrap(fileKey, key: key, environment: environment)
                case .vault(let key): return try await VaultTransitStanza.wrap(fileKey, key: key, environment: environment)
                }
            }]
        } catch {
            throw KeyError.service(context: "cannot wrap the file key with \(uri.redacted)", cause: error)
        }
    }
}

/// Unwraps KMS stanzas. With URIs, only stanzas of those keys are tried, with the URIs' endpoints
/// and credentials; without, every KMS stanza whose credentials are found (AWS: the credential
/// chain, at the endpoint the stanza records; Vault: VAULT_TOKEN, sent only to the address in
/// VAULT_ADDR, since a token is a bearer secret and a header is not trusted before it is opened).
///
/// A failing service is not an error here: the next stanza (another region, another server) is
/// tried, and every attempt is kept for the message when none works. Results are cached per
/// stanza, so a directory run makes one call per distinct stanza, failures included.
public final class KMSIdentity: Identity, @unchecked Sendable {
    public let uris: [KMSKeyURI]
    let environment: [String: String]
    private let lock = NSLock()
    /// Outcomes by the stanza's encoding: the file key, or nil after a failure.
    private var unwrapped: [[UInt8]: [UInt8]?] = [:]
    private var attemptLog: [String] = []
    /// The cause of the last failure, kept whole.
    private var lastFailure: KeyServiceError?

    public init(uris: [KMSKeyURI], environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.uris = uris
        self.environment = environment
    }

    /// Every attempt so far and its outcome.
    public var attempts: [String] { lock.withLock { attemptLog } }

    /// The key service's error of the last failed attempt (its kind, HTTP status, error code).
    public var lastServiceError: KeyServiceError? { lock.withLock { lastFailure } }

    public var label: String {
        let given = uris.isEmpty ? "KMS keys found in the header" : "KMS keys " + uris.map(\.redacted).joined(separator: ", ")
        let log = attempts
        if log.isEmpty {
            return uris.isEmpty ? "no key (and no KMS stanza to try)" : "\(given) (no KMS stanza of these keys)"
        }
        return "\(given) (attempts: \(log.joined(separator: "; ")))"
    }

    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { KMSStanza.types.contains($0.type) }) { try unwrap($0) }
    }

    enum Parsed {
        case aws(AWSKMSStanza.Fields)
        case vault(VaultTransitStanza.Fields)
    }

    static func parse(_ stanza: Stanza) throws -> Parsed? {
        switch stanza.type {
        case AWSKMSStanza.stanzaType: return .aws(try AWSKMSStanza.parse(stanza))
        case VaultTransitStanza.stanzaType: return .vault(try VaultTransitStanza.parse(stanza))
        default: return nil
        }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard let parsed = try Self.parse(stanza) else { return nil }
        if let known = lock.withLock({ unwrapped[stanza.encoded()] }) { return known }
        let outcome: [UInt8]?
        let description = KeyTypes.describe(stanza)
        switch client(for: parsed) {
        case .none:
            return nil
        case .failed(let reason):
            outcome = nil
            record("\(description): \(reason)")
        case .found(let client):
            do throws(KeyServiceError) {
                outcome = try BlockingBridge.run { () throws(KeyServiceError) in
                    switch (client, parsed) {
                    case (.aws(let client), .aws(let fields)):
                        return try await AWSKMSStanza.unwrap(stanza, fields, client: client)
                    case (.vault(let client), .vault(let fields)):
                        return try await VaultTransitStanza.unwrap(stanza, fields, client: client)
                    default:
                        throw KeyServiceError(.refused, "internal: client and stanza kinds differ")
                    }
                }
                record("\(description): unwrapped")
            } catch {
                outcome = nil
                record("\(description): \(error)", failure: error)
            }
        }
        lock.withLock { unwrapped[stanza.encoded()] = .some(outcome) }
        return outcome
    }

    /// Vault stanzas: the same ciphertext re-encrypted under the key's newest version (Transit's
    /// rewrap; the plaintext never leaves the server), or nil when it already is the newest.
    /// AWS KMS stanzas are left as they are: KMS rotates key material behind the same key ARN.
    public func rewrapToNewestVersion(_ stanza: Stanza) throws -> Stanza? {
        guard let parsed = try Self.parse(stanza), case .vault(let fields) = parsed else { return nil }
        switch client(for: parsed) {
        case .none:
            throw KeyError.invalid("\(KeyTypes.describe(stanza)): no KMS URI given names this key")
        case .failed(let reason):
            throw KeyError.refused("\(KeyTypes.describe(stanza)): \(reason)")
        case .found(let client):
            guard case .vault(let vault) = client else { return nil }
            return try VaultTransitStanza.rewrapToNewestVersion(stanza, fields, client: vault)
        }
    }

    private func record(_ line: String, failure: KeyServiceError? = nil) {
        lock.withLock {
            attemptLog.append(line)
            if let failure { lastFailure = failure }
        }
    }

    enum ServiceClient: Sendable {
        case aws(AWSKMSClient)
        case vault(VaultTransitClient)
    }

    enum ClientLookup {
        /// No given URI names the stanza's key.
        case none
        /// Its credentials or address cannot be used, and why.
        case failed(String)
        case found(ServiceClient)
    }

    func client(for parsed: Parsed) -> ClientLookup {
        do {
            switch parsed {
            case .aws(let fields): return try AWSKMSStanza.client(for: fields, uris: uris, environment: environment)
            case .vault(let fields): return try VaultTransitStanza.client(for: fields, uris: uris, environment: environment)
            }
        } catch {
            return .failed("\(error)")
        }
    }
}
