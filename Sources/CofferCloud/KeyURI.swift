import Foundation

/// A KMS key named by a URI in CockroachDB's syntax:
///
/// ```
/// aws:///KEY?REGION=R[&AUTH=implicit|specified][&AWS_ACCESS_KEY_ID=…&AWS_SECRET_ACCESS_KEY=…&AWS_SESSION_TOKEN=…][&AWS_ENDPOINT=URL]
/// aws-kms:///KEY?…                     (the same)
/// vault:///TRANSIT_KEY?ADDR=URL[&MOUNT=transit][&NAMESPACE=ns]
/// ```
/// KEY is a key id, key ARN, alias name (`alias/x`) or alias ARN. Vault tokens never come from the
/// URI (VAULT_TOKEN or ~/.vault-token), so the URI of a Vault key is never secret.
public enum KMSKeyURI: Sendable, Equatable, CustomStringConvertible {
    case aws(AWSKeyURI)
    case vault(VaultKeyURI)

    public static func parse(_ text: String) throws(KeyURIError) -> KMSKeyURI {
        guard let schemeEnd = text.range(of: "://") else {
            throw KeyURIError(text, part: "scheme", "expected aws:///KEY?REGION=…, aws-kms:///KEY?REGION=… or vault:///KEY?ADDR=…")
        }
        let scheme = String(text[..<schemeEnd.lowerBound])
        let rest = text[schemeEnd.upperBound...]
        guard ["aws", "aws-kms", "vault"].contains(scheme) else {
            throw KeyURIError(text, part: "scheme '\(scheme)'", "unknown; use aws://, aws-kms:// or vault://")
        }
        guard rest.hasPrefix("/") else {
            let host = rest.prefix { $0 != "/" && $0 != "?" }
            throw KeyURIError(text, part: "host '\(host)'",
                              "a key URI has an empty host: write \(scheme):///KEY (three slashes), the endpoint goes in \(scheme == "vault" ? "ADDR" : "AWS_ENDPOINT")")
        }
        let pathAndQuery = rest.dropFirst()
        let q = pathAndQuery.firstIndex(of: "?")
        let key: String
        var parameters: [String: String] = [:]
        do throws(URIQuery.Problem) {
            key = try URIQuery.decode(pathAndQuery[..<(q ?? pathAndQuery.endIndex)], part: "key")
            if let q { parameters = try URIQuery.parameters(pathAndQuery[pathAndQuery.index(after: q)...], known: KeyURIFields.allKnown) }
        } catch {
            throw KeyURIError(text, error)
        }
        guard !key.isEmpty else { throw KeyURIError(text, part: "key", "missing: write \(scheme):///KEY?…") }
        if scheme == "vault" { return .vault(try VaultKeyURI(key: key, parameters: parameters, uri: text)) }
        return .aws(try AWSKeyURI(key: key, parameters: parameters, uri: text))
    }

    /// The URI without secrets: only the values of parameters known not to be secret are shown.
    public var redacted: String {
        switch self {
        case .aws(let key): return key.redacted
        case .vault(let key): return KeyURIFields.redact(key.uri)
        }
    }

    public var description: String { redacted }
}

/// A malformed key URI: the part that is wrong and why. The URI shown has its secrets removed.
public struct KeyURIError: Error, Equatable, Sendable, CustomStringConvertible {
    public let uri: String
    public let part: String
    public let reason: String

    init(_ uri: String, part: String, _ reason: String) {
        self.uri = KeyURIFields.redact(uri)
        self.part = part
        self.reason = reason
    }

    init(_ uri: String, _ problem: URIQuery.Problem) {
        self.init(uri, part: problem.part, problem.reason)
    }

    public var description: String { "key URI \(uri): \(part) \(reason)" }
}

public struct AWSKeyURI: Sendable, Equatable {
    public enum Auth: String, Sendable, Equatable {
        /// Credentials from the environment, AWS_PROFILE, ~/.aws/credentials and ~/.aws/config.
        case implicit
        /// Credentials in the URI itself.
        case specified
    }

    /// Key id, key ARN, alias name or alias ARN, as given.
    public var keyID: String
    public var region: String
    public var auth: Auth
    /// With AUTH=specified.
    public var credentials: AWSCredentials?
    /// AWS_ENDPOINT: another endpoint than https://kms.REGION.amazonaws.com (a test server, a VPC endpoint).
    public var endpoint: HTTPEndpoint?
    /// The URI as given, shown only through ``redacted``.
    let original: String

