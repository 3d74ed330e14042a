import Foundation

/// The parts of a URI in CockroachDB's style (`SCHEME://LOCATION?NAME=VALUE&…`) that key URIs
/// (``KMSKeyURI``) and s3:// repository URIs (CofferS3's `S3URI`) share: the query's parameters,
/// strict percent-decoding, AWS credentials in the query, endpoints, and the redaction of
/// whatever may be secret. A failure is a ``Problem`` (the part and why); each kind of URI wraps it
/// in its own error, which shows the URI redacted.
public enum URIQuery {
    public struct Problem: Error, Equatable, Sendable {
        public let part: String
        public let reason: String
        public init(part: String, _ reason: String) {
            self.part = part
            self.reason = reason
        }
    }

    /// The `NAME=VALUE` pairs of `query` (the text after `?`), values percent-decoded. A pair
    /// without `=` or with an empty name is refused, and shown only when it is one of `known` (it
    /// may be a secret pasted without its name); a name given twice is refused.
    public static func parameters(_ query: Substring, known: Set<String>) throws(Problem) -> [String: String] {
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: false) {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw Problem(part: "parameter '\(known.contains(String(pair)) ? String(pair) : "(not shown)")'", "expected NAME=VALUE")
            }
            let name = String(pair[..<eq])
            let value = try decode(pair[pair.index(after: eq)...], part: displayName(name))
            guard parameters[name] == nil else { throw Problem(part: displayName(name), "given twice") }
            parameters[name] = value
        }
        return parameters
    }

    /// `%XX` to bytes, which must be UTF-8; a `%` not followed by two hex digits is refused.
    public static func decode(_ text: Substring, part: String) throws(Problem) -> String {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, SigV4Signer.hexValue(bytes[i + 1]) != nil, SigV4Signer.hexValue(bytes[i + 2]) != nil else {
                    throw Problem(part: part, "has a '%' not followed by two hex digits")
                }
                i += 3
            } else {
                i += 1
            }
        }
        guard let string = String(validating: SigV4Signer.percentDecode(bytes), as: UTF8.self) else {
            throw Problem(part: part, "is not UTF-8")
        }
        return string
    }

    /// A parameter name as a message may show it: as written when it is a plain name (letters,
    /// digits, `_`, `-`, `.`, up to 64), else not at all (it may hold a secret meant as its value).
    public static func displayName(_ name: some StringProtocol) -> String {
        let plain = !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-.".unicodeScalars.contains($0)) }
        return plain ? String(name) : "(name not shown: it has other characters)"
    }

    /// The URI with the value of every parameter not in `shown` (whatever its spelling), every
    /// value with user information (`https://user:password@host`), every pair without `=` and any
    /// fragment replaced by REDACTED.
    public static func redact(_ uri: String, shown: Set<String>) -> String {
        let withoutFragment = uri.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let fragment = withoutFragment.count < uri.count ? "#REDACTED" : ""
        guard let q = withoutFragment.firstIndex(of: "?") else { return withoutFragment + fragment }
        let kept = withoutFragment[withoutFragment.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { pair -> String in
            guard let eq = pair.firstIndex(of: "=") else { return pair.isEmpty ? "" : "REDACTED" }
            let name = String(pair[..<eq])
            let value = pair[pair.index(after: eq)...]
            let userInfo = value.contains("@") || value.lowercased().contains("%40")
            return shown.contains(name) && !userInfo ? String(pair) : "\(displayName(name))=REDACTED"
        }
        return String(withoutFragment[..<q]) + "?" + kept.joined(separator: "&") + fragment
    }

    /// The endpoint a parameter names; a value with user information is not shown in the problem.
    public static func endpoint(_ value: String, part: String) throws(Problem) -> HTTPEndpoint {
        do {
            return try HTTPEndpoint(parsing: value)
        } catch {
            throw Problem(part: value.contains("@") ? part : "\(part)=\(value.prefix(200))", "\(error)")
        }
    }

    /// AUTH and the credential parameters (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN) of an AWS URI: without AUTH, credentials given mean `specified`;
    /// `implicit` refuses credentials in the URI, `specified` needs the key id and the secret. An
    /// empty session token is none. `source` says where the credentials came from, in messages.
    public static func awsCredentials(_ parameters: [String: String], source: String) throws(Problem) -> (AWSKeyURI.Auth, AWSCredentials?) {
        let id = parameters["AWS_ACCESS_KEY_ID"], secret = parameters["AWS_SECRET_ACCESS_KEY"]
        let auth: AWSKeyURI.Auth
        switch parameters["AUTH"] {
        case nil:
            auth = id != nil || secret != nil ? .specified : .implicit
        case let value?:
            guard let parsed = AWSKeyURI.Auth(rawValue: value) else {
                throw Problem(part: "AUTH=\(value.prefix(20))", "must be implicit or specified")
            }
            auth = parsed
        }
        switch auth {
        case .implicit:
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] where parameters[name] != nil {
                throw Problem(part: name, "is given with AUTH=implicit: drop it, or use AUTH=specified")
            }
            return (auth, nil)
        case .specified:
            guard let id, !id.isEmpty else {
                throw Problem(part: "AWS_ACCESS_KEY_ID", "is missing (AUTH=specified needs it and AWS_SECRET_ACCESS_KEY)")
            }
            guard let secret, !secret.isEmpty else {
                throw Problem(part: "AWS_SECRET_ACCESS_KEY", "is missing (AUTH=specified needs it and AWS_ACCESS_KEY_ID)")
            }
            return (auth, AWSCredentials(accessKeyID: id, secretAccessKey: secret,
                                         sessionToken: parameters["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }, source: source))
        }
    }
}
