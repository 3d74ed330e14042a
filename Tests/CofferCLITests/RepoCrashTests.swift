import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// kill -9 campaigns on the repository (issue 12, item 8): `backup` and `prune` are killed at 20
/// random moments each (uniform over a measured uninterrupted run); after every kill `check` must
/// pass and a new backup must succeed; at the end a restore equals the source tree.
/// Seed: COFFER_CAMPAIGN_SEED (printed, so a failure replays).
@Suite(.serialized) struct RepoCrashTests {
    static let kills = 20
    static let seed: UInt64 = ProcessInfo.processInfo.environment["COFFER_CAMPAIGN_SEED"].flatMap { UInt64($0) }
        ?? UInt64(Date().timeIntervalSince1970 * 1000)

    /// A repository (1 MiB packs, so a backup of the tree writes several) and a source tree of
    /// ~5 MB that `mutate` partly rewrites: files that never change (their packs become partly
    /// used when the others are forgotten, so prune repacks), files rewritten with new random
    /// content, and small compressible files.
    final class Campaign {
        let scratch = Scratch()
        let key: String
        let repo: String
        let source: String
        var rng: SplitMix
        var generation: UInt64 = 0

        init(seed: UInt64) throws {
            rng = SplitMix(seed: seed)
            key = try scratch.keygen()
            repo = scratch.file("repo")
            source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
            for i in 0..<3 { _ = try scratch.write(Self.random(400_000 + i * 50_000, seed: seed &+ UInt64(i)), "src/keep/k\(i).bin") }
            _ = try scratch.write(Array("unchanged\n".utf8), "src/keep/note.txt", mode: 0o640)
            try FileManager.default.createDirectory(atPath: scratch.file("src/empty-dir"), withIntermediateDirectories: true)
            symlink("keep/note.txt", scratch.file("src/link"))
            try mutate()
            let r = try run(["init", "--pack-size", "1M"])
            #expect(r.status == Exit.ok, "init: \(r.stderr)")
        }

        /// Rewrites the changing part of the tree with new content (about 3.5 MB of new data).
        func mutate() throws {
            generation += 1
            let g = generation
            for i in 0..<5 {
                let size = 300_000 + rng.below(500_000)
                _ = try scratch.write(Self.random(size, seed: rng.next()), "src/change/f\(i).bin")
            }
            for i in 0..<30 {
                let line = "generation \(g) file \(i) " + String(repeating: "compressible text ", count: 3)
                _ = try scratch.write(Array(String(repeating: line + "\n", count: 200 + i * 10).utf8), "src/small/s\(i).txt")
            }
        }

        @discardableResult
        func run(_ args: [String]) throws -> RunResult {
            try coffer(arguments(args))
        }

        func arguments(_ args: [String]) -> [String] { [args[0], "--repo", repo, "--key-file", key] + args.dropFirst() }

        /// Starts the command, kills it with SIGKILL after `micros` µs; true when it was killed
        /// (false: it had finished already).
        func killed(_ args: [String], after micros: UInt32) throws -> Bool {
            let pid = try spawnInBackground([cofferBinary] + arguments(args), stdinPath: "/dev/null")
            usleep(micros)
            kill(pid, SIGKILL)
            let (exited, code) = waitForTermination(pid)
            if exited && code != 0 { Issue.record("\(args[0]) exited \(code) before it was killed") }
            return !exited && code == SIGKILL
        }

        /// Files a killed run left in the repository: `.tmp-` files (never listed, never loaded).
        func temporaries() -> Int {
            ((FileManager.default.enumerator(atPath: repo)?.allObjects as? [String]) ?? [])
                .filter { ($0 as NSString).lastPathComponent.hasPrefix(".tmp-") }.count
        }

        func snapshotCount() throws -> Int {
            let r = try run(["snapshots", "--json"])
            #expect(r.status == Exit.ok, "snapshots: \(r.stderr)")
            return ((try? JSONSerialization.jsonObject(with: Data(r.stdout))) as? [Any])?.count ?? -1
        }

        /// Restores `latest` and compares it with the source: every file's content and permission
        /// bits, every link's target, every directory, and nothing more.
        func restoreEqualsSource() throws -> [String] {
            let target = scratch.file("restored-\(generation)")
            let r = try run(["restore", "latest", "--target", target])
            guard r.status == Exit.ok else { return ["restore exited \(r.status): \(r.stderr.prefix(300))"] }
            return Self.compare(source, target + source)
        }

