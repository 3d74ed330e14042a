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
        let key: String
        var parameters: [String: String] = [:]
        if let q = pathAndQuery.firstIndex(of: "?") {
            key = String(decoding: try percentDecodeStrict(pathAndQuery[..<q], uri: text, part: "key"), as: UTF8.self)
            for pair in pathAndQuery[pathAndQuery.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false) {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                    throw KeyURIError(text, part: "parameter '\(pair)'", "expected NAME=VALUE")
                }
                let name = String(pair[..<eq])
                let value = String(decoding: try percentDecodeStrict(pair[pair.index(after: eq)...], uri: text, part: name), as: UTF8.self)
                guard parameters[name] == nil else { throw KeyURIError(text, part: name, "given twice") }
                parameters[name] = value
            }
        } else {
            key = String(decoding: try percentDecodeStrict(pathAndQuery[...], uri: text, part: "key"), as: UTF8.self)
        }
        guard !key.isEmpty else { throw KeyURIError(text, part: "key", "missing: write \(scheme):///KEY?…") }
        if scheme == "vault" { return .vault(try VaultKeyURI(key: key, parameters: parameters, uri: text)) }
        return .aws(try AWSKeyURI(key: key, parameters: parameters, uri: text))
    }

    /// The URI without secrets (AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN dropped).
    public var redacted: String {
        switch self {
        case .aws(let key): return key.redacted
        case .vault(let key): return key.uri
        }
    }

    public var description: String { redacted }

    /// `%XX` to bytes; a `%` not followed by two hex digits is refused.
    static func percentDecodeStrict(_ text: Substring, uri: String, part: String) throws(KeyURIError) -> [UInt8] {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, SigV4Signer.hexValue(bytes[i + 1]) != nil, SigV4Signer.hexValue(bytes[i + 2]) != nil else {
                    throw KeyURIError(uri, part: part, "has a '%' not followed by two hex digits")
                }
                i += 3
            } else {
                i += 1
            }
        }
        return SigV4Signer.percentDecode(bytes)
    }
}

/// A malformed key URI: the part that is wrong and why. The URI shown has its secrets removed.
public struct KeyURIError: Error, Equatable, Sendable, CustomStringConvertible {
    public let uri: String
    public let part: String
    public let reason: String

    init(_ uri: String, part: String, _ reason: String) {
        self.uri = AWSKeyURI.redact(uri)
        self.part = part
        self.reason = reason
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
    public var endpoint: String?
    let original: String

    static let secretParameters = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    static let known = ["REGION", "AUTH", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT"]

    init(key: String, parameters: [String: String], uri: String) throws(KeyURIError) {
        for name in parameters.keys.sorted() where !Self.known.contains(name) {
            let hint = Self.known.first { $0.lowercased() == name.lowercased() }.map { " (did you mean \($0)?)" } ?? ""
            throw KeyURIError(uri, part: "parameter \(name)", "is not known\(hint); known: \(Self.known.joined(separator: ", "))")
        }
        keyID = key
        original = uri
        guard let region = parameters["REGION"], !region.isEmpty else {
            throw KeyURIError(uri, part: "REGION", "is missing: add ?REGION=us-east-1 (the key's region)")
        }
        guard region.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" }) else {
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
        let keyIDParameter = parameters["AWS_ACCESS_KEY_ID"]
        let secret = parameters["AWS_SECRET_ACCESS_KEY"]
        switch parameters["AUTH"] {
        case nil:
            auth = keyIDParameter != nil || secret != nil ? .specified : .implicit
        case let value?:
            guard let parsed = Auth(rawValue: value) else {
                throw KeyURIError(uri, part: "AUTH=\(value)", "must be implicit or specified")
            }
            auth = parsed
        }
        switch auth {
        case .implicit:
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] where parameters[name] != nil {
                throw KeyURIError(uri, part: name, "is given with AUTH=implicit: drop it, or use AUTH=specified")
            }
            credentials = nil
        case .specified:
            guard let keyIDParameter, !keyIDParameter.isEmpty else {
                throw KeyURIError(uri, part: "AWS_ACCESS_KEY_ID", "is missing (AUTH=specified needs it and AWS_SECRET_ACCESS_KEY)")
            }
            guard let secret, !secret.isEmpty else {
                throw KeyURIError(uri, part: "AWS_SECRET_ACCESS_KEY", "is missing (AUTH=specified needs it and AWS_ACCESS_KEY_ID)")
            }
            credentials = AWSCredentials(accessKeyID: keyIDParameter, secretAccessKey: secret,
                                         sessionToken: parameters["AWS_SESSION_TOKEN"], source: "the key URI (AUTH=specified)")
        }
        if let endpoint = parameters["AWS_ENDPOINT"] {
            try Self.checkEndpoint(endpoint, uri: uri, part: "AWS_ENDPOINT")
            self.endpoint = endpoint
        } else {
            self.endpoint = nil
        }
    }

    static func checkEndpoint(_ value: String, uri: String, part: String) throws(KeyURIError) {
        guard let url = URL(string: value), let scheme = url.scheme, ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw KeyURIError(uri, part: "\(part)=\(value)", "is not an http:// or https:// URL")
        }
        guard url.query == nil, url.user == nil, url.password == nil else {
            throw KeyURIError(uri, part: "\(part)=\(value)", "must not carry a query or user credentials")
        }
    }

