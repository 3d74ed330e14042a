import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

private func json(_ r: RunResult) -> Any? { try? JSONSerialization.jsonObject(with: Data(r.stdout)) }

extension RepoS3Tests.Setup {
    /// `coffer lock extend …` (a subcommand of a subcommand: the options go after both names).
    func lockExtend(_ args: [String], repo: String? = nil) throws -> RunResult {
        try coffer(["lock", "extend", "--key-file", key, "--repo", repo ?? uri()] + args, environment: environment)
    }
}

/// Object lock through the real binary against a real moto_server (the retention on each object,
/// moto's refusals and the requests sent are checked in CofferS3Tests/S3ObjectLockTests).
@Suite("object lock on s3:// repositories through the CLI", .serialized)
struct RepoS3LockTests {
    @Test("init --object-lock-days on a new bucket; forget keeps retained snapshots (policy) or refuses (explicit); prune and lock extend report in text and JSON; check passes")
    func lockedRepository() throws {
        let s = try RepoS3Tests.Setup(files: 2)
        defer { s.moto.stop() }
        let initialized = try s.run(["init", "--object-lock-days", "3", "--json"])
        #expect(initialized.status == 0, "init: \(initialized.stderr)")
        let lock = (json(initialized) as? [String: Any])?["object_lock"] as? [String: Any]
        #expect(lock?["days"] as? Int == 3 && lock?["mode"] as? String == "compliance", "\(initialized.stdoutText)")
        #expect(try s.run(["backup", s.source]).status == 0)
        _ = try s.scratch.write(pseudoRandom(150_000, seed: 42), "src/sub/f0.bin")
        #expect(try s.run(["backup", s.source]).status == 0)
        #expect(try s.snapshotCount() == 2)

        let snapshots = try s.run(["snapshots", "--json"])
        let ids = ((json(snapshots) as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        let oldest = try #require(ids.first)
        let explicit = try s.run(["forget", oldest])
        #expect(explicit.status == 64, "explicit forget of a retained snapshot: \(explicit.status) \(explicit.stderr)")
        #expect(explicit.stderr.contains("object lock until"), "\(explicit.stderr)")
        let dry = try s.run(["forget", "--keep-last", "1", "--dry-run", "--json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(((json(dry) as? [String: Any])?["locked"] as? [Any])?.count == 1, "\(dry.stdoutText)")
        let forgot = try s.run(["forget", "--keep-last", "1", "--prune"])
        #expect(forgot.status == 0, "forget: \(forgot.stderr)")
        #expect(forgot.stdoutText.contains("under object lock until"), "\(forgot.stdoutText)")
        #expect(forgot.stdoutText.contains("1 kept under object lock"), "\(forgot.stdoutText)")
        #expect(try s.snapshotCount() == 2, "the retained snapshot is still listed")

        let pruned = try s.run(["prune", "--json"])
        #expect(pruned.status == 0, "prune: \(pruned.stderr)")
        let report = json(pruned) as? [String: Any]
        #expect(report?["locked_packs"] as? Int == 0 && report?["removable_from"] as? [Any] != nil, "\(pruned.stdoutText)")
        #expect(report?["leftovers_removed"] as? Int == 0)

        let extended = try s.lockExtend(["--days", "5", "--json"])
        #expect(extended.status == 0, "lock extend: \(extended.stderr)")
        let first = json(extended) as? [String: Any]
        let objects = first?["objects"] as? Int ?? 0
        #expect(objects >= 8 && first?["extended"] as? Int == objects && first?["snapshots"] as? Int == 2, "\(extended.stdoutText)")
        #expect(first?["days"] as? Int == 5 && first?["until"] is String)
        let again = try s.lockExtend(["--days", "5"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdoutText.contains("extended 0, already retained that long \(objects)"), "\(again.stdoutText)")
        let checked = try s.run(["check", "--read-data"])
        #expect(checked.status == 0, "check: \(checked.stderr)")
    }

    @Test("--object-lock-mode governance is recorded; bad days, bad modes, a local repository and a bucket without object lock are refused; lock extend without a lock is a usage error")
    func badInput() throws {
        let s = try RepoS3Tests.Setup(files: 1)
        defer { s.moto.stop() }
        for days in ["0", "-1", "36501", "99999999999999999999", "two"] {
            let r = try s.run(["init", "--object-lock-days", days], repo: s.uri("bad"))
            #expect(r.status == 64, "--object-lock-days \(days): \(r.status) \(r.stderr)")
        }
        #expect(try s.run(["init", "--object-lock-days", "2", "--object-lock-mode", "legal-hold"], repo: s.uri("m1")).status == 64)
        #expect(try s.run(["init", "--object-lock-mode", "governance"], repo: s.uri("m2")).status == 64)
        let local = try s.run(["init", "--object-lock-days", "2"], repo: s.scratch.file("localrepo"))
        #expect(local.status == 64 && local.stderr.contains("s3://"), "\(local.stderr)")
        #expect(!s.scratch.exists("localrepo"), "nothing made")
        // A bucket made without object lock (by a plain init) cannot hold a locked repository.
        #expect(try s.run(["init"], repo: s.uri("plain")).status == 0)
        let refused = try s.run(["init", "--object-lock-days", "2"], repo: s.uri("locked"))
        #expect(refused.status == 5 && refused.stderr.contains("object lock"), "\(refused.status) \(refused.stderr)")
        let noLock = try s.lockExtend([], repo: s.uri("plain"))
        #expect(noLock.status == 64 && noLock.stderr.contains("without object lock"), "\(noLock.stderr)")
        #expect(try s.lockExtend(["--days", "0"], repo: s.uri("plain")).status == 64)

        let other = try RepoS3Tests.Setup(files: 1)
        defer { other.moto.stop() }
        let governance = try other.run(["init", "--object-lock-days", "1", "--object-lock-mode", "governance"])
        #expect(governance.status == 0, "\(governance.stderr)")
        #expect(governance.stdoutText.contains("object lock: governance, 1 day"), "\(governance.stdoutText)")
        #expect(try other.run(["backup", other.source]).status == 0)
        let extended = try other.lockExtend(["--json"])
        #expect(extended.status == 0 && (json(extended) as? [String: Any])?["days"] as? Int == 1, "\(extended.stderr)")
    }
}

/// Leftovers of killed writes in a local repository (`.tmp-…` files): never listed or used, and
/// removed by prune once older than the safe age (24 hours).
@Suite("prune removes the temporary files of killed writes", .serialized)
struct RepoLeftoverTests {
    /// `.tmp-` files anywhere in the repository.
    static func temporaries(_ repo: String) -> [String] {
        (FileManager.default.enumerator(atPath: repo)?.allObjects as? [String] ?? [])
            .filter { ($0 as NSString).lastPathComponent.hasPrefix(".tmp-") }.sorted()
    }

    @Test("a backup killed with SIGKILL while writing leaves a .tmp- file: check ignores it, a fresh one survives prune, one older than 24 h is removed")
    func killedWriteLeftover() throws {
        let scratch = Scratch()
        let key = try scratch.keygen()
        let repo = scratch.file("repo")
        #expect(try coffer(["init", "--key-file", key, "--repo", repo]).status == 0)
        _ = try scratch.write(pseudoRandom(48 << 20, seed: 5), "src/big.bin")
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        env["COFFER_REPOSITORY"] = repo
        // Watch the repository and kill the backup the moment a temporary file appears (a save
        // between creating and publishing: writing and fsyncing an 8 MiB pack takes milliseconds).
        var leftovers: [String] = []
        var attempt = 0
        while leftovers.isEmpty && attempt < 10 {
            let pid = try spawnQuietly([cofferBinary, "backup", "--key-file", key, scratch.file("src")], environment: env)
            var polls = 0, reaped = false
            while Self.temporaries(repo).isEmpty && polls < 120_000 {
                usleep(200)
                polls += 1
                if polls % 500 == 0, waitpid(pid, nil, WNOHANG) == pid { reaped = true; break }
            }
            if !reaped {
                kill(pid, SIGKILL)
                _ = waitForTermination(pid)
            }
            leftovers = Self.temporaries(repo)
            attempt += 1
        }
        try #require(!leftovers.isEmpty, "no kill landed inside a write in \(attempt) attempts")
        let check = try coffer(["check", "--key-file", key, "--repo", repo])
        #expect(check.status == 0, "check ignores the leftover: \(check.stderr)")
        // Fresh: another writer's save may be in progress: prune leaves it.
        let fresh = try coffer(["prune", "--key-file", key, "--repo", repo, "--json"])
        #expect(fresh.status == 0, "\(fresh.stderr)")
        #expect((json(fresh) as? [String: Any])?["leftovers_removed"] as? Int == 0, "\(fresh.stdoutText)")
        #expect(Self.temporaries(repo) == leftovers)
        // Older than 24 hours: removed.
        let old = Int(Date().timeIntervalSince1970) - 25 * 3600
        for path in leftovers {
            var times = [timespec(tv_sec: old, tv_nsec: 0), timespec(tv_sec: old, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, repo + "/" + path, &times, 0) == 0)
        }
        let dry = try coffer(["prune", "--key-file", key, "--repo", repo, "--dry-run"])
        #expect(dry.stdoutText.contains("would remove \(leftovers.count) leftover"), "\(dry.stdoutText)")
        #expect(Self.temporaries(repo) == leftovers)
        let pruned = try coffer(["prune", "--key-file", key, "--repo", repo])
        #expect(pruned.status == 0, "\(pruned.stderr)")
        #expect(pruned.stdoutText.contains("removed \(leftovers.count) leftover"), "\(pruned.stdoutText)")
        #expect(Self.temporaries(repo).isEmpty)
        #expect(try coffer(["check", "--key-file", key, "--repo", repo]).status == 0)
        #expect(try coffer(["backup", "--key-file", key, "--repo", repo, scratch.file("src")]).status == 0)
    }
}