    static let known = ["REGION", "AUTH", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT"]

    init(key: String, parameters: [String: String], uri: String) throws(KeyURIError) {
        for name in parameters.keys.sorted() where !Self.known.contains(name) {
            let normal = KeyURIFields.normalizedName(name)
            let hint = Self.known.first { $0 == normal }.map { " (did you mean \($0)?)" } ?? ""
            throw KeyURIError(uri, part: "parameter \(URIQuery.displayName(name))", "is not known\(hint); known: \(Self.known.joined(separator: ", "))")
        }
        keyID = key
        original = uri
        guard let region = parameters["REGION"], !region.isEmpty else {
            throw KeyURIError(uri, part: "REGION", "is missing: add ?REGION=us-east-1 (the key's region)")
        }
        guard HTTPEndpoint.isAWSRegion(region) else {
            throw KeyURIError(uri, part: "REGION '\(region)'", "is not a region name such as us-east-1")
        }
        self.region = region
        if key.hasPrefix("arn:") {
            // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or …:alias/NAME
            let fields = key.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            guard fields.count == 6, fields[2] == "kms", !fields[3].isEmpty,
                  fields[5].hasPrefix("key/") || fields[5].hasPrefix("alias/") else {
                throw KeyURIError(uri, part: "key ARN '\(key)'", "is not arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME")
            }
            guard fields[3] == region else {
                throw KeyURIError(uri, part: "REGION=\(region)", "differs from the region in the key ARN (\(fields[3]))")
            }
        } else if key.contains("/") && !key.hasPrefix("alias/") {
            throw KeyURIError(uri, part: "key '\(key)'", "is not a key id, key ARN, alias/NAME or alias ARN")
        }
        do throws(URIQuery.Problem) {
            (auth, credentials) = try URIQuery.awsCredentials(parameters, source: "the key URI (AUTH=specified)")
            if let value = parameters["AWS_ENDPOINT"] { endpoint = try URIQuery.endpoint(value, part: "AWS_ENDPOINT") } else { endpoint = nil }
        } catch {
            throw KeyURIError(uri, error)
        }
    }

    /// A key named by typed parts (a KMS stanza's fields), never by a URI built from them: no
    /// field can add a parameter. Credentials come from the chain (AUTH=implicit).
    public init(keyARN: String, region: String, endpoint: HTTPEndpoint?) throws(KeyURIError) {
        let display = "aws-kms:///\(keyARN)?REGION=\(region)" + (endpoint.map { "&AWS_ENDPOINT=\($0)" } ?? "")
        guard HTTPEndpoint.isAWSRegion(region) else {
            throw KeyURIError(display, part: "REGION", "is not a region name such as us-east-1")
        }
        guard KeyURIFields.isKeyARN(keyARN, region: region) else {
            throw KeyURIError(display, part: "key ARN", "is not arn:PARTITION:kms:\(region):ACCOUNT:key/ID")
        }
        keyID = keyARN
        self.region = region
        auth = .implicit
        credentials = nil
        self.endpoint = endpoint
        original = display
    }

    /// The endpoint to call: AWS_ENDPOINT, or the region's public KMS endpoint over HTTPS.
    public var endpointAddress: HTTPEndpoint { endpoint ?? .awsKMS(region: region) }
    public var endpointURL: String { endpointAddress.description }

    /// The URI with every secret value removed.
    public var redacted: String { KeyURIFields.redact(original) }
}

public struct VaultKeyURI: Sendable, Equatable {
    public var key: String
    /// The server (ADDR).
    public var server: HTTPEndpoint
    public var address: String { server.description }
    public var mount: String
    public var namespace: String?
    public let uri: String

    static let known = ["ADDR", "MOUNT", "NAMESPACE"]

