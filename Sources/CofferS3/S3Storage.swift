import CofferCloud
import CofferRepository
import Crypto
import Foundation
import NIOHTTP1
import Synchronization

/// A repository in an S3 bucket, under the URI's prefix, with the same layout as on disk:
/// `PREFIX/KIND/NAME`, data packs under `PREFIX/data/XX/NAME` (XX = the name's first two
/// characters), so a local repository copied to a bucket (`aws s3 sync`) opens as it is.
///
/// - `save`: one PUT with `Content-MD5` and `x-amz-checksum-sha256` (the server checks both) and a
///   signed payload hash; above ``S3Options/multipartThreshold`` a multipart upload (parts in
///   parallel, each with `Content-MD5`; aborted on failure). Without overwrite, `If-None-Match: *`
///   makes the server refuse an existing key atomically (HTTP 412), even against a concurrent
///   writer. A PUT can be both applied and unanswered (connection lost): when its retry gets 412,
///   the existing object is compared with ours (x-amz-checksum-sha256 or the ETag, an MD5) and a
///   match counts as success.
/// - `load`: GET, ranged with `Range: bytes=A-B`; the answer's `Content-Range` and length must be
///   exactly the range asked for. Whole objects are checked against their stored SHA-256 when the
///   server returns it (`x-amz-checksum-mode: ENABLED`).
/// - `stat`: HEAD. `remove`: HEAD (a missing object is ``StorageError/notFound(_:)``), then DELETE.
/// - `list`: ListObjectsV2 pages (continuation tokens), names validated and anything else skipped.
public final class S3Storage: Storage {
    public let client: S3Client
    public var uri: S3URI { client.uri }
    public var options: S3Options { client.options }
    public let properties: StorageProperties
    /// Sent with every object written under retention (object lock), when set.
    var retention: Retention? { retentionState.withLock { $0 } }
    private let retentionState: Mutex<Retention?>

    /// Object lock retention for every object written: mode and how long.
    public struct Retention: Sendable, Equatable {
        public enum Mode: String, Sendable { case governance = "GOVERNANCE", compliance = "COMPLIANCE" }
        public var mode: Mode
        public var days: Int
        public init(mode: Mode, days: Int) { self.mode = mode; self.days = days }
    }

    /// The largest object a whole GET accepts (packs are at most 128 MiB, plus their framing).
    static let maxObjectSize = 160 << 20

    public init(client: S3Client, retention: Retention? = nil) {
        self.client = client
        self.retentionState = Mutex(retention)
        properties = StorageProperties(connections: client.options.connections, hasAtomicReplace: true, remote: true)
    }

    /// Opens the bucket of `uri` (credentials from the URI or the chain).
    public convenience init(uri: S3URI, options: S3Options = S3Options(),
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        self.init(client: try S3Client(uri: uri, options: options, environment: environment))
    }

    /// For `init`: the bucket is made when it does not exist (in the URI's region), with object
    /// lock enabled when asked; an existing bucket must then have object lock enabled.
    public func prepareBucket(objectLock: Bool = false) async throws {
        if try await client.bucketExists() {
            if objectLock, try await !objectLockEnabled() {
                throw S3Error(.refused, "bucket \(uri.bucket) does not have object lock enabled: object lock can only be enabled on a versioned bucket (PutObjectLockConfiguration with ObjectLockEnabled, or a new bucket made with it), and retention on objects needs it")
            }
            return
        }
        try await client.createBucket(objectLock: objectLock)
    }

    /// Whether the bucket has object lock enabled (GetObjectLockConfiguration).
    public func objectLockEnabled() async throws -> Bool {
        let request = S3Client.Request(method: .GET, key: nil, query: [("object-lock", "")], operation: "GET-LOCK-CONFIG")
        let response = try await client.perform(request)
        if response.status == 404 || response.errorCode == "ObjectLockConfigurationNotFoundError" { return false }
        try client.expectSuccess(response, request)
        guard let document = try? S3XML.parse(response.body), document.name == "ObjectLockConfiguration" else {
            throw S3Error(.invalidResponse, "\(client.describe(request)): not an <ObjectLockConfiguration>")
        }
        return document.childText("ObjectLockEnabled") == "Enabled"
    }