    /// The endpoint to call: AWS_ENDPOINT, or the region's public KMS endpoint.
    public var endpointURL: String { endpoint ?? "https://kms.\(region).amazonaws.com" }

    /// The URI with AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN removed.
    public var redacted: String { Self.redact(original) }

    static func redact(_ uri: String) -> String {
        guard let q = uri.firstIndex(of: "?") else { return uri }
        let kept = uri[uri.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { pair -> String in
            let name = pair.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            return secretParameters.contains(name) ? "\(name)=REDACTED" : String(pair)
        }
        return String(uri[..<q]) + "?" + kept.joined(separator: "&")
    }
}

public struct VaultKeyURI: Sendable, Equatable {
    public var key: String
    public var address: String
    public var mount: String
    public var namespace: String?
    public let uri: String

    static let known = ["ADDR", "MOUNT", "NAMESPACE"]

    init(key: String, parameters: [String: String], uri: String) throws(KeyURIError) {
        for name in parameters.keys.sorted() where !Self.known.contains(name) {
            if ["TOKEN", "VAULT_TOKEN", "X-VAULT-TOKEN"].contains(name.uppercased()) {
                throw KeyURIError(uri, part: "parameter \(name)", "is refused: a Vault token never goes in a URI; set VAULT_TOKEN or write it to ~/.vault-token")
            }
            throw KeyURIError(uri, part: "parameter \(name)", "is not known; known: \(Self.known.joined(separator: ", "))")
        }
        guard !key.contains("/") else {
            throw KeyURIError(uri, part: "key '\(key)'", "must be a transit key name without '/' (the mount goes in MOUNT=)")
        }
        guard let address = parameters["ADDR"], !address.isEmpty else {
            throw KeyURIError(uri, part: "ADDR", "is missing: add ?ADDR=https://vault.example:8200")
        }
        try AWSKeyURI.checkEndpoint(address, uri: uri, part: "ADDR")
        let mount = parameters["MOUNT"] ?? "transit"
        guard !mount.isEmpty, !mount.hasPrefix("/"), !mount.hasSuffix("/"), !mount.contains("..") else {
            throw KeyURIError(uri, part: "MOUNT=\(mount)", "must be a mount path such as transit or team/transit")
        }
        self.key = key
        self.address = address.hasSuffix("/") ? String(address.dropLast()) : address
        self.mount = mount
        self.namespace = parameters["NAMESPACE"].flatMap { $0.isEmpty ? nil : $0 }
        self.uri = uri
    }
}