    init(key: String, parameters: [String: String], uri: String) throws(KeyURIError) {
        for name in parameters.keys.sorted() where !Self.known.contains(name) {
            let shown = URIQuery.displayName(name)
            if ["TOKEN", "VAULT_TOKEN", "X_VAULT_TOKEN"].contains(KeyURIFields.normalizedName(name)) {
                throw KeyURIError(uri, part: "parameter \(shown)", "is refused: a Vault token never goes in a URI; set VAULT_TOKEN or write it to ~/.vault-token")
            }
            throw KeyURIError(uri, part: "parameter \(shown)", "is not known; known: \(Self.known.joined(separator: ", "))")
        }
        guard !key.contains("/") else {
            throw KeyURIError(uri, part: "key '\(key)'", "must be a transit key name without '/' (the mount goes in MOUNT=)")
        }
        guard let address = parameters["ADDR"], !address.isEmpty else {
            throw KeyURIError(uri, part: "ADDR", "is missing: add ?ADDR=https://vault.example:8200")
        }
        let server: HTTPEndpoint
        do throws(URIQuery.Problem) { server = try URIQuery.endpoint(address, part: "ADDR") } catch { throw KeyURIError(uri, error) }
        try self.init(key: key, server: server, mount: parameters["MOUNT"] ?? "transit",
                      namespace: parameters["NAMESPACE"].flatMap { $0.isEmpty ? nil : $0 }, uri: uri)
    }

    /// A key named by typed parts (a Vault stanza's fields), never by a URI built from them.
    public init(key: String, server: HTTPEndpoint, mount: String, namespace: String?) throws(KeyURIError) {
        let display = "vault:///\(key)?ADDR=\(server)&MOUNT=\(mount)" + (namespace.map { "&NAMESPACE=\($0)" } ?? "")
        try self.init(key: key, server: server, mount: mount, namespace: namespace, uri: display)
    }

    private init(key: String, server: HTTPEndpoint, mount: String, namespace: String?, uri: String) throws(KeyURIError) {
        guard HTTPEndpoint.isPathSegment(key) else {
            throw KeyURIError(uri, part: "key '\(key)'", "must be a transit key name of letters, digits, '-', '.', '_' or '~'")
        }
        guard KeyURIFields.isPath(mount) else {
            throw KeyURIError(uri, part: "MOUNT=\(mount)", "must be a mount path such as transit or team/transit")
        }
        if let namespace, !KeyURIFields.isPath(namespace) {
            throw KeyURIError(uri, part: "NAMESPACE=\(namespace)", "must be a namespace path such as team or org/team")
        }
        self.key = key
        self.server = server
        self.mount = mount
        self.namespace = namespace
        self.uri = uri
    }
}

/// Checks on the fields of key URIs and KMS stanzas, and the redaction of URIs in messages.
public enum KeyURIFields {
    /// `SEGMENT[/SEGMENT…]` of unreserved characters (no `?`, `&`, `=`, `#`, `%`, spaces or
    /// control characters; no empty, `.` or `..` segment): a mount or a namespace.
    public static func isPath(_ text: String) -> Bool {
        text.utf8.count <= 1024 && text.split(separator: "/", omittingEmptySubsequences: false).allSatisfy(HTTPEndpoint.isPathSegment)
    }

    /// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`, as KMS returns it from Encrypt: letters,
    /// digits and `-` only in each part, `REGION` the given one.
    public static func isKeyARN(_ text: String, region: String) -> Bool {
        let fields = text.split(separator: ":", omittingEmptySubsequences: false)
        func word(_ s: Substring) -> Bool { !s.isEmpty && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") } }
        guard text.utf8.count <= 256, fields.count == 6, fields[0] == "arn", word(fields[1]), fields[2] == "kms",
              fields[3] == region, !fields[4].isEmpty, fields[4].allSatisfy({ $0.isASCII && $0.isNumber }),
              fields[5].hasPrefix("key/") else { return false }
        return word(fields[5].dropFirst(4))
    }

    /// Parameters whose values are shown in messages; every other value, whatever its name's
    /// spelling (`aws_secret_access_key`, `Aws_Session_Token`, `VAULT_TOKEN`, `token`, a name
    /// with a trailing space or percent-encoded), is replaced by REDACTED, and so is a parameter
    /// without `=`.
    static let allKnown = Set(AWSKeyURI.known + VaultKeyURI.known)
    static let shownParameters: Set<String> = ["REGION", "AUTH", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT", "ADDR", "MOUNT", "NAMESPACE"]

    /// A parameter name decoded, trimmed, upper-cased, with `-` as `_`: how a hint recognises
    /// `aws_secret_access_key`, `AWS_SECRET_ACCESS_KEY ` or `AWS%5FSESSION%5FTOKEN`.
    static func normalizedName(_ name: String) -> String {
        String(decoding: SigV4Signer.percentDecode(Array(name.utf8)), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines).uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The URI with every value that may be secret replaced by REDACTED.
    public static func redact(_ uri: String) -> String { URIQuery.redact(uri, shown: shownParameters) }
}