    // MARK: Object lock

    public var supportsObjectLock: Bool { true }

    public func useObjectLock(_ lock: ObjectLock?) {
        let retention = lock.map { Retention(mode: $0.mode == .compliance ? .compliance : .governance, days: $0.days) }
        retentionState.withLock { $0 = retention }
    }

    /// HEAD's `x-amz-object-lock-retain-until-date`.
    public func retainUntil(_ name: ObjectName) async throws -> Date? {
        let request = S3Client.Request(method: .HEAD, key: key(name), operation: "HEAD")
        let response = try await client.perform(request)
        if response.status == 404 { throw StorageError.notFound(name) }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
        guard let text = response.header("x-amz-object-lock-retain-until-date") else { return nil }
        guard let date = Self.parseDate(text) else {
            throw S3Error(.invalidResponse, "\(client.describe(request)): a retention date that is not a date")
        }
        return date
    }

    /// PutObjectRetention (`PUT KEY?retention`) in the repository's mode. S3 refuses to shorten a
    /// retention: a refusal when the object is already retained until `date` or later is "nothing
    /// to do" (false).
    public func extendRetention(_ name: ObjectName, until date: Date) async throws -> Bool {
        guard let retention else {
            throw S3Error(.refused, "extend retention of \(name): the repository has no object lock")
        }
        let body = Array(("<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>\(retention.mode.rawValue)</Mode>"
            + "<RetainUntilDate>\(Self.iso8601(date))</RetainUntilDate></Retention>").utf8)
        let request = S3Client.Request(method: .PUT, key: key(name), query: [("retention", "")],
                                       headers: [("Content-Type", "application/xml"), ("Content-MD5", base64(Insecure.MD5.hash(data: body)))],
                                       body: body, operation: "PUT-RETENTION")
        let response = try await client.perform(request)
        if response.status == 404 { throw StorageError.notFound(name) }
        if (200..<300).contains(response.status) { return true }
        if response.status == 400 || response.status == 403, let current = try await retainUntil(name), current >= date.addingTimeInterval(-1) {
            return false
        }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
        return true
    }

    /// Incomplete multipart uploads under the prefix started before `date`.
    public func leftovers(olderThan date: Date) async throws -> [Leftover] {
        let prefix = uri.objectKey("")
        return try await incompleteUploads().compactMap { upload in
            // Untrusted listing: only keys under our prefix, with a start time we can read.
            guard upload.key.hasPrefix(prefix), let since = Self.parseDate(upload.initiated), since < date else { return nil }
            return Leftover(location: "s3://\(uri.bucket)/\(upload.key) (upload started \(Self.iso8601(since)))", since: since,
                            token: upload.key + "\n" + upload.uploadID)
        }
    }

    /// Aborts the upload (AbortMultipartUpload); one already gone is fine.
    public func removeLeftover(_ leftover: Leftover) async throws {
        let parts = leftover.token.split(separator: "\n", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0].hasPrefix(uri.objectKey("")) else {
            throw S3Error(.refused, "abort upload: \(S3Client.printable(leftover.location)) is not an upload under this repository's prefix")
        }
        let request = S3Client.Request(method: .DELETE, key: parts[0], query: [("uploadId", parts[1])], operation: "MULTIPART-ABORT")
        let response = try await client.perform(request)
        if response.status == 404 { return }
        try client.expectSuccess(response, request)
    }

    // MARK: Keys

    /// PREFIX/KIND/[XX/]NAME.
    func key(_ name: ObjectName) -> String {
        let inKind = name.kind.isSharded ? "\(name.name.prefix(2))/\(name.name)" : name.name
        return uri.objectKey("\(name.kind.rawValue)/\(inKind)")
    }

    func kindPrefix(_ kind: ObjectKind) -> String { uri.objectKey(kind.rawValue) + "/" }

