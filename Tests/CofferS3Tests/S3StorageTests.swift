import CofferCloud
import CofferRepository
@testable import CofferS3
import CofferTestServers
import Crypto
import Foundation
import Testing

/// Deterministic bytes for a test.
func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// A bucket on a fresh moto_server, and an S3Storage on it.
struct S3Fixture {
    let server: TestServer
    let bucket: String

    init(environment: [String: String] = [:]) throws {
        server = try TestServer.moto(environment: environment)
        bucket = "coffer-test"
    }

    func uri(_ prefix: String = "repo", endpoint: String? = nil, extra: String = "") throws -> S3URI {
        try S3URI(parsing: "s3://\(bucket)/\(prefix)?AWS_REGION=us-east-1&AWS_ENDPOINT=\(endpoint ?? server.endpoint)\(extra)")
    }

    func storage(_ prefix: String = "repo", endpoint: String? = nil, options: S3Options = Self.fastOptions,
                 environment: [String: String] = Moto.environment) throws -> S3Storage {
        S3Storage(client: try S3Client(uri: try uri(prefix, endpoint: endpoint), options: options, environment: environment,
                                       stats: S3RequestStats()))
    }

    /// Short delays and deadlines, for tests.
    static var fastOptions: S3Options {
        var options = S3Options()
        options.baseDelay = 0.02
        options.maxDelay = 0.2
        options.timeoutSeconds = 2
        return options
    }

    func createBucket(environment: [String: String] = Moto.environment, objectLock: Bool = false) async throws {
        try await storage(environment: environment).prepareBucket(objectLock: objectLock)
    }
}

@Suite("S3Storage against a real moto_server", .serialized)
struct S3StorageTests {
    @Test("save, load, ranged load, stat, remove; missing objects are StorageError.notFound")
    func roundTrip() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        let storage = try fixture.storage()
        let name = try ObjectName(.data, "ab12cd")
        let bytes = pattern(100_000)
        try await storage.save(name, contents: bytes)
        #expect(try await storage.load(name) == bytes)
        #expect(try await storage.load(name, range: 1000..<1500) == Array(bytes[1000..<1500]))
        #expect(try await storage.load(name, range: 99_999..<100_000) == [bytes[99_999]])
        #expect(try await storage.load(name, range: 5..<5) == [])
        #expect(try await storage.stat(name) == ObjectInfo(name: name, size: 100_000))
        let empty = try ObjectName(.snapshots, "empty")
        try await storage.save(empty, contents: [])
        #expect(try await storage.load(empty) == [])
        #expect(try await storage.stat(empty).size == 0)

