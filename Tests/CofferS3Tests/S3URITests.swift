import CofferCloud
@testable import CofferS3
import Testing

@Suite("s3:// repository URIs")
struct S3URITests {
    @Test("a URI with an endpoint: path style, prefix kept, credentials from the chain")
    func pathStyle() throws {
        let uri = try S3URI(parsing: "s3://my-bucket/backups/db1?AWS_REGION=eu-west-1&AWS_ENDPOINT=http://127.0.0.1:9000")
        #expect(uri.bucket == "my-bucket")
        #expect(uri.prefix == "backups/db1")
        #expect(uri.region == "eu-west-1")
        #expect(uri.auth == .implicit && uri.credentials == nil)
        #expect(uri.addressing == .path)
        #expect(uri.serviceEndpoint.description == "http://127.0.0.1:9000")
    }

    @Test("without an endpoint: virtual-hosted on the region's endpoint; a dotted bucket falls back to path style")
    func virtualHosted() throws {
        let uri = try S3URI(parsing: "s3://my-bucket?AWS_REGION=us-west-2&S3_STORAGE_CLASS=STANDARD_IA")
        #expect(uri.addressing == .virtual && uri.prefix == "" && uri.storageClass == "STANDARD_IA")
        #expect(uri.serviceEndpoint.description == "https://s3.us-west-2.amazonaws.com")
        let dotted = try S3URI(parsing: "s3://my.bucket/x/?AWS_REGION=us-west-2")
        #expect(dotted.addressing == .path && dotted.prefix == "x")
        #expect(throws: S3URIError.self) { try S3URI(parsing: "s3://my.bucket?AWS_REGION=us-west-2&S3_ADDRESSING=virtual") }
    }

    @Test("AUTH=specified takes the credentials from the URI; messages never show the secret")
    func specified() throws {
        let text = "s3://bucket1?AWS_REGION=us-east-1&AWS_ACCESS_KEY_ID=AKID&AWS_SECRET_ACCESS_KEY=Hunter2Secret"
        let uri = try S3URI(parsing: text)
        #expect(uri.auth == .specified && uri.credentials?.secretAccessKey == "Hunter2Secret")
        #expect(!uri.redacted.contains("Hunter2Secret") && uri.redacted.contains("AWS_ACCESS_KEY_ID=AKID"))
        do {
            _ = try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&AUTH=implicit&AWS_SECRET_ACCESS_KEY=Hunter2Secret")
            Issue.record("accepted a secret with AUTH=implicit")
        } catch {
            #expect(!"\(error)".contains("Hunter2Secret"))
        }
        for bad in ["aws_secret_access_key=Hunter2Secret", "AWS_SECRET_ACCESS_KEY%20=Hunter2Secret", "Hunter2Secret"] {
            #expect(throws: S3URIError.self) { try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&\(bad)") }
            do { _ = try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&\(bad)") } catch {
                #expect(!"\(error)".contains("Hunter2Secret"), "\(error)")
            }
        }
    }

    @Test("malformed URIs are refused with the part that is wrong", arguments: [
        ("s3://ab?AWS_REGION=us-east-1", "bucket"),
        ("s3://Bucket?AWS_REGION=us-east-1", "bucket"),
        ("s3://bucket1", "AWS_REGION"),
        ("s3://bucket1?REGION=us-east-1", "REGION"),
        ("s3://bucket1?AWS_REGION=us east", "AWS_REGION"),
        ("s3://bucket1/a/../b?AWS_REGION=us-east-1", "prefix"),
        ("s3://bucket1/a//b?AWS_REGION=us-east-1", "prefix"),
        ("s3://bucket1?AWS_REGION=us-east-1&AWS_ENDPOINT=ftp://x", "AWS_ENDPOINT"),
        ("s3://bucket1?AWS_REGION=us-east-1&AWS_REGION=us-east-1", "twice"),
        ("s3://bucket1?AWS_REGION=us-east-1&S3_STORAGE_CLASS=glacier;x", "S3_STORAGE_CLASS"),
        ("s3://bucket1?AWS_REGION=us-east-1&AUTH=maybe", "AUTH"),
    ])
    func malformed(uri: String, part: String) {
        do {
            _ = try S3URI(parsing: uri)
            Issue.record("accepted \(uri)")
        } catch {
            #expect("\(error)".contains(part), "\(error)")
        }
    }

