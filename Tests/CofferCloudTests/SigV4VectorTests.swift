@testable import CofferCloud
import Foundation
import Testing

/// AWS's SigV4 test suite (../shared/vectors/sigv4, or COFFER_SIGV4_VECTORS): every case folder, in
/// header and query-string mode, compared stage by stage (canonical request, string to sign,
/// signature, and the signature carried by the example signed request).
enum SigV4Suite {
    static var directory: String {
        if let path = ProcessInfo.processInfo.environment["COFFER_SIGV4_VECTORS"] { return path }
        // Tests/CofferCloudTests/ → the repository → its parent, where shared/ sits beside it.
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/vectors/sigv4").path
    }

    /// Every case folder: a directory holding request.txt. Files at the top (README, LICENSE,
    /// NOTICE, s3-examples.md) are not cases; s3-examples.md has its own test below.
    static func caseNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: "\(directory)/\($0)/request.txt") }.sorted()
    }

    struct Context: Decodable {
        struct Credentials: Decodable {
            let access_key_id: String
            let secret_access_key: String
            let token: String?
        }
        let credentials: Credentials
        let expiration_in_seconds: Int
        let normalize: Bool
        let region: String
        let service: String
        let sign_body: Bool
        let timestamp: String
        let omit_session_token: Bool?
    }

    /// request.txt: the request line, `Name:value` headers (a line starting with whitespace
    /// continues the previous value), an empty line, the body.
    static func parseRequest(_ bytes: [UInt8]) throws -> SigV4Signer.Request {
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let requestLine = Array(lines[0])
        // METHOD <target> HTTP/1.1: the target may hold spaces, so cut at the first and last space.
        guard let firstSpace = requestLine.firstIndex(of: 0x20), let lastSpace = requestLine.lastIndex(of: 0x20),
              firstSpace < lastSpace else { throw VectorError("bad request line") }
        let method = String(decoding: requestLine[..<firstSpace], as: UTF8.self)
        let target = Array(requestLine[(firstSpace + 1)..<lastSpace])
        var path = target
        var query: [(name: [UInt8], value: [UInt8])] = []
        if let q = target.firstIndex(of: UInt8(ascii: "?")) {
            path = Array(target[..<q])
            query = SigV4Signer.parseQuery(String(decoding: target[(q + 1)...], as: UTF8.self))
        }
        var headers: [(name: String, value: String)] = []
        var index = 1
        while index < lines.count, !lines[index].isEmpty {
            let line = String(decoding: lines[index], as: UTF8.self)
            if line.first == " " || line.first == "\t" {
                headers[headers.count - 1].value += "\n" + line
            } else {
                guard let colon = line.firstIndex(of: ":") else { throw VectorError("bad header line \(line)") }
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
            index += 1
        }
        let body = index + 1 < lines.count ? Array(lines[(index + 1)...].joined(separator: [UInt8(ascii: "\n")])) : []
        return SigV4Signer.Request(method: method, pathBytes: path, query: query, headers: headers, body: body)
    }

    static func read(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }
}

struct VectorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("SigV4 test suite")
struct SigV4VectorTests {
    @Test("the vector directory is present and holds the 38 cases")
    func casesPresent() {
        let names = SigV4Suite.caseNames()
        print("SigV4 vectors: \(names.count) case folders in \(SigV4Suite.directory)")
        #expect(names.count == 38, "expected 38 case folders in \(SigV4Suite.directory); a missing directory is a failure, not a skip")
    }