        await #expect(throws: StorageError.rangeOutOfBounds(name, range: 99_000..<100_001, size: 100_000)) {
            try await storage.load(name, range: 99_000..<100_001)
        }
        await #expect(throws: StorageError.rangeOutOfBounds(name, range: 100_000..<100_010, size: 100_000)) {
            try await storage.load(name, range: 100_000..<100_010)
        }
        try await storage.remove(name)
        await #expect(throws: StorageError.notFound(name)) { try await storage.load(name) }
        await #expect(throws: StorageError.notFound(name)) { try await storage.load(name, range: 0..<10) }
        await #expect(throws: StorageError.notFound(name)) { try await storage.stat(name) }
        await #expect(throws: StorageError.notFound(name)) { try await storage.remove(name) }
        // The object's key follows the on-disk layout: PREFIX/data/XX/NAME.
        #expect(storage.key(name) == "repo/data/ab/ab12cd")
    }

    @Test("save without overwrite never replaces an object (If-None-Match: *), with overwrite it does")
    func overwriteRefused() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        let storage = try fixture.storage()
        let name = try ObjectName(.locks, "l1")
        try await storage.save(name, contents: [1, 2, 3])
        await #expect(throws: StorageError.alreadyExists(name)) { try await storage.save(name, contents: [9]) }
        #expect(try await storage.load(name) == [1, 2, 3])
        try await storage.save(name, contents: [4, 5], overwrite: true)
        #expect(try await storage.load(name) == [4, 5])

        // Many writers racing for one name: exactly one wins.
        let race = try ObjectName(.locks, "race")
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<8 {
                group.addTask { (try? await storage.save(race, contents: [UInt8(i)])) != nil }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1)

        // Without conditional writes: HEAD then PUT still refuses an existing object.
        var options = S3Fixture.fastOptions
        options.conditionalWrites = false
        let headFirst = try fixture.storage(options: options)
        await #expect(throws: StorageError.alreadyExists(name)) { try await headFirst.save(name, contents: [9]) }
    }

    @Test("list: pages of a small size, every kind apart, sharded data names, foreign keys skipped")
    func listPaginated() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        var options = S3Fixture.fastOptions
        options.pageSize = 7
        let storage = try fixture.storage(options: options)
        var expected = Set<String>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<45 {
                let name = String(format: "%02x", i) + "deadbeef\(i)"
                expected.insert(name)
                group.addTask { try await storage.save(try ObjectName(.data, name), contents: pattern(i, seed: UInt8(i))) }
            }
            for i in 0..<5 {
                group.addTask { try await storage.save(try ObjectName(.index, "i\(i)"), contents: [UInt8(i)]) }
            }
            try await group.waitForAll()
        }
        // Keys that are not objects of the repository: wrong shard, bad names, nested, other prefixes.
        let raw = try fixture.storage(options: options)
        for key in ["repo/data/zz/ab0001", "repo/data/ab/AB0001", "repo/data/ab/ab.tmp", "repo/data/abcd",
                    "repo/data/ab/cd/abx", "repo/index/sub/i9", "repo/index/I9", "other/data/ab/ab77", "repo-2/index/i1"] {
            let request = S3Client.Request(method: .PUT, key: key, headers: [("Content-Type", "application/octet-stream")],
                                           body: [1], operation: "PUT")
            let response = try await raw.client.perform(request)
            #expect(response.status == 200)
        }
        var batches: [[ObjectInfo]] = []
        for try await batch in storage.list(.data, batchSize: 1000) { batches.append(batch) }
        #expect(batches.count >= 7, "pages of at most 7 keys")
        #expect(batches.allSatisfy { $0.count <= 7 })
        let listed = batches.flatMap { $0 }
        #expect(Set(listed.map(\.name.name)) == expected)
        #expect(listed.count == 45)
        #expect(listed.allSatisfy { info in info.size == Int64(Int(info.name.name.prefix(2), radix: 16)!) })
        #expect(Set(try await storage.listAll(.index).map(\.name.name)) == ["i0", "i1", "i2", "i3", "i4"])
        #expect(try await storage.listAll(.snapshots).isEmpty)
        // batchSize caps the page too.
        var small: [[ObjectInfo]] = []
        for try await batch in storage.list(.index, batchSize: 2) { small.append(batch) }
        #expect(small.map(\.count).reduce(0, +) == 5 && small.allSatisfy { $0.count <= 2 } && small.count >= 3)
    }

    @Test("more than 1000 objects: ListObjectsV2 continuation tokens at S3's own page size")
    func listOverThousand() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        var options = S3Fixture.fastOptions
        options.connections = 16
        let storage = try fixture.storage(options: options)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<1100 { group.addTask { try await storage.save(try ObjectName(.index, "n\(i)"), contents: []) } }
            try await group.waitForAll()
        }
        var pages = 0
        var names = Set<String>()
        for try await batch in storage.list(.index, batchSize: 5000) { pages += 1; names.formUnion(batch.map(\.name.name)) }
        #expect(names.count == 1100)
        #expect(pages == 2)
    }

    @Test("multipart upload with several parts: parts in parallel, byte-exact, ranged reads across parts, no upload left")
    func multipart() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        var options = S3Fixture.fastOptions
        options.multipartThreshold = 6 << 20
        options.partSize = 5 << 20
        options.timeoutSeconds = 60
        let stats = S3RequestStats()
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: options, environment: Moto.environment, stats: stats))
        let name = try ObjectName(.data, "cafe01")
        let bytes = pattern((12 << 20) + 12345, seed: 7)
        try await storage.save(name, contents: bytes)
        #expect(stats.requests["MULTIPART-PART"] == 3)
        #expect(stats.requests["MULTIPART-CREATE"] == 1 && stats.requests["MULTIPART-COMPLETE"] == 1)
        #expect(try await storage.stat(name).size == Int64(bytes.count))
        #expect(try await storage.load(name) == bytes)
        let across = Int64(5 << 20) - 100 ..< Int64(5 << 20) + 100
        #expect(try await storage.load(name, range: across) == Array(bytes[Int(across.lowerBound)..<Int(across.upperBound)]))
        await #expect(throws: StorageError.alreadyExists(name)) { try await storage.save(name, contents: bytes) }
        #expect(try await storage.incompleteUploads().isEmpty)
    }

    @Test("an upload that fails is aborted: no incomplete multipart upload is left behind")
    func multipartAbort() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        var options = S3Fixture.fastOptions
        options.multipartThreshold = 1 << 20
        options.timeoutSeconds = 60
        let storage = try fixture.storage(options: options)
        // An upload left by a writer that crashed between create and complete.
        let name = try ObjectName(.data, "beef02")
        let request = S3Client.Request(method: .POST, key: storage.key(name), query: [("uploads", "")], operation: "MULTIPART-CREATE")
        let created = try await storage.client.perform(request)
        #expect(created.status == 200)
        #expect(try await storage.incompleteUploads().count == 1)
        #expect(try await storage.abortIncompleteUploads() == 1)
        #expect(try await storage.incompleteUploads().isEmpty)
        // And a real multipart save still works after.
        try await storage.save(name, contents: pattern(6 << 20, seed: 3))
        #expect(try await storage.load(name) == pattern(6 << 20, seed: 3))
    }

    @Test("DeleteObjects removes a batch in one request")
    func batchRemove() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        let stats = S3RequestStats()
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: S3Fixture.fastOptions, environment: Moto.environment, stats: stats))
        let names = try (0..<30).map { try ObjectName(.data, String(format: "%02xff", $0)) }
        for name in names { try await storage.save(name, contents: [1]) }
        let failed = try await storage.remove(Array(names[0..<20]))
        #expect(failed.isEmpty)
        #expect(stats.requests["DELETE-MULTI"] == 1)
        #expect(Set(try await storage.listAll(.data).map(\.name)) == Set(names[20...]))
    }

    /// moto 5.2.1 stores x-amz-checksum-sha256 but verifies neither it nor Content-MD5 (AWS,
    /// MinIO and Ceph do): the PUT's headers are checked here as sent, and the GET side's check of
    /// the stored SHA-256 against a server that returns other bytes.
    @Test("PUT carries Content-MD5 and x-amz-checksum-sha256 of its body; a whole GET whose bytes do not match the stored SHA-256 is refused")
    func checksums() async throws {
        let body = pattern(5000, seed: 5)
        let listener = try LoggingListener { index, request in
            if request.method == "PUT" { return .answer(status: 200, headers: [], body: []) }
            // The stored checksum is of `body`, the bytes sent are not.
            return .answer(status: 200, headers: [("x-amz-checksum-sha256", base64(SHA256.hash(data: body)))], body: pattern(5000, seed: 6))
        }
        defer { listener.stop() }
        var options = S3Fixture.fastOptions
        options.attempts = 2
        let storage = S3Storage(client: try S3Client(uri: try S3URI(parsing: "s3://bucket1?AWS_REGION=us-east-1&AWS_ENDPOINT=\(listener.endpoint)"),
                                                     options: options, environment: Moto.environment, stats: S3RequestStats()))
        let name = try ObjectName(.index, "sum")
        try await storage.save(name, contents: body)
        let put = try #require(listener.requests.first)
        #expect(put.body == body)
        #expect(put.header("Content-MD5") == base64(Insecure.MD5.hash(data: body)))
        #expect(put.header("x-amz-checksum-sha256") == base64(SHA256.hash(data: body)))
        #expect(put.header("x-amz-content-sha256") == SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined())
        #expect(put.header("If-None-Match") == "*")
        #expect(put.header("Content-Length") == "5000")
        do {
            _ = try await storage.load(name)
            Issue.record("bytes that do not match the stored SHA-256 were returned")
        } catch let error as S3Error {
            #expect(error.kind == .badDigest, "\(error)")
        }
        #expect(listener.requests.count == 3, "the mismatch was retried once")
        #expect(listener.requests.dropFirst().allSatisfy { $0.header("x-amz-checksum-mode") == "ENABLED" })
    }

    @Test("moto stores the SHA-256 sent with a PUT and returns it on GET, where it is checked")
    func checksumRoundTrip() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        let storage = try fixture.storage()
        let name = try ObjectName(.index, "sum")
        try await storage.save(name, contents: pattern(777))
        let request = S3Client.Request(method: .HEAD, key: storage.key(name), headers: [("x-amz-checksum-mode", "ENABLED")], operation: "HEAD")
        let head = try await storage.client.perform(request)
        #expect(head.header("x-amz-checksum-sha256") == base64(SHA256.hash(data: pattern(777))))
        #expect(try await storage.load(name) == pattern(777))
    }

    /// Object lock (item 6 of the issue) at the storage level only: `init --object-lock-days` and
    /// forget/prune's handling of locked objects are not done.
    @Test("with a retention, every object is written with COMPLIANCE lock headers (moto stores them on a single PUT); a bucket made with object lock accepts them")
    func retentionHeaders() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket(objectLock: true)
        var options = S3Fixture.fastOptions
        options.multipartThreshold = 6 << 20
        options.timeoutSeconds = 60
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: options, environment: Moto.environment, stats: S3RequestStats()),
                                retention: .init(mode: .compliance, days: 2))
        let small = try ObjectName(.snapshots, "locked")
        let big = try ObjectName(.data, "aa0big")
        try await storage.save(small, contents: [1, 2, 3])
        try await storage.save(big, contents: pattern(7 << 20))
        // moto 5.2.1 ignores lock headers on CreateMultipartUpload (AWS applies them): for the
        // multipart object the headers sent are checked, the stored lock only for the single PUT.
        let sent = Dictionary(storage.writeHeaders(), uniquingKeysWith: { a, _ in a })
        #expect(sent["x-amz-object-lock-mode"] == "COMPLIANCE" && sent["x-amz-object-lock-retain-until-date"] != nil)
        #expect(try await storage.load(big) == pattern(7 << 20))
        for name in [small] {
            let head = try await storage.client.perform(S3Client.Request(method: .HEAD, key: storage.key(name), operation: "HEAD"))
            #expect(head.header("x-amz-object-lock-mode") == "COMPLIANCE", "\(name)")
            let until = head.header("x-amz-object-lock-retain-until-date").flatMap { ISO8601DateFormatter().date(from: String($0.prefix(19)) + "Z") }
            let days = (until?.timeIntervalSinceNow ?? 0) / 86400
            #expect(days > 1.9 && days <= 2.01, "\(String(describing: head.header("x-amz-object-lock-retain-until-date")))")
        }
        #expect(try await storage.load(small) == [1, 2, 3])
    }
}