    @Test("an s3:// URI and a key URI refuse the same malformed query with the same part and reason (one parser)", arguments: [
        ("AUTH=maybe", "AUTH=maybe", "must be implicit or specified"),
        ("AUTH=implicit&AWS_SECRET_ACCESS_KEY=x", "AWS_SECRET_ACCESS_KEY", "is given with AUTH=implicit: drop it, or use AUTH=specified"),
        ("AWS_SECRET_ACCESS_KEY=x", "AWS_ACCESS_KEY_ID", "is missing (AUTH=specified needs it and AWS_SECRET_ACCESS_KEY)"),
        ("AWS_ACCESS_KEY_ID=AKID", "AWS_SECRET_ACCESS_KEY", "is missing (AUTH=specified needs it and AWS_ACCESS_KEY_ID)"),
        ("AWS_ENDPOINT=http://u:pw@h/x%", "AWS_ENDPOINT", "has a '%' not followed by two hex digits"),
        ("AUTH=implicit&AUTH=implicit", "AUTH", "given twice"),
        ("AUTH=%ZZ", "AUTH", "has a '%' not followed by two hex digits"),
        ("AUTH=%C3%28", "AUTH", "is not UTF-8"),
        ("s3cr3t", "parameter '(not shown)'", "expected NAME=VALUE"),
    ])
    func sameRulesAsKeyURIs(query: String, part: String, reason: String) {
        var s3: S3URIError?
        do { _ = try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&\(query)") } catch { s3 = error }
        var key: KeyURIError?
        do { _ = try KMSKeyURI.parse("aws:///alias/k?REGION=us-east-1&\(query)") } catch { key = error }
        #expect(s3?.part == part && s3?.reason == reason, "\(String(describing: s3))")
        #expect(key?.part == part && key?.reason == reason, "\(String(describing: key))")
    }

    @Test("an endpoint that is not http(s) is refused by both parsers with the same reason")
    func sameEndpointRule() {
        var s3: S3URIError?
        do { _ = try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&AWS_ENDPOINT=ftp://h") } catch { s3 = error }
        var key: KeyURIError?
        do { _ = try KMSKeyURI.parse("aws:///alias/k?REGION=us-east-1&AWS_ENDPOINT=ftp://h") } catch { key = error }
        #expect(s3?.part == "AWS_ENDPOINT=ftp://h" && key?.part == "AWS_ENDPOINT=ftp://h")
        #expect(s3 != nil && s3?.reason == key?.reason)
    }
}

@Suite("S3 XML reader")
struct S3XMLTests {
    @Test("a ListObjectsV2 answer: keys, sizes, entities, namespace")
    func listAnswer() throws {
        let xml = #"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b&#x41;&#66;</Key><Size>12</Size></Contents><Contents><Key><![CDATA[x<y]]></Key><Size>0</Size></Contents><NextContinuationToken>t/+=</NextContinuationToken></ListBucketResult>"#
        let root = try S3XML.parse(Array(xml.utf8))
        #expect(root.name == "ListBucketResult")
        #expect(root.all("Contents").compactMap { $0.childText("Key") } == ["a&bAB", "x<y"])
        #expect(root.childText("NextContinuationToken") == "t/+=")
    }

    @Test("malformed or hostile XML is refused", arguments: [
        "<a><b></a>", "<a>", "<a></a><b></b>", "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", "<a>&bogus;</a>",
        "<a>&#0;</a>", "text", "", String(repeating: "<a>", count: 40) + String(repeating: "</a>", count: 40), "<a b=c></a>",
    ])
    func refused(xml: String) {
        #expect(throws: XMLSyntaxError.self) { try S3XML.parse(Array(xml.utf8)) }
    }

    @Test("every cut of a valid document is refused, never half-read")
    func truncated() {
        let xml = Array(#"<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents></ListBucketResult>"#.utf8)
        for cut in 0..<xml.count {
            #expect(throws: XMLSyntaxError.self) { try S3XML.parse(Array(xml[..<cut])) }
        }
    }
}
