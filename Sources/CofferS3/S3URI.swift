import CofferCloud
import CofferFormat
import Foundation

/// A repository on S3 named by a URI in CockroachDB's style (the same style as `--kms aws:///…`):
///
/// ```
/// s3://BUCKET[/PREFIX]?AWS_REGION=R[&AUTH=implicit|specified][&AWS_ACCESS_KEY_ID=…&AWS_SECRET_ACCESS_KEY=…[&AWS_SESSION_TOKEN=…]]
///                      [&AWS_ENDPOINT=URL][&S3_STORAGE_CLASS=C][&S3_ADDRESSING=path|virtual]
/// ```
/// Credentials come from the chain (environment, AWS_PROFILE, ~/.aws) unless AUTH=specified puts
/// them in the URI. Without AWS_ENDPOINT the bucket is addressed virtual-hosted style on
/// `https://BUCKET.s3.REGION.amazonaws.com`; with it, path style (`ENDPOINT/BUCKET/KEY`, what
/// MinIO, Ceph RGW and moto expect), unless S3_ADDRESSING says otherwise.
public struct S3URI: Sendable, Equatable, CustomStringConvertible {
    public enum Addressing: String, Sendable, Equatable {
        /// `https://ENDPOINT/BUCKET/KEY`.
        case path
        /// `https://BUCKET.ENDPOINT/KEY`.
        case virtual
    }

    public var bucket: String
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    public var prefix: String
    public var region: String
    public var auth: AWSKeyURI.Auth
    /// With AUTH=specified only.
    public var credentials: AWSCredentials?
    public var endpoint: HTTPEndpoint?
    public var storageClass: String?
    public var addressing: Addressing
    let original: String

