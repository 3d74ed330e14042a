import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Repositories on S3 through the real binary, against a real moto_server on 127.0.0.1:
/// init/backup/restore/check/forget/prune round trips, injected faults, concurrent writers, kill -9.
@Suite("s3:// repositories through the CLI", .serialized)
struct RepoS3Tests {
    /// moto, a key file, a source tree, and the environment every command gets.
    struct Setup {
        let scratch = Scratch()
        let moto: TestServer
        let key: String
        let source: String
        var environment: [String: String]

        init(files: Int = 6) throws {
            moto = try TestServer.moto()
            key = try scratch.keygen()
            source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
            _ = try scratch.write(Array("hello\n".utf8), "src/a.txt")
            _ = try scratch.write([], "src/empty")
            for i in 0..<files {
                _ = try scratch.write(pseudoRandom(200_000 + i * 50_000, seed: UInt64(i + 1)), "src/sub/f\(i).bin")
            }
            // A HOME without ~/.aws: credentials only from the environment.
            environment = ["HOME": scratch.file("home"), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "COFFER_S3_TIMEOUT": "5"]
        }

        func uri(_ prefix: String = "repo", endpoint: String? = nil) -> String {
            "s3://coffer-cli/\(prefix)?AWS_REGION=us-east-1&AWS_ENDPOINT=\(endpoint ?? moto.endpoint)"
        }

        @discardableResult
        func run(_ args: [String], repo: String? = nil, extra: [String: String] = [:]) throws -> RunResult {
            try coffer([args[0], "--key-file", key, "--repo", repo ?? uri()] + args.dropFirst(),
                       environment: environment.merging(extra) { $1 })
        }

        func snapshotCount(repo: String? = nil) throws -> Int {
            let r = try run(["snapshots", "--json"], repo: repo)
            #expect(r.status == 0, "snapshots: \(r.stderr)")
            return ((try? JSONSerialization.jsonObject(with: Data(r.stdout))) as? [[String: Any]])?.count ?? -1
        }

