import CofferCloud
import CofferKeys
@testable import CofferRepository
@testable import CofferS3
import CofferTestServers
import Foundation
import Testing

/// Object lock, prune's clean-up and batched removal against a real moto_server 5.2.1. What moto
/// enforces: a DELETE of a retained object *version* (AccessDenied); retention on a single PUT; a
/// bucket's object-lock configuration. What it does not: lock headers on CreateMultipartUpload
/// (S3Storage sets the retention again after completing), refusing to shorten a COMPLIANCE
/// retention (Coffer asks first and never sends a shorter one: tested on the requests sent).
@Suite("S3 object lock and prune's clean-up against a real moto_server", .serialized)
struct S3ObjectLockTests {
    static func head(_ storage: S3Storage, _ name: ObjectName) async throws -> S3Client.Response {
        try await storage.client.perform(S3Client.Request(method: .HEAD, key: storage.key(name), operation: "HEAD"))
    }

    static func lockedRepository(_ fixture: S3Fixture, days: Int = 3, mode: ObjectLock.Mode = .compliance,
                                 stats: S3RequestStats = S3RequestStats()) async throws -> (Repository, S3Storage, SymmetricKeyFile) {
        try await fixture.createBucket(objectLock: true)
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: S3Fixture.fastOptions,
                                                     environment: Moto.environment, stats: stats))
        let key = SymmetricKeyFile.generate()
        var options = Repository.CreateOptions()
        options.objectLock = ObjectLock(mode: mode, days: days)
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [key]), options: options)
        repo.packSize = 64 << 10
        return (repo, storage, key)
    }

    /// Whether `until` is `days` after a write made between `writtenAfter` and now (whole seconds on
    /// the wire: a second of slack). Not a fixed tolerance around the check's time: under load a
    /// check ran 131 s after its write.
    static func retained(_ until: Date, days: Double, writtenAfter start: Date) -> Bool {
        until >= start.addingTimeInterval(days * 86_400 - 1) && until <= Date().addingTimeInterval(days * 86_400 + 1)
    }

    static func blob(_ repo: Repository, _ bytes: [UInt8], kind: BlobKind = .data) async throws -> BlobID {
        let id = bytes.withUnsafeBytes { repo.blobID(of: $0) }
        try await repo.save(kind, id: id, plaintext: bytes)
        return id
    }

    static func snapshot(_ repo: Repository, tree: BlobID) async throws -> String {
        try await repo.saveSnapshot(SnapshotInfo(time: Date(), tree: tree, paths: ["/data"], hostname: "h", username: "u", tags: [],
                                                 parent: nil, programVersion: "test", summary: .init()))
    }

    @Test("init with object lock on a new bucket: the bucket has object lock; config, keys, packs, index and snapshots carry the retention, lock objects and restore-test results none")
    func retentionOnEveryObject() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        // Bounds from the clock around the writes, not a fixed tolerance from the check's time (the
        // check ran minutes after the writes under load: 131 s off once).
        let started = Date()
        let (repo, storage, _) = try await Self.lockedRepository(fixture, days: 3)
        #expect(try await storage.objectLockEnabled())
        let tree = try await Self.blob(repo, Array("tree".utf8), kind: .tree)
        _ = try await Self.blob(repo, pattern(50_000, seed: 3))
        try await repo.flush()
        _ = try await Self.snapshot(repo, tree: tree)
        let written = Date()
        var names: [ObjectName] = []
        for kind in [ObjectKind.config, .keys, .data, .index, .snapshots] { names += try await storage.listAll(kind).map(\.name) }
        #expect(names.count >= 6, "\(names)")
        for name in names {
            let head = try await Self.head(storage, name)
            #expect(head.header("x-amz-object-lock-mode") == "COMPLIANCE", "\(name)")
            let until = try #require(try await storage.retainUntil(name), "\(name)")
            #expect(Self.retained(until, days: 3, writtenAfter: started) && until <= written.addingTimeInterval(3 * 86_400 + 1),
                    "\(name): \(until), written between \(started) and \(written)")
        }
        // The listing carries LastModified: the lower bound forget/prune use without a HEAD.
        for info in try await storage.listAll(.snapshots) {
            let modified = try #require(info.modified)
            #expect(modified >= started.addingTimeInterval(-1) && modified <= written.addingTimeInterval(1), "\(modified)")
        }
        // Lock objects and restore-test results are written without retention.
        let lockName = try ObjectName(.locks, String(repeating: "ab", count: 32))
        try await storage.save(lockName, contents: [1])
        #expect(try await storage.retainUntil(lockName) == nil)
        let result = try ObjectName(.snapshots, String(repeating: "cd", count: 32) + "-restoretest-0123456789abcdef")
        try await storage.save(result, contents: [2])
        #expect(try await storage.retainUntil(result) == nil)
        try await storage.remove(lockName)
        try await storage.remove(result)
    }

    @Test("a multipart object gets its retention too (moto ignores it on CreateMultipartUpload: PutObjectRetention follows)")
    func multipartRetention() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket(objectLock: true)
        var options = S3Fixture.fastOptions
        options.multipartThreshold = 6 << 20
        options.timeoutSeconds = 60
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: options, environment: Moto.environment, stats: S3RequestStats()))
        storage.useObjectLock(ObjectLock(mode: .governance, days: 2))
        let big = try ObjectName(.data, "ee0big")
        let before = Date()
        try await storage.save(big, contents: pattern(7 << 20))
        let until = try #require(try await storage.retainUntil(big))
        #expect(Self.retained(until, days: 2, writtenAfter: before), "\(until)")
        #expect(try await Self.head(storage, big).header("x-amz-object-lock-mode") == "GOVERNANCE")
    }

    @Test("moto refuses to DELETE a retained object version; a DELETE without a version only adds a delete marker (which is why Coffer never sends one for a retained object)")
    func deleteOfLockedVersionRefused() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket(objectLock: true)
        let storage = try fixture.storage()
        storage.useObjectLock(ObjectLock(mode: .compliance, days: 1))
        let name = try ObjectName(.snapshots, "0123abcd")
        try await storage.save(name, contents: [7, 7, 7])
        let version = try #require(try await Self.head(storage, name).header("x-amz-version-id"))
        let deleteVersion = S3Client.Request(method: .DELETE, key: storage.key(name), query: [("versionId", version)], operation: "DELETE")
        let refused = try await storage.client.perform(deleteVersion)
        #expect(refused.status == 403 && refused.errorCode == "AccessDenied", "HTTP \(refused.status) \(refused.errorCode ?? "")")
        // Without a version: a delete marker; the object is gone from listings, the version stays.
        try await storage.remove(name)
        #expect(try await storage.listAll(.snapshots).isEmpty)
        let getVersion = S3Client.Request(method: .GET, key: storage.key(name), query: [("versionId", version)], operation: "GET")
        let old = try await storage.client.perform(getVersion)
        #expect(old.status == 200 && old.body == [7, 7, 7])
    }

    @Test("extendRetention moves retain-until (PutObjectRetention); the request sent names the mode and the date")
    func extendMovesRetention() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket(objectLock: true)
        let storage = try fixture.storage()
        storage.useObjectLock(ObjectLock(mode: .compliance, days: 1))
        let name = try ObjectName(.index, "4455")
        try await storage.save(name, contents: [1, 2])
        let before = try #require(try await storage.retainUntil(name))
        let target = Date().addingTimeInterval(9 * 86_400)
        #expect(try await storage.extendRetention(name, until: target))
        let after = try #require(try await storage.retainUntil(name))
        #expect(abs(after.timeIntervalSince(target)) < 2 && after > before.addingTimeInterval(7 * 86_400))
        // (A missing key: S3 answers 404 NoSuchKey, which is StorageError.notFound; moto 5.2.1
        // answers 500 there, so it is not tested against moto.)
        // Without a lock configured there is no mode to send: refused before any request.
        let plain = try fixture.storage()
        await #expect(throws: S3Error.self) { _ = try await plain.extendRetention(name, until: target) }
    }

    @Test("init with object lock on an existing bucket without it is refused with a clear error")
    func existingBucketWithoutLock() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket(objectLock: false)
        let storage = try fixture.storage()
        #expect(try await !storage.objectLockEnabled())
        do {
            try await storage.prepareBucket(objectLock: true)
            Issue.record("a bucket without object lock was accepted")
        } catch let error as S3Error {
            #expect(error.kind == .refused && error.description.contains("object lock"), "\(error)")
        }
        try await storage.prepareBucket(objectLock: false)  // without the lock: fine
    }

    @Test("forget and prune on a locked S3 repository: nothing retained is deleted (no DELETE sent); prune reports when it becomes removable; lock extend moves retain-until of what snapshots need")
    func forgetPruneExtend() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        let testStarted = Date()
        let stats = S3RequestStats()
        let (repo, storage, _) = try await Self.lockedRepository(fixture, days: 2, stats: stats)
        let tree = try await Self.blob(repo, Array("tree".utf8), kind: .tree)
        let kept = try await Self.blob(repo, pattern(70_000, seed: 5))
        try await repo.flush()
        let id = try await Self.snapshot(repo, tree: tree)
        // Data no snapshot needs (an interrupted backup's): its packs are candidates, but retained.
        _ = try await Self.blob(repo, pattern(70_000, seed: 6))
        _ = try await Self.blob(repo, pattern(70_000, seed: 7))
        try await repo.flush()
        let walk: @Sendable (Snapshot) async throws -> Set<BlobID> = { _ in [tree, kept] }
        // forget: the snapshot is retained.
        do {
            _ = try await repo.removeSnapshots([id], skipLocked: false)
            Issue.record("a retained snapshot was removed")
        } catch let error as RepositoryError {
            #expect("\(error)".contains("object lock until"), "\(error)")
        }
        let skipped = try await repo.removeSnapshots([id], skipLocked: true)
        #expect(skipped.removed.isEmpty && skipped.locked[id] != nil)
        let packs = try await storage.listAll(.data).count
        let report = try await repo.prune(usedBlobs: walk)
        #expect(report.lockedPacks >= 1 && report.packsRemoved == 0 && report.bytesRemoved == 0, "\(report)")
        let group = try #require(report.removableFrom.first)
        #expect(Self.retained(group.until, days: 2, writtenAfter: testStarted), "\(group)")
        #expect(try await storage.listAll(.data).count == packs)
        #expect(stats.requests["DELETE-MULTI"] == nil, "no DeleteObjects: \(stats.summary)")
        // No DELETE of a retained object either (it would leave a delete marker and hide it).
        #expect(try await storage.listAll(.snapshots).count == 1)
        #expect(try await storage.listAll(.index).count >= 2)
        #expect(try await repo.check(readData: .all).ok)
        // lock extend: everything the snapshot needs gets now + 10 days; twice sends nothing more.
        let snapshotName = try ObjectName(.snapshots, id)
        let extending = Date()
        let first = try await repo.extendLocks(days: 10, usedBlobs: walk)
        #expect(first.extended == first.objects && first.snapshots == 1 && first.packs >= 1, "\(first)")
        let until = try #require(try await storage.retainUntil(snapshotName))
        #expect(Self.retained(until, days: 10, writtenAfter: extending), "\(until)")
        let retentionPuts = stats.requests["PUT-RETENTION"] ?? 0
        let second = try await repo.extendLocks(days: 10, usedBlobs: walk)
        #expect(second.extended == 0 && second.alreadyRetained == second.objects, "\(second)")
        #expect((stats.requests["PUT-RETENTION"] ?? 0) == retentionPuts, "no retention sent the second time")
        // A shorter retention is never sent (moto would apply it; S3 refuses it).
        let shorter = try await repo.extendLocks(days: 1, usedBlobs: walk)
        #expect(shorter.extended == 0)
        #expect(try await storage.retainUntil(snapshotName) == until)
        // The packs only the unneeded blobs are in were not extended.
        for info in try await storage.listAll(.data) {
            let packUntil = try #require(try await storage.retainUntil(info.name))
            #expect(packUntil.timeIntervalSinceNow < 3 * 86_400 || packUntil.timeIntervalSinceNow > 9 * 86_400)
        }
        #expect(first.packs < packs, "the unneeded packs are not extended: \(first.packs) of \(packs)")
    }

    @Test("prune without object lock removes packs with batched DeleteObjects and aborts incomplete uploads older than the safe age, leaving a fresh one")
    func pruneBatchesAndAborts() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        try await fixture.createBucket()
        let stats = S3RequestStats()
        let storage = S3Storage(client: try S3Client(uri: try fixture.uri(), options: S3Fixture.fastOptions,
                                                     environment: Moto.environment, stats: stats))
        let repo = try await Repository.create(storage: storage, keys: KeyObjectRecipients(recipients: [SymmetricKeyFile.generate()]))
        repo.packSize = 64 << 10
        let tree = try await Self.blob(repo, Array("tree".utf8), kind: .tree)
        try await repo.flush()
        _ = try await Self.snapshot(repo, tree: tree)
        for seed in 20..<26 { _ = try await Self.blob(repo, pattern(70_000, seed: UInt8(seed))) }
        try await repo.flush()
        // Two uploads a crashed writer left. moto 5.2.1 reports a fixed Initiated time
        // (2010-11-10T20:48:33.000Z) for every upload, so against moto both are "old" and the
        // age split is tested below against a server answering with real times.
        func startUpload(_ name: String) async throws -> String {
            let request = S3Client.Request(method: .POST, key: storage.uri.objectKey("data/\(name.prefix(2))/\(name)"),
                                           query: [("uploads", "")], operation: "MULTIPART-CREATE")
            let response = try await storage.client.perform(request)
            return try #require(try S3XML.parse(response.body).childText("UploadId"))
        }
        _ = try await startUpload("aa01")
        _ = try await startUpload("bb02")
        #expect(try await storage.leftovers(olderThan: Date().addingTimeInterval(-86_400)).count == 2)
        let packs = try await storage.listAll(.data).count
        let report = try await repo.prune { _ in [tree] }
        #expect(report.leftoversRemoved == 2, "\(report)")
        #expect(try await storage.incompleteUploads().isEmpty)
        #expect(report.packsRemoved >= 2 && report.lockedPacks == 0, "\(report)")
        #expect(try await storage.listAll(.data).count == packs - report.packsRemoved - report.packsRepacked - report.unreferencedPacksRemoved)
        #expect((stats.requests["DELETE-MULTI"] ?? 0) >= 1, "\(stats.summary)")
        #expect((stats.requests["DELETE"] ?? 0) <= 4, "packs and index objects go in batches, not one DELETE each: \(stats.summary)")
        #expect(try await repo.check(readData: .all).ok)
    }

    @Test("leftovers on S3: only uploads under the prefix started before the cut-off; a fresh one (a backup running elsewhere), a foreign key and an unreadable time are left; removal is AbortMultipartUpload of that upload")
    func uploadAges() async throws {
        let now = Date()
        let listing = """
            <?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated>\
            <Upload><Key>repo/data/aa/aa01</Key><UploadId>OLD-1</UploadId><Initiated>\(S3Storage.iso8601(now.addingTimeInterval(-2 * 86_400)))</Initiated></Upload>\
            <Upload><Key>repo/data/bb/bb02</Key><UploadId>FRESH-2</UploadId><Initiated>\(S3Storage.iso8601(now.addingTimeInterval(-60)))</Initiated></Upload>\
            <Upload><Key>other/data/cc/cc03</Key><UploadId>FOREIGN-3</UploadId><Initiated>2020-01-01T00:00:00.000Z</Initiated></Upload>\
            <Upload><Key>repo/index/dd04</Key><UploadId>BADTIME-4</UploadId><Initiated>yesterday</Initiated></Upload>\
            </ListMultipartUploadsResult>
            """
        let listener = try LoggingListener { _, request in
            if request.method == "GET" { return .answer(status: 200, headers: [("Content-Type", "application/xml")], body: Array(listing.utf8)) }
            return .answer(status: 204, headers: [], body: [])
        }
        defer { listener.stop() }
        let storage = S3Storage(client: try S3Client(uri: try S3URI(parsing: "s3://bucket1/repo?AWS_REGION=us-east-1&AWS_ENDPOINT=\(listener.endpoint)"),
                                                     options: S3Fixture.fastOptions, environment: Moto.environment, stats: S3RequestStats()))
        let found = try await storage.leftovers(olderThan: now.addingTimeInterval(-86_400))
        #expect(found.count == 1 && found.first?.token == "repo/data/aa/aa01\nOLD-1", "\(found)")
        #expect(found.first.map { abs($0.since.timeIntervalSince(now) + 2 * 86_400) < 2 } == true)
        try await storage.removeLeftover(try #require(found.first))
        let aborts = listener.requests.filter { $0.method == "DELETE" }
        #expect(aborts.count == 1 && aborts.first?.path.contains("uploadId=OLD-1") == true && aborts.first?.path.contains("/repo/data/aa/aa01") == true,
                "\(aborts.map(\.path))")
        // A leftover naming a key outside the prefix is refused before any request.
        await #expect(throws: S3Error.self) {
            try await storage.removeLeftover(Leftover(location: "x", since: now, token: "other/data/cc/cc03\nFOREIGN-3"))
        }
        #expect(listener.requests.filter { $0.method == "DELETE" }.count == 1)
    }
}
