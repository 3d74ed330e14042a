import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// AWS credentials: an access key, its secret, and a session token for temporary credentials.
public struct AWSCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// Where they came from ("AWS_ACCESS_KEY_ID", "profile prod in ~/.aws/credentials", "the key URI"),
    /// for messages; never the secret itself.
    public var source: String

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, source: String = "") {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.source = source
    }
}

/// AWS Signature Version 4 (the "Signing AWS API requests" algorithm), for KMS now and S3 later.
///
/// The signer works on a request described by its parts (method, decoded path, decoded query
/// pairs, headers, body) and returns what to add to it: headers (`Authorization`, `X-Amz-Date`, …)
/// in header mode, query parameters in query-string ("presigned") mode. Every intermediate text
/// is returned too, so tests can compare the canonical request and string to sign byte for byte.
public struct SigV4Signer: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service: String

    /// How the payload is represented in the canonical request.
    public enum Payload: Sendable, Equatable {
        /// Hex SHA-256 of the body.
        case signed
        /// The literal `UNSIGNED-PAYLOAD` (S3 presigned URLs and streaming uploads).
        case unsigned
    }

    public struct Options: Sendable {
        /// Remove `.` and `..` segments and repeated slashes before encoding (every service but S3).
        public var normalizePath = true
        /// Encode the path a second time (every service but S3). The path given is the decoded path,
        /// so "twice" means: the path as sent (encoded once) is encoded again in the canonical request.
        public var doubleEncodePath = false
        public var payload: Payload = .signed
        /// Header mode: add and sign `x-amz-content-sha256` (S3 requires it; the generic suite's
        /// signed-body cases expect it).
        public var addContentSHA256Header = false
        /// Add the session token after signing instead of signing it (a few services want that).
        public var omitSessionTokenFromSignature = false

        public init(normalizePath: Bool = true, doubleEncodePath: Bool = false, payload: Payload = .signed,
                    addContentSHA256Header: Bool = false, omitSessionTokenFromSignature: Bool = false) {
            self.normalizePath = normalizePath
            self.doubleEncodePath = doubleEncodePath
            self.payload = payload
            self.addContentSHA256Header = addContentSHA256Header
            self.omitSessionTokenFromSignature = omitSessionTokenFromSignature
        }

        /// S3's rules: the path encoded once and never normalised, `x-amz-content-sha256` signed.
        public static var s3: Options { Options(normalizePath: false, addContentSHA256Header: true) }
    }

    /// A request to sign. `path` and `query` are decoded; the signer encodes them.
    public struct Request: Sendable {
        public var method: String
        public var path: [UInt8]
        public var query: [(name: [UInt8], value: [UInt8])]
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]

        public init(method: String, path: String, query: [(name: String, value: String)] = [],
                    headers: [(name: String, value: String)], body: [UInt8] = []) {
            self.init(method: method, pathBytes: Array(path.utf8),
                      query: query.map { (Array($0.name.utf8), Array($0.value.utf8)) }, headers: headers, body: body)
        }

        public init(method: String, pathBytes: [UInt8], query: [(name: [UInt8], value: [UInt8])],
                    headers: [(name: String, value: String)], body: [UInt8]) {
            self.method = method
            self.path = pathBytes
            self.query = query
            self.headers = headers
            self.body = body
        }
    }

    /// The outcome of signing: every stage, and what the caller adds to the request.
    public struct Signature: Sendable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        /// Header mode: headers to add (replacing any of the same name). Query mode: none.
        public var headersToAdd: [(name: String, value: String)]
        /// Query mode: the parameters to add, `X-Amz-Signature` last. Header mode: none.
        public var queryToAdd: [(name: String, value: String)]
        public var authorization: String?
    }

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    static let algorithm = "AWS4-HMAC-SHA256"
    static let emptyPayloadHash = hexSHA256([])

    // MARK: Signing

    /// Signs with the `Authorization` header.
    public func signHeaders(_ request: Request, date: Date, options: Options = Options()) -> Signature {
        let (amzDate, day) = Self.timestamps(date)
        let payloadHash = options.payload == .unsigned ? "UNSIGNED-PAYLOAD" : Self.hexSHA256(request.body)
        var added: [(name: String, value: String)] = [("X-Amz-Date", amzDate)]
        if let token = credentials.sessionToken, !options.omitSessionTokenFromSignature {
            added.append(("X-Amz-Security-Token", token))
        }
        if options.addContentSHA256Header { added.append(("x-amz-content-sha256", payloadHash)) }
        // The signer's own headers replace any the caller set under the same name.
        let addedNames = Set(added.map { $0.name.lowercased() })
        let headers = request.headers.filter { !addedNames.contains($0.name.lowercased()) } + added
        let (canonicalHeaders, signedHeaders) = Self.canonicalHeaders(headers)
        let canonical = [
            request.method,
            canonicalURI(request.path, options: options),
            Self.canonicalQuery(request.query.map { ($0.name, $0.value) }),
            canonicalHeaders,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [Self.algorithm, amzDate, scope, Self.hexSHA256(Array(canonical.utf8))].joined(separator: "\n")
        let signature = sign(stringToSign, day: day)
        let authorization = "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        var toAdd = added
        if let token = credentials.sessionToken, options.omitSessionTokenFromSignature {
            toAdd.append(("X-Amz-Security-Token", token))
        }
        toAdd.append(("Authorization", authorization))
        return Signature(canonicalRequest: canonical, stringToSign: stringToSign, signature: signature,
                         headersToAdd: toAdd, queryToAdd: [], authorization: authorization)
    }

    /// Signs in the query string (a presigned URL valid for `expires` seconds).
    public func presign(_ request: Request, date: Date, expires: Int, options: Options = Options()) -> Signature {
        let (amzDate, day) = Self.timestamps(date)
        let payloadHash = options.payload == .unsigned ? "UNSIGNED-PAYLOAD" : Self.hexSHA256(request.body)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let (canonicalHeaders, signedHeaders) = Self.canonicalHeaders(request.headers)
        var added: [(name: String, value: String)] = [
            ("X-Amz-Algorithm", Self.algorithm),
            ("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope)"),
            ("X-Amz-Date", amzDate),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", signedHeaders),
        ]
        if let token = credentials.sessionToken, !options.omitSessionTokenFromSignature {
            added.append(("X-Amz-Security-Token", token))
        }
        let query = request.query.map { ($0.name, $0.value) } + added.map { (Array($0.name.utf8), Array($0.value.utf8)) }
        let canonical = [
            request.method,
            canonicalURI(request.path, options: options),
            Self.canonicalQuery(query),
            canonicalHeaders,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let stringToSign = [Self.algorithm, amzDate, scope, Self.hexSHA256(Array(canonical.utf8))].joined(separator: "\n")
        let signature = sign(stringToSign, day: day)
        if let token = credentials.sessionToken, options.omitSessionTokenFromSignature {
            added.append(("X-Amz-Security-Token", token))
        }
        added.append(("X-Amz-Signature", signature))
        return Signature(canonicalRequest: canonical, stringToSign: stringToSign, signature: signature,
                         headersToAdd: [], queryToAdd: added, authorization: nil)
    }

    /// kSigning = HMAC chain "AWS4"+secret → day → region → service → "aws4_request".
    public func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    func sign(_ stringToSign: String, day: String) -> String {
        Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: signingKey(day: day))))
    }

    // MARK: Canonical parts

    func canonicalURI(_ path: [UInt8], options: Options) -> String {
        var bytes = path.isEmpty ? Array("/".utf8) : path
        if options.normalizePath { bytes = Self.normalize(bytes) }
        let once = Self.percentEncode(bytes, keepSlash: true)
        return options.doubleEncodePath ? Self.percentEncode(Array(once.utf8), keepSlash: true) : once
    }

    /// Drops `.` segments and empty segments (repeated slashes), resolves `..`; keeps a trailing slash.
    static func normalize(_ path: [UInt8]) -> [UInt8] {
        let segments = path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var kept: [ArraySlice<UInt8>] = []
        for segment in segments {
            if segment.isEmpty || segment.elementsEqual(".".utf8) { continue }
            if segment.elementsEqual("..".utf8) { _ = kept.popLast(); continue }
            kept.append(segment)
        }
        var out: [UInt8] = [UInt8(ascii: "/")]
        out += kept.map(Array.init).joined(separator: [UInt8(ascii: "/")])
        let last = segments.last ?? []
        let endsInDirectory = last.isEmpty || last.elementsEqual(".".utf8) || last.elementsEqual("..".utf8)
        if endsInDirectory && !kept.isEmpty { out.append(UInt8(ascii: "/")) }
        return out
    }

    /// `k=v` pairs, each encoded, sorted by encoded name then value, joined with `&`.
    static func canonicalQuery(_ pairs: [([UInt8], [UInt8])]) -> String {
        pairs.map { (percentEncode($0.0, keepSlash: false), percentEncode($0.1, keepSlash: false)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Lower-cased names, values trimmed with inner whitespace runs collapsed, repeated names
    /// joined with `,` in their order, sorted by name; and the `;`-joined list of names.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> (String, String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let collapsed = value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
                .joined(separator: " ")
            merged[name.lowercased(), default: []].append(collapsed)
        }
        let names = merged.keys.sorted()
        let text = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        return (text, names.joined(separator: ";"))
    }

    static func isUnreserved(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
            || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E
    }

    /// RFC 3986 encoding as SigV4 wants it: every byte but `A-Z a-z 0-9 - . _ ~` (and `/` when
    /// `keepSlash`) becomes `%XX` with upper-case hex.
    public static func percentEncode(_ bytes: [UInt8], keepSlash: Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for b in bytes {
            if isUnreserved(b) || (keepSlash && b == UInt8(ascii: "/")) {
                out.append(b)
            } else {
                out += [UInt8(ascii: "%"), digits[Int(b >> 4)], digits[Int(b & 0x0F)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `%XX` sequences to bytes; anything else (including `+`) is kept as it is.
    public static func percentDecode<S: Collection>(_ text: S) -> [UInt8] where S.Element == UInt8 {
        let bytes = Array(text)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) {
                out.append(high << 4 | low)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// Splits a raw query string on `&` and the first `=`, decoding names and values.
    public static func parseQuery(_ query: some StringProtocol) -> [(name: [UInt8], value: [UInt8])] {
        guard !query.isEmpty else { return [] }
        return query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true).map { part in
            if let eq = part.firstIndex(of: UInt8(ascii: "=")) {
                return (percentDecode(part[part.startIndex..<eq]), percentDecode(part[part.index(after: eq)...]))
            }
            return (percentDecode(part), [])
        }
    }

    // MARK: Helpers

    static func hexSHA256(_ bytes: [UInt8]) -> String { hex(Array(SHA256.hash(data: bytes))) }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0x0F)]] }
        return String(decoding: out, as: UTF8.self)
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` and `YYYYMMDD`, in UTC.
    public static func timestamps(_ date: Date) -> (amzDate: String, day: String) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let day = String(format: "%04d%02d%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday))
        return ("\(day)T" + String(format: "%02d%02d%02dZ", Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec)), day)
    }
}