    // MARK: Storage

    public func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        if contents.count > options.multipartThreshold {
            try await saveMultipart(name, contents: contents, overwrite: overwrite)
            return
        }
        if !overwrite && !options.conditionalWrites {
            // Without conditional writes: HEAD, then PUT. Two writers racing between the two can both
            // write; repository object names are random or content-derived, so that race needs a
            // name collision as well (docs/S3.md).
            if try await exists(name) { throw StorageError.alreadyExists(name) }
        }
        let md5 = Array(Insecure.MD5.hash(data: contents))
        let sha = Array(SHA256.hash(data: contents))
        var headers: [(String, String)] = [
            ("Content-Type", "application/octet-stream"),
            ("Content-MD5", base64(md5)),
            ("x-amz-sdk-checksum-algorithm", "SHA256"),
            ("x-amz-checksum-sha256", base64(sha)),
        ]
        headers += writeHeaders(for: name)
        if !overwrite && options.conditionalWrites { headers.append(("If-None-Match", "*")) }
        let request = S3Client.Request(method: .PUT, key: key(name), headers: headers, body: contents, operation: "PUT")
        let response = try await client.perform(request)
        if response.status == 412 && !overwrite {
            if response.attempts > 1, try await holdsOurs(name, size: contents.count, sha: sha, etag: SigV4Hex.hex(md5)) { return }
            throw StorageError.alreadyExists(name)
        }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
    }

    public func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8] {
        if let range {
            if range.lowerBound < 0 || range.isEmpty {
                let size = try await stat(name).size
                guard range.lowerBound >= 0, range.upperBound <= size else {
                    throw StorageError.rangeOutOfBounds(name, range: range, size: size)
                }
                return []
            }
            guard range.count <= Self.maxObjectSize else {
                throw StorageError.rangeOutOfBounds(name, range: range, size: try await stat(name).size)
            }
            let request = S3Client.Request(method: .GET, key: key(name),
                                           headers: [("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")],
                                           bodyLimit: Int(range.count) + 1024, operation: "GET")
            let response = try await client.perform(request) { response throws(S3Error) in
                // A 206 must be exactly the range asked for (or end early at the object's end, refused below).
                guard response.status == 206 else { return }
                guard let (first, last, _) = Self.contentRange(response.header("Content-Range")) else {
                    throw S3Error(.invalidResponse, "\(client.describe(request)): a 206 answer without a valid Content-Range")
                }
                let count = last - first + 1
                guard first == range.lowerBound, Int64(response.body.count) == count else {
                    throw S3Error(.invalidResponse, "\(client.describe(request)): answered bytes \(first)-\(last) (\(response.body.count) bytes) for \(range.lowerBound)-\(range.upperBound - 1)")
                }
            }
            switch response.status {
            case 206:
                let (_, last, total) = Self.contentRange(response.header("Content-Range"))!
                guard last == range.upperBound - 1 else {
                    throw StorageError.rangeOutOfBounds(name, range: range, size: total ?? (last + 1))
                }
                return response.body
            case 200:
                // A server that ignores Range sends the whole object.
                guard Int64(response.body.count) >= range.upperBound else {
                    throw StorageError.rangeOutOfBounds(name, range: range, size: Int64(response.body.count))
                }
                return Array(response.body[Int(range.lowerBound)..<Int(range.upperBound)])
            case 404:
                throw StorageError.notFound(name)
            case 416:
                throw StorageError.rangeOutOfBounds(name, range: range, size: try await stat(name).size)
            default:
                try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
                throw S3Error(.invalidResponse, "\(client.describe(request)): HTTP \(response.status)")
            }
        }
        let request = S3Client.Request(method: .GET, key: key(name), headers: [("x-amz-checksum-mode", "ENABLED")],
                                       bodyLimit: Self.maxObjectSize, operation: "GET")
        let response = try await client.perform(request) { response throws(S3Error) in
            guard response.status == 200, let stored = response.header("x-amz-checksum-sha256"),
                  !stored.contains("-"), response.header("x-amz-checksum-type")?.uppercased() != "COMPOSITE" else { return }
            guard stored == base64(SHA256.hash(data: response.body)) else {
                throw S3Error(.badDigest, "\(client.describe(request)): the object's bytes do not match its stored SHA-256")
            }
        }
        if response.status == 404 { throw StorageError.notFound(name) }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
        return response.body
    }

    public func stat(_ name: ObjectName) async throws -> ObjectInfo {
        let request = S3Client.Request(method: .HEAD, key: key(name), operation: "HEAD")
        let response = try await client.perform(request)
        if response.status == 404 { throw StorageError.notFound(name) }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
        guard let length = response.header("Content-Length").flatMap(Int64.init), length >= 0 else {
            throw S3Error(.invalidResponse, "\(client.describe(request)): no Content-Length")
        }
        return ObjectInfo(name: name, size: length)
    }

    public func remove(_ name: ObjectName) async throws {
        _ = try await stat(name)
        let request = S3Client.Request(method: .DELETE, key: key(name), operation: "DELETE")
        let response = try await client.perform(request)
        if response.status == 404 { throw StorageError.notFound(name) }
        try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, request) }
    }

    /// Removes many objects with DeleteObjects (up to 1000 a request); returns the names S3 could
    /// not remove with its reason. A missing object counts as removed (S3 does not tell).
    public func remove(_ names: [ObjectName]) async throws -> [(ObjectName, String)] {
        var failed: [(ObjectName, String)] = []
        var start = 0
        while start < names.count {
            let batch = Array(names[start..<min(start + 1000, names.count)])
            start += batch.count
            let byKey = Dictionary(batch.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
            let body = Array(("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
                + byKey.keys.sorted().map { "<Object><Key>\(S3XML.escape($0))</Key></Object>" }.joined() + "</Delete>").utf8)
            let request = S3Client.Request(method: .POST, key: nil, query: [("delete", "")],
                                           headers: [("Content-Type", "application/xml"), ("Content-MD5", base64(Insecure.MD5.hash(data: body))),
                                                     ("x-amz-checksum-sha256", base64(SHA256.hash(data: body)))],
                                           body: body, bodyLimit: 4 << 20, operation: "DELETE-MULTI")
            let response = try await client.perform(request)
            try client.expectSuccess(response, request)
            let document: XMLElement
            do { document = try S3XML.parse(response.body) } catch {
                throw S3Error(.invalidResponse, "\(client.describe(request)): \(error)")
            }
            guard document.name == "DeleteResult" else {
                throw S3Error(.invalidResponse, "\(client.describe(request)): answered <\(S3Client.printable(document.name))>, not <DeleteResult>")
            }
            for error in document.all("Error") {
                guard let key = error.childText("Key"), let name = byKey[key] else { continue }
                failed.append((name, "\(S3Client.printable(error.childText("Code") ?? "error")): \(S3Client.printable(error.childText("Message") ?? ""))"))
            }
        }
        return failed
    }

    public func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error> {
        precondition(batchSize > 0)
        let (stream, continuation) = AsyncThrowingStream<[ObjectInfo], Error>.makeStream()
        let task = Task {
            do {
                var token: String?
                var seen = Set<String>()
                let prefix = kindPrefix(kind)
                repeat {
                    try Task.checkCancellation()
                    let (batch, next) = try await listPage(kind, prefix: prefix, token: token, maxKeys: min(batchSize, options.pageSize, 1000))
                    if !batch.isEmpty { continuation.yield(batch) }
                    if let next {
                        guard seen.insert(next).inserted else {
                            throw S3Error(.invalidResponse, "LIST s3://\(uri.bucket)/\(prefix): the server repeated a continuation token")
                        }
                    }
                    token = next
                } while token != nil
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// One ListObjectsV2 page: the valid objects of `kind` in it, and the next token if truncated.
    func listPage(_ kind: ObjectKind, prefix: String, token: String?, maxKeys: Int) async throws -> ([ObjectInfo], String?) {
        var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(maxKeys))]
        if let token { query.append(("continuation-token", token)) }
        let request = S3Client.Request(method: .GET, key: nil, query: query, bodyLimit: 16 << 20, operation: "LIST")
        let response = try await client.perform(request) { response throws(S3Error) in
            guard response.status == 200 else { return }
            // A cut answer is retried.
            if (try? S3XML.parse(response.body)) == nil {
                throw S3Error(.invalidResponse, "LIST s3://\(uri.bucket)/\(prefix): the answer is not well-formed XML")
            }
        }
        try client.expectSuccess(response, request)
        let document = try S3XML.parse(response.body)
        guard document.name == "ListBucketResult" else {
            throw S3Error(.invalidResponse, "LIST s3://\(uri.bucket)/\(prefix): answered <\(S3Client.printable(document.name))>, not <ListBucketResult>")
        }
        var batch: [ObjectInfo] = []
        for entry in document.all("Contents") {
            // Untrusted: anything that is not PREFIX/KIND/[XX/]NAME with a valid name is skipped.
            guard let key = entry.childText("Key"), key.hasPrefix(prefix),
                  let size = entry.childText("Size").flatMap(Int64.init), size >= 0 else { continue }
            let rest = key.dropFirst(prefix.count)
            let nameText: Substring
            if kind.isSharded {
                let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].count == 2, parts[1].hasPrefix(parts[0]) else { continue }
                nameText = parts[1]
            } else {
                guard !rest.contains("/") else { continue }
                nameText = rest
            }
            guard let name = try? ObjectName(kind, String(nameText)) else { continue }
            batch.append(ObjectInfo(name: name, size: size, modified: entry.childText("LastModified").flatMap(Self.parseDate)))
        }
        let truncated = document.childText("IsTruncated") == "true"
        guard truncated else { return (batch, nil) }
        guard let next = document.childText("NextContinuationToken"), !next.isEmpty else {
            throw S3Error(.invalidResponse, "LIST s3://\(uri.bucket)/\(prefix): truncated without a continuation token")
        }
        return (batch, next)
    }

    // MARK: Multipart

    func saveMultipart(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws {
        if !overwrite, try await exists(name) { throw StorageError.alreadyExists(name) }
        let objectKey = key(name)
        let start = S3Client.Request(method: .POST, key: objectKey, query: [("uploads", "")],
                                     headers: [("Content-Type", "application/octet-stream")] + writeHeaders(for: name), operation: "MULTIPART-CREATE")
        let created = try await client.perform(start)
        try client.expectSuccess(created, start)
        guard let document = try? S3XML.parse(created.body), document.name == "InitiateMultipartUploadResult",
              let uploadID = document.childText("UploadId"), !uploadID.isEmpty else {
            throw S3Error(.invalidResponse, "\(client.describe(start)): no UploadId in the answer")
        }
        let partSize = max(options.partSize, 5 << 20)
        let ranges = stride(from: 0, to: contents.count, by: partSize).map { $0..<min($0 + partSize, contents.count) }
        do {
            let etags = try await withThrowingTaskGroup(of: (Int, String, [UInt8]).self) { group in
                for (index, range) in ranges.enumerated() {
                    group.addTask {
                        let part = Array(contents[range])
                        let md5 = Array(Insecure.MD5.hash(data: part))
                        let request = S3Client.Request(method: .PUT, key: objectKey,
                                                       query: [("partNumber", String(index + 1)), ("uploadId", uploadID)],
                                                       headers: [("Content-MD5", base64(md5))], body: part, operation: "MULTIPART-PART")
                        let response = try await self.client.perform(request)
                        try self.client.expectSuccess(response, request)
                        guard let etag = response.header("ETag"), !etag.isEmpty else {
                            throw S3Error(.invalidResponse, "\(self.client.describe(request)): no ETag for part \(index + 1)")
                        }
                        return (index, etag, md5)
                    }
                }
                var results = [(String, [UInt8])](repeating: ("", []), count: ranges.count)
                for try await (index, etag, md5) in group { results[index] = (etag, md5) }
                return results
            }
            let xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                + etags.enumerated().map { "<Part><PartNumber>\($0.offset + 1)</PartNumber><ETag>\(S3XML.escape($0.element.0))</ETag></Part>" }.joined()
                + "</CompleteMultipartUpload>"
            var headers = [("Content-Type", "application/xml")]
            if !overwrite && options.conditionalWrites { headers.append(("If-None-Match", "*")) }
            let complete = S3Client.Request(method: .POST, key: objectKey, query: [("uploadId", uploadID)], headers: headers,
                                            body: Array(xml.utf8), bodyLimit: 1 << 20, operation: "MULTIPART-COMPLETE")
            let client = self.client
            let response = try await client.perform(complete) { response throws(S3Error) in
                // CompleteMultipartUpload can fail after its 200 has started: the error is in the body.
                if response.status == 200, let root = try? S3XML.parse(response.body), root.name == "Error" {
                    throw S3Error(.serverError, "\(client.describe(complete)): \(S3Client.printable(root.childText("Code") ?? "error")) after HTTP 200")
                }
            }
            // The multipart ETag: MD5 of the parts' MD5s, "-" and the number of parts.
            let expectedETag = SigV4Hex.hex(Array(Insecure.MD5.hash(data: etags.flatMap { $0.1 }))) + "-\(etags.count)"
            if response.status == 412 && !overwrite {
                throw StorageError.alreadyExists(name)
            }
            if response.status == 404 && response.attempts > 1,
               try await holdsOurs(name, size: contents.count, sha: nil, etag: expectedETag) {
                return  // completed by an attempt whose answer was lost
            }
            try mapped(name) { () throws(S3Error) in try client.expectSuccess(response, complete) }
            if retention != nil && ObjectLock.applies(to: name) {
                // Some servers (moto) ignore lock headers on CreateMultipartUpload: set it again.
                _ = try await extendRetention(name, until: Date().addingTimeInterval(Double(retention!.days) * 86400))
            }
            if created.attempts > 1 {
                // A create whose answer was lost left an upload nobody will complete: abort it.
                for upload in (try? await incompleteUploads(under: objectKey)) ?? [] where upload.key == objectKey {
                    await abort(objectKey, uploadID: upload.uploadID)
                }
            }
        } catch {
            await abort(objectKey, uploadID: uploadID)
            throw error
        }
    }

    /// Best effort: the upload's parts are dropped (a lifecycle rule catches what this misses).
    func abort(_ objectKey: String, uploadID: String) async {
        let request = S3Client.Request(method: .DELETE, key: objectKey, query: [("uploadId", uploadID)], operation: "MULTIPART-ABORT")
        _ = try? await client.perform(request)
    }

    /// Incomplete multipart uploads under the prefix (crashed writers leave them): key and upload id.
    public func incompleteUploads() async throws -> [(key: String, uploadID: String, initiated: String)] {
        try await incompleteUploads(under: uri.objectKey(""))
    }

    func incompleteUploads(under keyPrefix: String) async throws -> [(key: String, uploadID: String, initiated: String)] {
        var found: [(key: String, uploadID: String, initiated: String)] = []
        var keyMarker: String?, idMarker: String?
        repeat {
            var query = [("uploads", ""), ("prefix", keyPrefix), ("max-uploads", "1000")]
            if let keyMarker { query.append(("key-marker", keyMarker)) }
            if let idMarker { query.append(("upload-id-marker", idMarker)) }
            let request = S3Client.Request(method: .GET, key: nil, query: query, bodyLimit: 16 << 20, operation: "MULTIPART-LIST")
            let response = try await client.perform(request)
            try client.expectSuccess(response, request)
            let document = try S3XML.parse(response.body)
            for upload in document.all("Upload") {
                guard let key = upload.childText("Key"), let id = upload.childText("UploadId") else { continue }
                found.append((key, id, upload.childText("Initiated") ?? ""))
            }
            if document.childText("IsTruncated") == "true" {
                let nextKey = document.childText("NextKeyMarker"), nextID = document.childText("NextUploadIdMarker")
                guard nextKey != keyMarker || nextID != idMarker, nextKey != nil else { break }
                keyMarker = nextKey; idMarker = nextID
            } else {
                keyMarker = nil
            }
        } while keyMarker != nil
        return found
    }

    /// Aborts every incomplete multipart upload under the prefix; returns how many.
    public func abortIncompleteUploads() async throws -> Int {
        let uploads = try await incompleteUploads()
        for upload in uploads { await abort(upload.key, uploadID: upload.uploadID) }
        return uploads.count
    }

    // MARK: Helpers

    /// Headers of every object written: storage class, object lock retention (for the objects
    /// ``ObjectLock/applies(to:)`` names; `nil`: any such object).
    func writeHeaders(for name: ObjectName? = nil) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let storageClass = uri.storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        if let retention, name.map(ObjectLock.applies(to:)) ?? true {
            let until = Date().addingTimeInterval(Double(retention.days) * 86400)
            headers.append(("x-amz-object-lock-mode", retention.mode.rawValue))
            headers.append(("x-amz-object-lock-retain-until-date", Self.iso8601(until)))
        }
        return headers
    }

    /// An S3 time for requests (`2026-12-03T07:40:00.000Z`), written without ICU (``RFC3339Time``).
    static func iso8601(_ date: Date) -> String { RFC3339Time.format(date) }

    /// An S3 time (`2026-12-03T07:40:00.123Z`, fractional seconds optional). Read without a
    /// formatter: a listing has one per object, and ISO8601DateFormatter (one made per entry,
    /// through ICU) cost CPU per object and ~6 MiB of ICU's data pages per process.
    static func parseDate(_ text: String) -> Date? { RFC3339Time.parse(text) }

    func exists(_ name: ObjectName) async throws -> Bool {
        do { _ = try await stat(name); return true } catch StorageError.notFound { return false }
    }

    /// Whether the object under `name` is the one we tried to write: same size, and the same
    /// SHA-256 (when the server stored one) or the same ETag.
    func holdsOurs(_ name: ObjectName, size: Int, sha: [UInt8]?, etag: String) async throws -> Bool {
        let request = S3Client.Request(method: .HEAD, key: key(name), headers: [("x-amz-checksum-mode", "ENABLED")], operation: "HEAD")
        let response = try await client.perform(request)
        guard response.status == 200, response.header("Content-Length").flatMap(Int.init) == size else { return false }
        if let sha, let stored = response.header("x-amz-checksum-sha256"), !stored.contains("-") {
            return stored == base64(sha)
        }
        let stored = response.header("ETag")?.trimmingCharacters(in: CharacterSet(charactersIn: "\"")).lowercased()
        return stored == etag
    }

    /// Runs an S3 check, turning "not found" into ``StorageError/notFound(_:)``.
    func mapped(_ name: ObjectName, _ body: () throws(S3Error) -> Void) throws {
        do { try body() } catch {
            if error.kind == .notFound { throw StorageError.notFound(name) }
            throw error
        }
    }

    /// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
    static func contentRange(_ value: String?) -> (Int64, Int64, Int64?)? {
        guard let value, value.hasPrefix("bytes ") else { return nil }
        let rest = value.dropFirst(6)
        let parts = rest.split(separator: "/", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let bounds = parts[0].split(separator: "-", maxSplits: 1)
        guard bounds.count == 2, let first = Int64(bounds[0]), let last = Int64(bounds[1]), first >= 0, last >= first else { return nil }
        let total = parts[1] == "*" ? nil : Int64(parts[1])
        if parts[1] != "*" && total == nil { return nil }
        return (first, last, total)
    }
}

/// Lower-case hex.
enum SigV4Hex {
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0x0F)]] }
        return String(decoding: out, as: UTF8.self)
    }
}