        static func compare(_ a: String, _ b: String) -> [String] {
            let fm = FileManager.default
            let left = Set((fm.enumerator(atPath: a)?.allObjects as? [String]) ?? [])
            let right = Set((fm.enumerator(atPath: b)?.allObjects as? [String]) ?? [])
            var problems: [String] = []
            if left != right { problems.append("entries differ: only in source \(left.subtracting(right).sorted()), only restored \(right.subtracting(left).sorted())") }
            for name in left.intersection(right).sorted() {
                var sa = stat(), sb = stat()
                guard lstat(a + "/" + name, &sa) == 0, lstat(b + "/" + name, &sb) == 0 else { problems.append("\(name): lstat failed"); continue }
                if sa.st_mode != sb.st_mode { problems.append("\(name): mode \(String(sa.st_mode, radix: 8)) restored as \(String(sb.st_mode, radix: 8))") }
                switch sa.st_mode & S_IFMT {
                case S_IFREG:
                    if fm.contents(atPath: a + "/" + name) != fm.contents(atPath: b + "/" + name) { problems.append("\(name): content differs") }
                case S_IFLNK:
                    if (try? fm.destinationOfSymbolicLink(atPath: a + "/" + name)) != (try? fm.destinationOfSymbolicLink(atPath: b + "/" + name)) {
                        problems.append("\(name): link target differs")
                    }
                default: break
                }
            }
            return problems
        }

