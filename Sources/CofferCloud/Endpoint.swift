import Foundation

/// A key service's address as typed parts: `http`/`https`, a host, an optional port and an
/// optional base path. Request URLs are built from these parts with each path segment
/// percent-encoded, never by pasting text into a URL and parsing it again, so no field (a key
/// name, a mount, a namespace) can move a request to another host or add a query.
///
/// Two endpoints are the same when scheme, host (case-insensitive), effective port and path are.
public struct HTTPEndpoint: Sendable, Hashable, CustomStringConvertible {
    public let scheme: String
    /// Lower-cased DNS name, dotted IPv4, or a bracketed IPv6 literal.
    public let host: String
    /// As written; nil means the scheme's default.
    public let port: Int?
    /// Base path segments (a Vault behind a path prefix); usually empty.
    public let path: [String]

    /// Parses `http(s)://HOST[:PORT][/SEGMENT…][/]`; anything else (a query, a fragment, user
    /// information, a percent sign, a backslash, spaces or control characters) is refused.
    public init(parsing text: String) throws(EndpointError) {
        guard !text.isEmpty, text.utf8.count <= 2048 else { throw EndpointError("is empty or too long") }
        guard text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
            throw EndpointError("has spaces, control or non-ASCII characters")
        }
        for c in ["?", "#", "@", "%", "\\", "&", "="] where text.contains(c) {
            throw EndpointError("must not contain '\(c)' (no query, fragment, user information or escapes)")
        }
        guard let schemeEnd = text.range(of: "://") else { throw EndpointError("is not an http:// or https:// URL") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { throw EndpointError("is not an http:// or https:// URL") }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var hostPart = Substring(authority)
        var port: Int?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw EndpointError("has an unterminated IPv6 literal") }
            hostPart = authority[...close]
            let inner = authority[authority.index(after: authority.startIndex)..<close]
            guard !inner.isEmpty, inner.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw EndpointError("has a malformed IPv6 literal")
            }
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw EndpointError("has text after its IPv6 literal") }
                port = try Self.port(after.dropFirst())
            }
        } else if let colon = authority.firstIndex(of: ":") {
            hostPart = authority[..<colon]
            port = try Self.port(authority[authority.index(after: colon)...])
            guard !hostPart.isEmpty, hostPart.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }),
                  !hostPart.hasPrefix("."), !hostPart.hasPrefix("-") else {
                throw EndpointError("has a malformed host name")
            }
        } else {
            guard !hostPart.isEmpty, hostPart.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }),
                  !hostPart.hasPrefix("."), !hostPart.hasPrefix("-") else {
                throw EndpointError("has a malformed host name")
            }
        }
        var segments = rest[authorityEnd...].split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if !segments.isEmpty { segments.removeFirst() }            // before the first "/"
        if segments.last == "" { segments.removeLast() }           // one trailing "/"
        for segment in segments where !Self.isPathSegment(segment) {
            throw EndpointError("has a path segment '\(segment)' that is not letters, digits, '-', '.', '_' or '~'")
        }
        self.scheme = scheme
        self.host = hostPart.lowercased()
        self.port = port
        self.path = segments
    }

    public init(scheme: String, host: String, port: Int? = nil, path: [String] = []) {
        self.scheme = scheme
        self.host = host.lowercased()
        self.port = port
        self.path = path
    }

    static func port(_ text: Substring) throws(EndpointError) -> Int {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let value = Int(text), (1...65535).contains(value) else {
            throw EndpointError("has a port that is not 1–65535")
        }
        return value
    }

    /// An unreserved path segment (RFC 3986), not `.` or `..`.
    public static func isPathSegment(_ text: some StringProtocol) -> Bool {
        !text.isEmpty && text != "." && text != ".." && text.utf8.count <= 512
            && text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._~".unicodeScalars.contains($0)) }
    }

    public var effectivePort: Int { port ?? (scheme == "https" ? 443 : 80) }

    public static func == (a: HTTPEndpoint, b: HTTPEndpoint) -> Bool {
        a.scheme == b.scheme && a.host == b.host && a.effectivePort == b.effectivePort && a.path == b.path
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(scheme); hasher.combine(host); hasher.combine(effectivePort); hasher.combine(path)
    }

    /// The value of a Host header.
    public var hostHeader: String { port.map { "\(host):\($0)" } ?? host }

    /// `scheme://host[:port][/path]`, without a trailing slash.
    public var description: String {
        "\(scheme)://\(hostHeader)" + path.map { "/" + $0 }.joined()
    }

    /// The path of a request under this endpoint: the base path, then `segments`, each
    /// percent-encoded (a `/` inside a segment becomes `%2F`: it cannot add a level).
    public func requestPath(_ segments: [String]) -> String {
        let all = path + segments
        if all.isEmpty { return "/" }
        return all.map { "/" + SigV4Signer.percentEncode(Array($0.utf8), keepSlash: false) }.joined()
    }

    /// The full URL of a request.
    public func url(_ segments: [String]) -> String { "\(scheme)://\(hostHeader)\(requestPath(segments))" }

    /// The region's AWS KMS endpoint, over HTTPS (regions of China under amazonaws.com.cn).
    public static func awsKMS(region: String) -> HTTPEndpoint {
        HTTPEndpoint(scheme: "https", host: "kms.\(region).amazonaws.com" + (region.hasPrefix("cn-") ? ".cn" : ""))
    }

    /// An AWS region name such as `us-east-1`, `us-gov-west-1`, `cn-north-1`: lower-case letter
    /// words, then a number; anything else cannot go into a host name.
    public static func isAWSRegion(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count <= 32, parts.count >= 3, let last = parts.last,
              last.allSatisfy({ $0.isASCII && $0.isNumber }), !last.isEmpty else { return false }
        return parts.dropLast().allSatisfy { part in !part.isEmpty && part.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) } }
            && parts[0].allSatisfy { $0.isASCII && $0.isLowercase }
    }
}

public struct EndpointError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