        /// The restored tree under `target` equals the source.
        func expectRestored(_ target: String) throws {
            let restoredRoot = target + source
            for name in ["a.txt", "empty"] + (0..<6).map({ "sub/f\($0).bin" }) where scratch.exists("src/\(name)") {
                let original = try scratch.read("src/\(name)")
                let restored = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: "\(restoredRoot)/\(name)"))) ?? Data([0xFF]))
                #expect(restored == original, "\(name)")
            }
        }
    }

    @Test("init, backup, snapshots, restore, check --read-data, forget --prune, check on s3:// (bucket made by init)")
    func roundTrip() throws {
        let s = try Setup()
        defer { s.moto.stop() }
        let initialized = try s.run(["init"])
        #expect(initialized.status == 0, "init: \(initialized.stderr)")
        #expect(initialized.stdoutText.contains("s3://coffer-cli/repo"))
        #expect(try s.run(["init"]).status != 0, "a second init on the same prefix is refused")
        let first = try s.run(["backup", s.source, "--connections", "4"])
        #expect(first.status == 0, "backup: \(first.stderr)")
        _ = try s.scratch.write(pseudoRandom(300_000, seed: 99), "src/sub/f0.bin")
        let second = try s.run(["backup", s.source])
        #expect(second.status == 0, "backup: \(second.stderr)")
        #expect(try s.snapshotCount() == 2)
        let restored = try s.run(["restore", "latest", "--target", s.scratch.file("out")])
        #expect(restored.status == 0, "restore: \(restored.stderr)")
        try s.expectRestored(s.scratch.file("out"))
        let checked = try s.run(["check", "--read-data"])
        #expect(checked.status == 0, "check: \(checked.stderr)")
        let forgot = try s.run(["forget", "--keep-last", "1", "--prune"])
        #expect(forgot.status == 0, "forget: \(forgot.stderr)")
        #expect(try s.snapshotCount() == 1)
        let pruned = try s.run(["prune"])
        #expect(pruned.status == 0, "prune: \(pruned.stderr)")
        #expect(try s.run(["check", "--read-data"]).status == 0)
        let again = try s.run(["restore", "latest", "--target", s.scratch.file("out2")])
        #expect(again.status == 0, "restore: \(again.stderr)")
        try s.expectRestored(s.scratch.file("out2"))
        // Another prefix in the same bucket is another repository.
        #expect(try s.run(["init"], repo: s.uri("other")).status == 0)
        #expect(try s.snapshotCount(repo: s.uri("other")) == 0)
    }

    @Test("COFFER_S3_STATS=1 reports the requests; COFFER_REPOSITORY takes an s3:// URI too")
    func statsAndEnvironment() throws {
        let s = try Setup(files: 2)
        defer { s.moto.stop() }
        let made = try coffer(["init", "--key-file", s.key], environment: s.environment.merging(["COFFER_REPOSITORY": s.uri(), "COFFER_S3_STATS": "1"]) { $1 })
        #expect(made.status == 0, "\(made.stderr)")
        #expect(made.stderr.contains("s3 requests: ") && made.stderr.contains("PUT="), "\(made.stderr)")
    }

    @Test("bad URIs are usage errors (64); AUTH=specified works with a warning and never shows the secret; wrong credentials fail with exit 5")
    func urisAndCredentials() throws {
        let s = try Setup(files: 1)
        defer { s.moto.stop() }
        for bad in ["s3://x?AWS_REGION=us-east-1", "s3://bucket1", "s3://bucket1?AWS_REGION=us-east-1&aws_secret_access_key=Hunter2Secret"] {
            let r = try s.run(["snapshots"], repo: bad)
            #expect(r.status == Exit.usage, "\(bad): \(r.stderr)")
            #expect(!r.stderr.contains("Hunter2Secret"))
        }
        #expect(try s.run(["snapshots", "--connections", "0"]).status == Exit.usage)
        let specified = s.uri() + "&AUTH=specified&AWS_ACCESS_KEY_ID=testing&AWS_SECRET_ACCESS_KEY=Hunter2Secret"
        let r = try s.run(["init"], repo: specified, extra: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("AUTH=specified") && r.stderr.contains("shell history"), "\(r.stderr)")
        #expect(!r.stderr.contains("Hunter2Secret") && !r.stdoutText.contains("Hunter2Secret"))
        let none = try s.run(["snapshots"], extra: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        #expect(none.status == Exit.io, "\(none.stderr)")
        #expect(none.stderr.contains("no credentials"), "\(none.stderr)")
    }

    @Test("a SigV4-checking server: the right key makes the repository; a wrong secret fails cleanly (5) without secrets in the message")
    func signatures() async throws {
        var s = try Setup(files: 1)
        s.moto.stop()
        let moto = try TestServer.moto(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"])
        defer { moto.stop() }
        let user = try await Moto.createSigningUserS3(moto)
        s.environment["AWS_ACCESS_KEY_ID"] = user.accessKeyID
        s.environment["AWS_SECRET_ACCESS_KEY"] = user.secretAccessKey
        let uri = s.uri(endpoint: moto.endpoint)
        // init writes without listing; moto 5.2.1 in IAM mode refuses every ListObjectsV2 with a
        // '/' in its prefix (boto3's too), so commands that list are tested on an unchecked server.
        let made = try s.run(["init"], repo: uri)
        #expect(made.status == 0, "\(made.stderr)")
        let wrong = try s.run(["snapshots"], repo: uri, extra: ["AWS_SECRET_ACCESS_KEY": user.secretAccessKey + "x"])
        #expect(wrong.status == Exit.io, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("bad credentials") && wrong.stderr.contains("SignatureDoesNotMatch"), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains(user.secretAccessKey))
    }

    @Test("through a proxy injecting 500, SlowDown, resets, stalls, cut answers and lost answers: backup, restore and check succeed, and check passes afterwards without the proxy")
    func faultInjection() throws {
        let s = try Setup()
        defer { s.moto.stop() }
        let proxy = try FaultProxy(upstreamPort: s.moto.port, period: 4, stallSeconds: 3)
        defer { proxy.stop() }
        let flaky = s.uri(endpoint: proxy.endpoint)
        let env = ["COFFER_S3_TIMEOUT": "2", "COFFER_S3_ATTEMPTS": "10"]
        let made = try s.run(["init", "--pack-size", "1M"], repo: flaky, extra: env)
        #expect(made.status == 0, "init: \(made.stderr)")
        let backup = try s.run(["backup", s.source], repo: flaky, extra: env)
        #expect(backup.status == 0, "backup: \(backup.stderr)")
        let restore = try s.run(["restore", "latest", "--target", s.scratch.file("out")], repo: flaky, extra: env)
        #expect(restore.status == 0, "restore: \(restore.stderr)")
        try s.expectRestored(s.scratch.file("out"))
        let check = try s.run(["check", "--read-data"], repo: flaky, extra: env)
        #expect(check.status == 0, "check: \(check.stderr)")
        #expect(proxy.injected.count == 6, "every kind of fault was injected: \(proxy.injected)")
        #expect(proxy.totalInjected >= 10)
        let clean = try s.run(["check", "--read-data"])
        #expect(clean.status == 0, "check without the proxy: \(clean.stderr)")
        #expect(try s.snapshotCount() == 1)
    }

    @Test("a server that keeps failing: the command fails cleanly with exit 5, naming the operation, and the repository stays consistent")
    func failsCleanly() throws {
        let s = try Setup(files: 2)
        defer { s.moto.stop() }
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["backup", s.source]).status == 0)
        // Every second request fails with 500, and only 1 attempt is allowed.
        let proxy = try FaultProxy(upstreamPort: s.moto.port, period: 2, faults: [.internalError])
        defer { proxy.stop() }
        _ = try s.scratch.write(pseudoRandom(500_000, seed: 1234), "src/new.bin")
        let failed = try s.run(["backup", s.source], repo: s.uri(endpoint: proxy.endpoint), extra: ["COFFER_S3_ATTEMPTS": "1"])
        #expect(failed.status == Exit.io, "\(failed.stderr)")
        #expect(failed.stderr.contains("S3 server error") && failed.stderr.contains("InternalError"), "\(failed.stderr)")
        #expect(try s.run(["check", "--read-data"]).status == 0)
        #expect(try s.run(["backup", s.source]).status == 0)
        #expect(try s.snapshotCount() == 2)
    }

    @Test("four concurrent backup processes into one bucket all succeed; check passes and all four snapshots are there")
    func concurrentWriters() throws {
        let s = try Setup(files: 3)
        defer { s.moto.stop() }
        #expect(try s.run(["init"]).status == 0)
        for i in 0..<4 { _ = try s.scratch.write(pseudoRandom(400_000, seed: UInt64(100 + i)), "host\(i)/data.bin") }
        let results = LockedResults()
        let commands = (0..<4).map { i in
            ["backup", "--key-file", s.key, "--repo", s.uri(), "--host", "host\(i)", s.scratch.file("host\(i)"), s.source]
        }
        let environment = s.environment
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            results.set(i, try? coffer(commands[i], environment: environment))
        }
        for i in 0..<4 {
            let r = results.get(i)
            #expect(r?.status == 0, "backup \(i): \(r?.stderr ?? "not run")")
        }
        #expect(try s.snapshotCount() == 4)
        let check = try s.run(["check", "--read-data"])
        #expect(check.status == 0, "check: \(check.stderr)")
    }

    @Test("kill -9 in the middle of an upload: check passes, a new backup succeeds, check passes again")
    func killedUpload() throws {
        let s = try Setup(files: 1)
        defer { s.moto.stop() }
        #expect(try s.run(["init", "--pack-size", "1M"]).status == 0)
        _ = try s.scratch.write(pseudoRandom(24 << 20, seed: 77), "src/big.bin")
        // A proxy without faults: it counts the requests, so the kill lands after some uploads.
        let proxy = try FaultProxy(upstreamPort: s.moto.port, period: 0)
        defer { proxy.stop() }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        env.merge(s.environment) { $1 }
        let pid = try spawnQuietly([cofferBinary, "backup", "--key-file", s.key, "--repo", s.uri(endpoint: proxy.endpoint), s.source], environment: env)
        var waited = 0
        while proxy.requests < 12 && waited < 600 { usleep(50_000); waited += 1 }
        #expect(proxy.requests >= 12, "the backup made uploads before the kill")
        kill(pid, SIGKILL)
        let ended = waitForTermination(pid)
        #expect(!ended.exited && ended.code == SIGKILL, "killed, not finished: \(ended)")
        #expect(try s.snapshotCount() == 0)
        let check = try s.run(["check"])
        #expect(check.status == 0, "check after kill -9: \(check.stderr)")
        let backup = try s.run(["backup", s.source])
        #expect(backup.status == 0, "backup after kill -9: \(backup.stderr)")
        let after = try s.run(["check", "--read-data"])
        #expect(after.status == 0, "check: \(after.stderr)")
        let restored = try s.run(["restore", "latest", "--target", s.scratch.file("out")])
        #expect(restored.status == 0)
        #expect([UInt8]((try? Data(contentsOf: URL(fileURLWithPath: s.scratch.file("out") + s.source + "/big.bin"))) ?? Data()) == pseudoRandom(24 << 20, seed: 77))
    }
}

final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Int: RunResult] = [:]
    func set(_ i: Int, _ r: RunResult?) { lock.withLock { results[i] = r } }
    func get(_ i: Int) -> RunResult? { lock.withLock { results[i] } }
}

/// Starts `argv` with the given environment, no input and no output; returns its pid.
func spawnQuietly(_ argv: [String], environment: [String: String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    try closeInherited(&actions)
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .ENOENT) }
    return pid
}