        /// Fast seeded bytes (xorshift64*, eight bytes a step): new content that does not deduplicate.
        static func random(_ count: Int, seed: UInt64) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            var s = seed | 1
            out.withUnsafeMutableBytes { raw in
                var i = 0
                while i < count {
                    s ^= s >> 12; s ^= s << 25; s ^= s >> 27
                    var word = s &* 2685821657736338717
                    let n = min(8, count - i)
                    withUnsafeBytes(of: &word) { w in
                        for k in 0..<n { raw[i + k] = w[k] }
                    }
                    i += n
                }
            }
            return out
        }
    }

    /// After a kill: `check` passes (warnings allowed: packs an interrupted run left) and a new
    /// backup succeeds. Returns the problems found and whether check warned (leftovers).
    static func afterKill(_ c: Campaign, label: String) throws -> (problems: [String], leftovers: Bool) {
        var problems: [String] = []
        let check = try c.run(["check"])
        if check.status != Exit.ok { problems.append("\(label): check exited \(check.status): \(check.stdoutText.suffix(600)) \(check.stderr.prefix(300))") }
        let backup = try c.run(["backup", "--host", "crash", c.source])
        if backup.status != Exit.ok { problems.append("\(label): the next backup exited \(backup.status): \(backup.stderr.prefix(400))") }
        return (problems, check.stdoutText.contains("warning:"))
    }

    static func timed(_ body: () throws -> Void) rethrows -> Double {
        let begin = Date()
        try body()
        return Date().timeIntervalSince(begin)
    }

    @Test("kill -9 at 20 random moments of 'backup': check passes after each, the next backup succeeds, a final restore equals the source")
    func killBackup() throws {
        let c = try Campaign(seed: Self.seed ^ 0xB4C)
        // An uninterrupted run of the same size as the killed ones, timed.
        #expect(try c.run(["backup", "--host", "crash", c.source]).status == Exit.ok)
        try c.mutate()
        var failed: RunResult?
        var duration = try Self.timed { failed = try c.run(["backup", "--host", "crash", c.source]) }
        #expect(failed?.status == Exit.ok, "backup: \(failed?.stderr ?? "")")
        var snapshots = try c.snapshotCount()
        var killed = 0, finished = 0, committed = 0, leftovers = 0, attempts = 0, temporaries = 0
        var problems: [String] = []
        while killed < Self.kills && attempts < 3 * Self.kills {
            attempts += 1
            try c.mutate()
            let micros = UInt32(Double(c.rng.below(1000)) / 1000 * duration * 1e6)
            let label = "backup kill \(attempts) after \(micros) µs (seed \(Self.seed))"
            let before = c.temporaries()
            if try c.killed(["backup", "--host", "crash", c.source], after: micros) { killed += 1 } else { finished += 1; duration *= 0.8 }
            if c.temporaries() > before { temporaries += 1 }
            // The snapshot is the commit point: the killed run added one or none.
            let now = try c.snapshotCount()
            if now != snapshots && now != snapshots + 1 { problems.append("\(label): \(snapshots) snapshots became \(now)") }
            if now == snapshots + 1 { committed += 1 }
            let after = try Self.afterKill(c, label: label)
            problems += after.problems
            if after.leftovers { leftovers += 1 }
            snapshots = now + 1
        }
        problems += try c.restoreEqualsSource()
        let full = try c.run(["check", "--read-data"])
        if full.status != Exit.ok { problems.append("final check --read-data exited \(full.status): \(full.stdoutText.suffix(600))") }
        print("kill campaign backup: seed \(Self.seed), run \(String(format: "%.0f", duration * 1000)) ms, \(killed) killed (\(committed) after the commit, \(leftovers) leaving unreferenced packs, \(temporaries) leaving temporary files), \(finished) finished first")
        #expect(killed >= Self.kills, "only \(killed) runs were killed")
        #expect(problems.isEmpty, "\(problems.count) problems:\n\(problems.prefix(10).joined(separator: "\n"))")
    }

    @Test("kill -9 at 20 random moments of 'prune' after a forget: check passes after each, the next backup succeeds, a final restore equals the source")
    func killPrune() throws {
        let c = try Campaign(seed: Self.seed ^ 0x9E7)
        /// Two backups with changes, the older forgotten: prune then removes and repacks packs.
        func prepare() throws {
            try c.mutate()
            #expect(try c.run(["backup", "--host", "crash", c.source]).status == Exit.ok)
            try c.mutate()
            #expect(try c.run(["backup", "--host", "crash", c.source]).status == Exit.ok)
            let forget = try c.run(["forget", "--keep-last", "1"])
            #expect(forget.status == Exit.ok, "forget: \(forget.stderr)")
        }
        try prepare()
        var report: RunResult?
        var duration = try Self.timed { report = try c.run(["prune", "--json"]) }
        #expect(report?.status == Exit.ok, "prune: \(report?.stderr ?? "")")
        let json = (try? JSONSerialization.jsonObject(with: Data(report?.stdout ?? []))) as? [String: Any]
        #expect((json?["packs_repacked"] as? Int ?? 0) > 0, "the campaign's prune should repack: \(json ?? [:])")
        var killed = 0, finished = 0, leftovers = 0, attempts = 0, temporaries = 0
        var problems: [String] = []
        while killed < Self.kills && attempts < 3 * Self.kills {
            attempts += 1
            try prepare()
            let micros = UInt32(Double(c.rng.below(1000)) / 1000 * duration * 1e6)
            let label = "prune kill \(attempts) after \(micros) µs (seed \(Self.seed))"
            let before = c.temporaries()
            if try c.killed(["prune"], after: micros) { killed += 1 } else { finished += 1; duration *= 0.8 }
            if c.temporaries() > before { temporaries += 1 }
            let after = try Self.afterKill(c, label: label)
            problems += after.problems
            if after.leftovers { leftovers += 1 }
            // Forget left one snapshot and the next backup added one: prune never removes snapshots.
            let count = try c.snapshotCount()
            if count != 2 { problems.append("\(label): \(count) snapshots, expected 2") }
        }
        let done = try c.run(["prune"])
        if done.status != Exit.ok { problems.append("final prune exited \(done.status): \(done.stderr.prefix(300))") }
        let full = try c.run(["check", "--read-data"])
        if full.status != Exit.ok || full.stdoutText.contains("warning:") {
            problems.append("final check --read-data after prune exited \(full.status): \(full.stdoutText.suffix(600))")
        }
        problems += try c.restoreEqualsSource()
        print("kill campaign prune: seed \(Self.seed), run \(String(format: "%.0f", duration * 1000)) ms, \(killed) killed (\(leftovers) leaving warnings for check, \(temporaries) leaving temporary files), \(finished) finished first")
        #expect(killed >= Self.kills, "only \(killed) runs were killed")
        #expect(problems.isEmpty, "\(problems.count) problems:\n\(problems.prefix(10).joined(separator: "\n"))")
    }
}