    static let known = ["AWS_REGION", "AUTH", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_ENDPOINT", "S3_STORAGE_CLASS", "S3_ADDRESSING"]
    /// Parameters whose values may appear in messages; every other value is replaced by REDACTED.
    static let shown: Set<String> = ["AWS_REGION", "AUTH", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT", "S3_STORAGE_CLASS", "S3_ADDRESSING"]

    public static func isS3URI(_ text: String) -> Bool { text.hasPrefix("s3://") }

    public init(parsing text: String) throws(S3URIError) {
        original = text
        guard text.hasPrefix("s3://") else { throw S3URIError(text, part: "scheme", "expected s3://BUCKET/PREFIX?AWS_REGION=…") }
        let rest = text.dropFirst("s3://".count)
        if rest.contains("#") { throw S3URIError(text, part: "fragment", "is not allowed") }
        let q = rest.firstIndex(of: "?")
        let location = q.map { rest[..<$0] } ?? rest
        var parameters: [String: String] = [:]
        if let q {
            do throws(URIQuery.Problem) { parameters = try URIQuery.parameters(rest[rest.index(after: q)...], known: Set(Self.known)) } catch {
                throw S3URIError(text, error)
            }
        }
        for name in parameters.keys.sorted() where !Self.known.contains(name) {
            let hint = name == "REGION" ? " (an s3:// URI spells it AWS_REGION)" : ""
            throw S3URIError(text, part: "parameter \(URIQuery.displayName(name))", "is not known\(hint); known: \(Self.known.joined(separator: ", "))")
        }
        // BUCKET[/PREFIX]
        let slash = location.firstIndex(of: "/")
        bucket = String(slash.map { location[..<$0] } ?? location)
        guard Self.isBucketName(bucket) else {
            throw S3URIError(text, part: "bucket '\(bucket.prefix(80))'", "is not a bucket name (3–63 characters: a-z, 0-9, '-', '.', starting and ending with a letter or digit)")
        }
        var prefixText = slash.map { String(location[location.index(after: $0)...]) } ?? ""
        while prefixText.hasSuffix("/") { prefixText.removeLast() }
        if !prefixText.isEmpty {
            let decoded: String
            do throws(URIQuery.Problem) { decoded = try URIQuery.decode(prefixText[...], part: "prefix") } catch { throw S3URIError(text, error) }
            guard decoded.utf8.count <= 512,
                  decoded.split(separator: "/", omittingEmptySubsequences: false).allSatisfy(HTTPEndpoint.isPathSegment) else {
                throw S3URIError(text, part: "prefix", "must be segments of letters, digits, '-', '.', '_' or '~' separated by single '/' (no '.' or '..' segment)")
            }
            prefixText = decoded
        }
        prefix = prefixText
        guard let region = parameters["AWS_REGION"], !region.isEmpty else {
            throw S3URIError(text, part: "AWS_REGION", "is missing: add ?AWS_REGION=us-east-1 (the bucket's region)")
        }
        guard HTTPEndpoint.isAWSRegion(region) else {
            throw S3URIError(text, part: "AWS_REGION '\(region.prefix(40))'", "is not a region name such as us-east-1")
        }
        self.region = region
        do throws(URIQuery.Problem) {
            (auth, credentials) = try URIQuery.awsCredentials(parameters, source: "the repository URI (AUTH=specified)")
            if let value = parameters["AWS_ENDPOINT"] { endpoint = try URIQuery.endpoint(value, part: "AWS_ENDPOINT") } else { endpoint = nil }
        } catch {
            throw S3URIError(text, error)
        }
        if let value = parameters["S3_STORAGE_CLASS"] {
            guard !value.isEmpty, value.utf8.count <= 64, value.allSatisfy({ $0.isASCII && ($0.isUppercase || $0.isNumber || $0 == "_") }) else {
                throw S3URIError(text, part: "S3_STORAGE_CLASS", "must be a storage class such as STANDARD, STANDARD_IA or INTELLIGENT_TIERING")
            }
            storageClass = value
        } else {
            storageClass = nil
        }
        switch parameters["S3_ADDRESSING"] {
        case nil:
            // Dotted bucket names do not match the wildcard certificate of virtual-hosted HTTPS.
            addressing = endpoint != nil || bucket.contains(".") ? .path : .virtual
        case let value?:
            guard let parsed = Addressing(rawValue: value) else {
                throw S3URIError(text, part: "S3_ADDRESSING=\(value.prefix(20))", "must be path or virtual")
            }
            if parsed == .virtual && endpoint == nil && bucket.contains(".") {
                throw S3URIError(text, part: "S3_ADDRESSING=virtual", "cannot address a bucket with '.' in its name over HTTPS: use path")
            }
            addressing = parsed
        }
    }

    /// The service address: AWS_ENDPOINT, or the region's public S3 endpoint over HTTPS.
    public var serviceEndpoint: HTTPEndpoint {
        endpoint ?? HTTPEndpoint(scheme: "https", host: "s3.\(region).amazonaws.com" + (region.hasPrefix("cn-") ? ".cn" : ""))
    }

    /// The key of an object: PREFIX/KEY (or KEY at the bucket's root).
    func objectKey(_ key: String) -> String { prefix.isEmpty ? key : prefix + "/" + key }

    /// The URI with every value that may be secret replaced by REDACTED.
    public var redacted: String { Self.redact(original) }
    public var description: String { redacted }

    /// Whether `name` is an S3 bucket name (DNS-compatible rules: 3–63 of a-z 0-9 - ., starting and
    /// ending with a letter or digit, no `..`, not an IPv4 address).
    public static func isBucketName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        func alnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        guard bytes.allSatisfy({ alnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }) else { return false }
        if name.contains("..") || name.contains(".-") || name.contains("-.") { return false }
        let parts = name.split(separator: ".")
        if parts.count == 4 && parts.allSatisfy({ $0.allSatisfy(\.isNumber) }) { return false }
        return true
    }

    /// The URI with every value that may be secret (any parameter not known to be harmless,
    /// whatever its spelling) replaced by REDACTED.
    public static func redact(_ uri: String) -> String { URIQuery.redact(uri, shown: shown) }
}

/// A malformed s3:// URI: the part that is wrong and why; the URI shown has its secrets removed.
public struct S3URIError: CategorizedError, Equatable {
    public let uri: String
    public let part: String
    public let reason: String

    init(_ uri: String, part: String, _ reason: String) {
        self.uri = S3URI.redact(uri)
        self.part = part
        self.reason = reason
    }

    init(_ uri: String, _ problem: URIQuery.Problem) {
        self.init(uri, part: problem.part, problem.reason)
    }

    public var category: ErrorCategory { .usage }
    public var description: String { "repository URI \(uri): \(part) \(reason)" }
}