    @Test("every case, header and query mode", arguments: SigV4Suite.caseNames())
    func vector(name: String) throws {
        let dir = "\(SigV4Suite.directory)/\(name)"
        let context = try JSONDecoder().decode(SigV4Suite.Context.self,
                                               from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/context.json")))
        let request = try SigV4Suite.parseRequest(Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/request.txt"))))
        let credentials = AWSCredentials(accessKeyID: context.credentials.access_key_id,
                                         secretAccessKey: context.credentials.secret_access_key,
                                         sessionToken: context.credentials.token)
        let signer = SigV4Signer(credentials: credentials, region: context.region, service: context.service)
        let date = try #require(ISO8601DateFormatter().date(from: context.timestamp))
        let options = SigV4Signer.Options(normalizePath: context.normalize, payload: .signed,
                                          addContentSHA256Header: context.sign_body,
                                          omitSessionTokenFromSignature: context.omit_session_token ?? false)
        var compared = 0
        for mode in ["header", "query"] {
            let result = mode == "header"
                ? signer.signHeaders(request, date: date, options: options)
                : signer.presign(request, date: date, expires: context.expiration_in_seconds, options: options)
            // Stages in order: the first mismatch is the useful diagnostic.
            let canonical = try SigV4Suite.read("\(dir)/\(mode)-canonical-request.txt")
            try #require(result.canonicalRequest == canonical, "\(name) \(mode): canonical request differs")
            let stringToSign = try SigV4Suite.read("\(dir)/\(mode)-string-to-sign.txt")
            try #require(result.stringToSign == stringToSign, "\(name) \(mode): string to sign differs")
            let signature = try SigV4Suite.read("\(dir)/\(mode)-signature.txt")
            #expect(result.signature == signature, "\(name) \(mode): signature differs")
            let signedRequest = try SigV4Suite.read("\(dir)/\(mode)-signed-request.txt")
            let carried = mode == "header" ? "Signature=\(signature)" : "X-Amz-Signature=\(signature)"
            #expect(signedRequest.contains(carried), "\(name) \(mode): the example signed request carries another signature")
            if mode == "header" {
                #expect(result.authorization?.hasSuffix("Signature=\(signature)") == true)
            } else {
                #expect(result.queryToAdd.last?.name == "X-Amz-Signature" && result.queryToAdd.last?.value == signature)
            }
            compared += 1
        }
        #expect(compared == 2)
    }

    @Test("a changed byte in the secret changes the signature")
    func wrongSecret() throws {
        let request = SigV4Signer.Request(method: "GET", path: "/", headers: [("Host", "example.amazonaws.com")])
        let date = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z
        let good = SigV4Signer(credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE",
                                                           secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                               region: "us-east-1", service: "service")
        var bad = good
        bad.credentials.secretAccessKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ"
        #expect(good.signHeaders(request, date: date).signature
            == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(bad.signHeaders(request, date: date).signature != good.signHeaders(request, date: date).signature)
    }
}

/// The S3 worked examples of s3-examples.md: path encoded once, never normalised,
/// `x-amz-content-sha256` signed, `UNSIGNED-PAYLOAD` in the presigned URL.
@Suite("SigV4 S3 examples")
struct SigV4S3ExampleTests {
    static let signer = SigV4Signer(
        credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "s3")
    static let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
    static let host = ("Host", "examplebucket.s3.amazonaws.com")

    @Test("the examples file is present")
    func present() {
        #expect(FileManager.default.fileExists(atPath: "\(SigV4Suite.directory)/s3-examples.md"))
    }

    @Test("the signing key")
    func signingKey() {
        let key = Self.signer.signingKey(day: "20130524").withUnsafeBytes { Array($0) }
        #expect(SigV4Signer.hex(key) == "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378")
    }

    func check(_ request: SigV4Signer.Request, canonicalHash: String, signature: String) {
        let result = Self.signer.signHeaders(request, date: Self.date, options: .s3)
        #expect(SigV4Signer.hexSHA256(Array(result.canonicalRequest.utf8)) == canonicalHash, "\(result.canonicalRequest)")
        #expect(result.signature == signature)
    }

    @Test("1. GET Object with Range")
    func getObject() {
        check(.init(method: "GET", path: "/test.txt", headers: [Self.host, ("Range", "bytes=0-9")]),
              canonicalHash: "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
              signature: "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test("2. PUT Object, '$' encoded once")
    func putObject() {
        check(.init(method: "PUT", path: "/test$file.text",
                    headers: [Self.host, ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                    body: Array("Welcome to Amazon S3.".utf8)),
              canonicalHash: "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
              signature: "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test("3. GET Bucket lifecycle: a sub-resource without a value")
    func lifecycle() {
        check(.init(method: "GET", path: "/", query: [("lifecycle", "")], headers: [Self.host]),
              canonicalHash: "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
              signature: "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test("4. List Objects")
    func listObjects() {
        check(.init(method: "GET", path: "/", query: [("max-keys", "2"), ("prefix", "J")], headers: [Self.host]),
              canonicalHash: "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
              signature: "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test("5. presigned GET, UNSIGNED-PAYLOAD, 24 hours")
    func presigned() {
        var options = SigV4Signer.Options.s3
        options.payload = .unsigned
        let result = Self.signer.presign(.init(method: "GET", path: "/test.txt", headers: [Self.host]),
                                         date: Self.date, expires: 86400, options: options)
        #expect(SigV4Signer.hexSHA256(Array(result.canonicalRequest.utf8))
            == "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04")
        #expect(result.signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }
}
