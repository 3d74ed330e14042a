import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Campaigns through the real `coffer` binary (issue 10, item 9).
///
/// Mutation campaign: thousands of random mutations (bit flips, overwrites, insertions, deletions,
/// truncations, block swaps and duplications) of real Coffer files (version 1, version 2, several
/// chunks, a passphrase stanza, a public-key stanza, signed), and age files (binary and armored).
/// Each damaged file goes through `decrypt -o`, `decrypt` from a pipe, or `verify`. Required: no
/// crash (exit by a signal), only documented exit codes, nothing accepted with an output other than
/// the original plaintext, only authenticated plaintext released to a pipe (a prefix of the
/// original), and no output or `.NAME.coffer-tmp-*` file left after a failure.
///
/// Kill campaign: `kill -9` at random moments of `encrypt --recursive --remove-original`,
/// `decrypt --recursive --remove-original`, `rewrap --recursive` and `migrate --from age
/// --remove-original`. After each kill no file is lost, every file at its final name is either
/// the old or the new one and intact (decrypted and compared with the known plaintext), an
/// original is gone only when its replacement is intact, and a re-run completes.
///
/// Environment (read by the test process; none of it reaches `coffer`):
///   COFFER_CAMPAIGN_SEED=N       seed both campaigns (default: a fresh one, printed, so that a
///                                failure can be replayed exactly)
///   COFFER_CAMPAIGN_MUTATIONS=N  mutations per run (default 2100)
///   COFFER_CAMPAIGN_KILLS=N      kills per command (default 20)
///   COFFER_CAMPAIGN_KEEP=DIR     copy every file that fails a check into DIR
@Suite struct Campaigns {
    static let environment = ProcessInfo.processInfo.environment

    static let seed: UInt64 = {
        if let text = environment["COFFER_CAMPAIGN_SEED"], let value = UInt64(text) { return value }
        var value: UInt64 = 0
        while value == 0 { value = UInt64.random(in: 1...UInt64.max) }
        return value
    }()

    static let mutationCount = environment["COFFER_CAMPAIGN_MUTATIONS"].flatMap(Int.init) ?? 2100
    static let killCount = environment["COFFER_CAMPAIGN_KILLS"].flatMap(Int.init) ?? 20
    static let workers = max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)

    // MARK: - Mutation campaign

    struct Sample {
        let name: String
        let bytes: [UInt8]
        let plaintext: [UInt8]
        /// Key arguments for `decrypt` and `verify`.
        let keys: [String]
        /// Where the header ends (about), so that a share of mutations lands in it.
        let headerEnd: Int
    }

    enum Mutation: CaseIterable {
        case bitFlip, overwrite, insertion, deletion, truncation, blockSwap, duplication
    }

    enum Mode: CaseIterable { case toFile, pipe, verify }

    /// Real files of every kind, made by `coffer` itself.
    static func makeSamples(_ dir: Scratch) throws -> [Sample] {
        let key = try dir.keygen("k.key")
        let pw = try dir.write(Array("campaign pw".utf8), "pw")
        for (type, name) in [("x25519", "x"), ("ed25519", "signer")] {
            let made = try coffer(["keygen", "--type", type, "-o", dir.file(name)])
            #expect(made.status == Exit.ok, "keygen \(type): \(made.stderr)")
        }
        let chunked = pseudoRandom(3 * 4096 + 100, seed: 501)   // 4 chunks of 4 KiB, the last short
        let exact = pseudoRandom(2 * 4096, seed: 502)            // an exact multiple of the chunk size
        let ageText = pseudoRandom(65536 + 777, seed: 503)       // two age chunks
        let small = Array("a small line of plaintext\n".utf8)
        _ = try dir.write(chunked, "chunked")
        _ = try dir.write(exact, "exact")
        _ = try dir.write(ageText, "agetext")
        _ = try dir.write(small, "small")
        let keyFile = ["--key-file", key]
        let specs: [(name: String, input: String, plaintext: [UInt8], encrypt: [String], keys: [String])] = [
            ("v1-aes-4chunks", "chunked", chunked, keyFile + ["--file-version", "1", "--chunk-size", "4K"], keyFile),
            ("v2-chacha-keyfile+passphrase", "chunked", chunked,
             keyFile + ["--passphrase-file", pw, "--work-factor", "10", "--cipher", "chacha20-poly1305", "--chunk-size", "4K"], keyFile),
            ("v2-x25519-exact-multiple", "exact", exact, ["-r", dir.file("x.pub"), "--chunk-size", "4K"], ["-i", dir.file("x.key")]),
            ("v2-signed-chunk-sha256", "chunked", chunked, keyFile + ["--sign", dir.file("signer.key"), "--chunk-size", "4K"],
             keyFile + ["--signed-by", dir.file("signer.pub")]),
            ("v2-signed-chunk-tags", "exact", exact,
             keyFile + ["--sign", dir.file("signer.key"), "--signature-digest", "chunk-tags", "--chunk-size", "4K"],
             keyFile + ["--signed-by", dir.file("signer.pub")]),
            ("v1-one-chunk", "small", small, keyFile + ["--file-version", "1", "--chunk-size", "4K"], keyFile),
            ("age-binary", "agetext", ageText, ["--format", "age", "-r", dir.file("x.pub")], ["-i", dir.file("x.key")]),
            ("age-armored", "small", small, ["--format", "age", "--armor", "-r", dir.file("x.pub")], ["-i", dir.file("x.key")]),
        ]
        var samples: [Sample] = []
        for spec in specs {
            let output = dir.file("\(spec.name).sample")
            let made = try coffer(["encrypt", "-q"] + spec.encrypt + ["-o", output, dir.file(spec.input)])
            #expect(made.status == Exit.ok, "\(spec.name): \(made.stderr)")
            let bytes = try dir.read("\(spec.name).sample")
            // Unchanged, each sample opens to its plaintext: the campaign starts from good files.
            let opened = try coffer(["decrypt"] + spec.keys + [output])
            #expect(opened.status == Exit.ok && opened.stdout == spec.plaintext, "\(spec.name) does not open: \(opened.stderr)")
            let marker = Array("\n--- ".utf8)
            let macLine = bytes.firstRange(of: marker).map { $0.upperBound + 44 } ?? 200
            var headerEnd = macLine
            if bytes.starts(with: Array("coffer/v2 ".utf8)), let lead = bytes.firstIndex(of: 0x0A),
               let slot = Int(String(decoding: bytes[10..<lead], as: UTF8.self)) {
                headerEnd = lead + 1 + 2 * slot
            }
            samples.append(Sample(name: spec.name, bytes: bytes, plaintext: spec.plaintext, keys: spec.keys, headerEnd: headerEnd))
        }
        return samples
    }

    /// One reproducible mutation: the same seed and index always give the same damaged file.
    static func mutate(_ original: [UInt8], headerEnd: Int, rng: inout SplitMix) -> (bytes: [UInt8], what: String) {
        while true {
            var bytes = original
            let kind = Mutation.allCases[rng.below(Mutation.allCases.count)]
            // Where: anywhere, in the header, in the last bytes (final tag, signature trailer, armor end).
            func position(_ limit: Int) -> Int {
                switch rng.below(3) {
                case 0: return rng.below(limit)
                case 1: return rng.below(min(limit, headerEnd + 32))
                default: return max(0, limit - 1 - rng.below(min(limit, 300)))
                }
            }
            let count = bytes.count
            var what: String
            switch kind {
            case .bitFlip:
                let flips = 1 + rng.below(3)
                let at = position(count)
                var spots: [Int] = []
                for _ in 0..<flips {
                    let spot = min(count - 1, at + rng.below(8))
                    bytes[spot] ^= UInt8(1) << UInt8(rng.below(8))
                    spots.append(spot)
                }
                what = "bit flip at \(spots)"
            case .overwrite:
                let length = 1 + rng.below(16)
                let at = position(count)
                for i in at..<min(count, at + length) { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
                what = "overwrite \(length) at \(at)"
            case .insertion:
                let length = 1 + rng.below(64)
                let at = position(count + 1)
                let inserted: [UInt8] = rng.below(2) == 0 ? (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    : [UInt8](repeating: [0, 0x0A, 0x20, 0x41][rng.below(4)], count: length)
                bytes.insert(contentsOf: inserted, at: at)
                what = "insert \(length) at \(at)"
            case .deletion:
                let length = 1 + rng.below(64)
                let at = position(count)
                bytes.removeSubrange(at..<min(count, at + length))
                what = "delete \(length) at \(at)"
            case .truncation:
                let keep = rng.below(2) == 0 ? rng.below(count) : max(0, count - 1 - rng.below(min(count, 200)))
                bytes.removeSubrange(keep...)
                what = "truncate to \(keep)"
            case .blockSwap:
                let length = 1 + rng.below(min(4112, max(1, count / 2)))
                let a = rng.below(count - 2 * length + 1)
                let b = a + length + rng.below(count - a - 2 * length + 1)
                let first = Array(bytes[a..<(a + length)]), second = Array(bytes[b..<(b + length)])
                bytes.replaceSubrange(a..<(a + length), with: second)
                bytes.replaceSubrange(b..<(b + length), with: first)
                what = "swap \(length) at \(a) and \(b)"
            case .duplication:
                let length = 1 + rng.below(min(4112, count))
                let from = rng.below(count - length + 1)
                let to = position(count + 1)
                bytes.insert(contentsOf: Array(original[from..<(from + length)]), at: to)
                what = "duplicate \(length) from \(from) to \(to)"
            }
            if bytes != original { return (bytes, what) }
        }
    }

    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var failures: [String] = []
        var byStatus: [Int32: Int] = [:]
        var runs = 0
        func record(status: Int32, failure: String?) {
            lock.lock(); defer { lock.unlock() }
            runs += 1
            byStatus[status, default: 0] += 1
            if let failure { failures.append(failure) }
        }
    }

    static func keep(_ bytes: [UInt8], _ name: String) {
        guard let directory = environment["COFFER_CAMPAIGN_KEEP"] else { return }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
    }

    /// Exit codes a damaged file may produce (docs: 2 key, 3 integrity, 4 format).
    static let documented: Set<Int32> = [Exit.ok, Exit.key, Exit.integrity, Exit.format]

    /// Runs mutation `index` in `workDir`; returns the exit status and a failure, if any.
    static func runMutation(_ index: Int, samples: [Sample], workDir: String) throws -> (Int32, String?) {
        var rng = SplitMix(seed: seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03))
        let sample = samples[index % samples.count]
        let mode = Mode.allCases[(index / samples.count) % Mode.allCases.count]
        let (damaged, what) = mutate(sample.bytes, headerEnd: sample.headerEnd, rng: &rng)
        let label = "mutation \(index) (seed \(seed)) of \(sample.name), \(what), via \(mode)"
        let input = "\(workDir)/in.cof"
        let output = "\(workDir)/out"
        try Data(damaged).write(to: URL(fileURLWithPath: input))
        var problems: [String] = []
        let result: RunResult
        switch mode {
        case .toFile:
            result = try coffer(["decrypt", "-q"] + sample.keys + ["-o", output, input])
            if result.status == Exit.ok {
                let written = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: output)))) ?? []
                if written != sample.plaintext { problems.append("accepted with a different output (\(written.count) bytes)") }
                unlink(output)
            }
        case .pipe:
            result = try coffer(["decrypt", "-q"] + sample.keys, stdin: damaged)
            if result.status == Exit.ok, result.stdout != sample.plaintext {
                problems.append("accepted with a different output (\(result.stdout.count) bytes)")
            } else if !sample.plaintext.starts(with: result.stdout) {
                problems.append("released \(result.stdout.count) bytes that are not a prefix of the plaintext")
            }
        case .verify:
            result = try coffer(["verify", "-q"] + sample.keys + [input])
            if result.status == Exit.ok {
                // Accepted by verify: then decryption must give the original plaintext.
                let opened = try coffer(["decrypt", "-q"] + sample.keys + [input])
                if opened.status != Exit.ok || opened.stdout != sample.plaintext {
                    problems.append("verify accepted, decrypt exited \(opened.status) with \(opened.stdout.count) bytes")
                }
            }
        }
        if result.status > 128 {
            problems.append("crashed: killed by signal \(result.status - 128)")
        } else if !documented.contains(result.status) {
            problems.append("undocumented exit \(result.status)")
        }
        // Nothing left behind: the work directory holds the input only.
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: workDir)) ?? []).filter { $0 != "in.cof" }
        if !left.isEmpty {
            problems.append("left behind: \(left)")
            for name in left { unlink("\(workDir)/\(name)") }
        }
        guard !problems.isEmpty else { return (result.status, nil) }
        keep(damaged, "mutation-\(seed)-\(index)-\(sample.name)")
        return (result.status, "\(label): \(problems.joined(separator: "; ")) [exit \(result.status): \(result.stderr.prefix(300))]")
    }

    static func mutationWorker(_ worker: Int, workers: Int, count: Int, samples: [Sample], base: String, tally: Tally) {
        let workDir = "\(base)/w\(worker)"
        try? FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        var index = worker
        while index < count {
            do {
                let (status, failure) = try runMutation(index, samples: samples, workDir: workDir)
                tally.record(status: status, failure: failure)
            } catch {
                tally.record(status: -1, failure: "mutation \(index) (seed \(seed)): the harness failed: \(error)")
            }
            index += workers
        }
    }

    @Test("mutation campaign: 2,100 random mutations of Coffer v1/v2/signed and age files: 0 accepted with different output, 0 outputs left, 0 crashes")
    func mutations() throws {
        let dir = Scratch()
        let samples = try Self.makeSamples(dir)
        try #require(samples.count == 8)
        print("mutation campaign: seed \(Self.seed) (COFFER_CAMPAIGN_SEED=\(Self.seed) replays it), \(Self.mutationCount) mutations, \(Self.workers) workers")
        let tally = Tally()
        let started = Date()
        let workers = Self.workers
        let count = Self.mutationCount
        // Plain threads, not concurrentPerform: each worker mostly waits for its child process,
        // so there are more workers than cores.
        let group = DispatchGroup()
        let base = dir.path
        for worker in 0..<workers {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                Self.mutationWorker(worker, workers: workers, count: count, samples: samples, base: base, tally: tally)
            }
        }
        group.wait()
        let seconds = Date().timeIntervalSince(started)
        let statuses = tally.byStatus.sorted { $0.key < $1.key }.map { "exit \($0.key): \($0.value)" }.joined(separator: ", ")
        print("mutation campaign: \(tally.runs) runs in \(String(format: "%.1f", seconds)) s; \(statuses); \(tally.failures.count) failures")
        #expect(tally.runs == count)
        if Self.environment["COFFER_CAMPAIGN_MUTATIONS"] == nil { #expect(tally.runs >= 2000) }
        #expect(tally.failures.isEmpty, "\(tally.failures.count) failures (seed \(Self.seed)), first: \(tally.failures.prefix(15).joined(separator: "\n"))")
        // The campaign is not vacuous: most mutations are refused, and each sample saw every mode.
        #expect((tally.byStatus[Exit.ok] ?? 0) < count / 10, "\(statuses)")
    }

    // MARK: - kill -9 campaign

    /// A tree of files of several sizes (sizes chosen so that a run takes long enough to be cut).
    static let treeFiles: [(String, Int)] = [
        ("ibdata1", 1_200_000), ("ib_logfile0", 300_000), ("db/t1.ibd", 70_000), ("db/empty.frm", 0),
        ("db/deep/t2.ibd", 4096), ("xtrabackup_info", 333), ("db/t3.ibd", 600_000),
    ]

    static let treeContents: [String: [UInt8]] = {
        var contents: [String: [UInt8]] = [:]
        for (i, (name, size)) in treeFiles.enumerated() { contents[name] = pseudoRandom(size, seed: UInt64(700 + i)) }
        return contents
    }()

    struct KillStats {
        var killed = 0, finished = 0, leftTemporaries = 0, bothPresent = 0
        var durations: [Double] = []
    }

    /// Starts `arguments`, sends SIGKILL after `micros` µs; returns the exit status (137 when killed).
    static func killed(_ arguments: [String], after micros: UInt32) throws -> Int32 {
        let pid = try spawnInBackground([cofferBinary] + arguments, stdinPath: "/dev/null")
        usleep(micros)
        kill(pid, SIGKILL)
        return waitForExit(pid)
    }

    static func temporaries(_ dir: Scratch) -> [String] { dir.listing().filter { $0.contains(".coffer-tmp-") } }

    /// The kill campaign of one command. `prepare` lays a fresh tree in `dir/tree` and returns the
    /// command; `check` inspects the tree after a kill (phase "after kill") or the re-run ("after re-run").
    static func killCampaign(_ name: String, seedOffset: UInt64,
                             prepare: (Scratch) throws -> [String],
                             check: (Scratch, String) throws -> [String]) throws -> KillStats {
        var rng = SplitMix(seed: seed ^ seedOffset)
        var stats = KillStats()
        // A run to the end, timed: the kills fall uniformly within its duration.
        let timing = Scratch()
        let arguments = try prepare(timing)
        let begin = Date()
        let full = try coffer(arguments)
        var duration = Date().timeIntervalSince(begin)
        #expect(full.status == Exit.ok, "\(name): an uninterrupted run failed: \(full.stderr)")
        #expect(try check(timing, "after an uninterrupted run").isEmpty)
        var failures: [String] = []
        var attempts = 0
        while stats.killed < killCount && attempts < 10 * killCount {
            attempts += 1
            let dir = Scratch()
            let command = try prepare(dir)
            let micros = UInt32(Double(rng.below(1000)) / 1000 * duration * 1_000_000)
            let status = try killed(command, after: micros)
            if status == 128 + SIGKILL {
                stats.killed += 1
            } else {
                // The timed run was slower than this one (the machine's load changes): aim earlier.
                stats.finished += 1
                duration *= 0.8
            }
            let label = "\(name), kill \(attempts) after \(micros) µs (seed \(seed))"
            failures += try check(dir, "after kill").map { "\(label): \($0)" }
            stats.leftTemporaries += temporaries(dir).count
            // A re-run completes and leaves every file new and intact, and no temporary file of its own.
            let before = Set(temporaries(dir))
            let again = try coffer(command)
            var rerun: [String] = []
            if again.status != Exit.ok { rerun.append("\(label): the re-run exited \(again.status): \(again.stderr.prefix(400))") }
            rerun += try check(dir, "after re-run").map { "\(label): \($0)" }
            // Killed after NAME.cof got its name but before NAME was removed, the re-run finds
            // both, checks that NAME.cof holds NAME's content, and removes NAME.
            failures += rerun
            let after = Set(temporaries(dir))
            if !after.subtracting(before).isEmpty { failures.append("\(label): the re-run left \(after.subtracting(before))") }
        }
        stats.durations = [duration]
        print("kill campaign \(name): seed \(seed), run time \(String(format: "%.0f", duration * 1000)) ms, \(stats.killed) killed, \(stats.finished) finished before the kill, \(stats.leftTemporaries) temporary files left by killed runs")
        #expect(stats.killed >= killCount, "\(name): only \(stats.killed) runs were killed")
        #expect(failures.isEmpty, "\(failures.count) failures: \(failures.prefix(10).joined(separator: "\n"))")
        return stats
    }

    static func makeTree(_ dir: Scratch, suffix: String = "") throws {
        for (name, bytes) in treeContents { _ = try dir.write(bytes, "tree/\(name)\(suffix)", mode: 0o640) }
    }

    /// The plaintext of `path` opened with `keys`, or nil when it does not open.
    static func opened(_ path: String, _ keys: [String]) throws -> (status: Int32, bytes: [UInt8]) {
        let result = try coffer(["decrypt", "-q"] + keys + [path])
        return (result.status, result.stdout)
    }

    /// One file as old (`old` suffix, checked by `oldKeys`) or new (`new` suffix, `newKeys`); `old` ""
    /// is the plaintext itself. Returns problems.
    static func checkFile(_ dir: Scratch, _ name: String, old: String, oldKeys: [String]?, new: String, newKeys: [String],
                          phase: String, mustBeNew: Bool) throws -> [String] {
        let plaintext = treeContents[name]!
        var problems: [String] = []
        let oldPath = "tree/\(name)\(old)", newPath = "tree/\(name)\(new)"
        let hasOld = dir.exists(oldPath), hasNew = dir.exists(newPath)
        if !hasOld && !hasNew { return ["\(phase): \(name) lost (neither \(oldPath) nor \(newPath))"] }
        if hasOld {
            if mustBeNew { problems.append("\(phase): \(oldPath) is still there") }
            if let oldKeys {
                let result = try opened(dir.file(oldPath), oldKeys)
                if result.status != Exit.ok || result.bytes != plaintext {
                    problems.append("\(phase): \(oldPath) is not intact (exit \(result.status), \(result.bytes.count) bytes)")
                }
            } else if try dir.read(oldPath) != plaintext {
                problems.append("\(phase): the original \(oldPath) changed")
            }
        }
        if hasNew {
            if newKeys.isEmpty {
                if try dir.read(newPath) != plaintext { problems.append("\(phase): \(newPath) is not the plaintext") }
            } else {
                let result = try opened(dir.file(newPath), newKeys)
                if result.status != Exit.ok || result.bytes != plaintext {
                    problems.append("\(phase): \(newPath) is not intact (exit \(result.status), \(result.bytes.count) bytes)\(hasOld ? "" : " and its original is gone")")
                }
            }
        }
        return problems
    }

    @Test("kill -9 at random moments of 'encrypt --recursive --remove-original': no file lost, every file old or new and intact, a re-run completes")
    func killEncrypt() throws {
        _ = try Self.killCampaign("encrypt --recursive --remove-original", seedOffset: 1, prepare: { dir in
            let key = try dir.keygen("k.key")
            try Self.makeTree(dir)
            return ["encrypt", "-q", "--recursive", "--remove-original", "--key-file", key, "--chunk-size", "64K", dir.file("tree")]
        }, check: { dir, phase in
            var problems: [String] = []
            for (name, _) in Self.treeFiles {
                problems += try Self.checkFile(dir, name, old: "", oldKeys: nil, new: ".cof", newKeys: ["--key-file", dir.file("k.key")],
                                               phase: phase, mustBeNew: phase != "after kill")
            }
            return problems
        })
    }

    @Test("kill -9 at random moments of 'decrypt --recursive --remove-original': no file lost, every file old or new and intact, a re-run completes")
    func killDecrypt() throws {
        // One encrypted tree, copied for every run (encrypting it each time would double the cost).
        let master = Scratch()
        let key = try master.keygen("k.key")
        try Self.makeTree(master)
        let made = try coffer(["encrypt", "-q", "--recursive", "--remove-original", "--key-file", key, "--chunk-size", "64K",
                               master.file("tree")])
        try #require(made.status == Exit.ok, "\(made.stderr)")
        let encrypted = try Dictionary(uniqueKeysWithValues: Self.treeFiles.map { ($0.0, try master.read("tree/\($0.0).cof")) })
        _ = try Self.killCampaign("decrypt --recursive --remove-original", seedOffset: 2, prepare: { dir in
            _ = try dir.write(try master.read("k.key"), "k.key")
            for (name, bytes) in encrypted { _ = try dir.write(bytes, "tree/\(name).cof", mode: 0o640) }
            return ["decrypt", "-q", "--recursive", "--remove-original", "--key-file", dir.file("k.key"), dir.file("tree")]
        }, check: { dir, phase in
            var problems: [String] = []
            for (name, _) in Self.treeFiles {
                problems += try Self.checkFile(dir, name, old: ".cof", oldKeys: ["--key-file", dir.file("k.key")], new: "", newKeys: [],
                                               phase: phase, mustBeNew: phase != "after kill")
            }
            return problems
        })
    }

    /// The state a kill between the rename of NAME.cof and the removal of NAME leaves, made by
    /// hand: every NAME and its NAME.cof (from a run without --remove-original).
    static func bothPresent(_ dir: Scratch) throws -> String {
        let key = try dir.keygen("k.key")
        try Self.makeTree(dir)
        let first = try coffer(["encrypt", "-q", "--recursive", "--key-file", key, "--chunk-size", "64K", dir.file("tree")])
        try #require(first.status == Exit.ok, "\(first.stderr)")
        for (name, _) in Self.treeFiles { try #require(dir.exists("tree/\(name)") && dir.exists("tree/\(name).cof")) }
        return key
    }

    @Test("resuming 'encrypt --recursive --remove-original' with NAME and NAME.cof both present: NAME.cof is checked against NAME, then NAME removed")
    func resumeEncryptBothPresent() throws {
        let dir = Scratch()
        let key = try Self.bothPresent(dir)
        let before = try Dictionary(uniqueKeysWithValues: Self.treeFiles.map { ($0.0, try dir.read("tree/\($0.0).cof")) })
        let again = try coffer(["encrypt", "-q", "--recursive", "--remove-original", "--key-file", key, "--chunk-size", "64K",
                                dir.file("tree")])
        #expect(again.status == Exit.ok, "\(again.stderr)")
        for (name, _) in Self.treeFiles {
            #expect(dir.absent("tree/\(name)"), "\(name) was not removed")
            // The earlier run's file is kept as it was, and opens to the original content.
            #expect(try dir.read("tree/\(name).cof") == before[name]!, "\(name).cof was rewritten")
            let opened = try Self.opened(dir.file("tree/\(name).cof"), ["--key-file", key])
            #expect(opened.status == Exit.ok && opened.bytes == Self.treeContents[name]!)
        }
    }

    @Test("resuming 'encrypt --recursive --remove-original': a NAME.cof with other content, or one the keys do not open, is refused and NAME kept")
    func resumeEncryptRefusesOtherContent() throws {
        let dir = Scratch()
        let key = try Self.bothPresent(dir)
        // ibdata1.cof now holds another file's encryption under the same key (swapped in by hand) ...
        let swapped = try dir.read("tree/ib_logfile0.cof")
        _ = try dir.write(swapped, "tree/ibdata1.cof", mode: 0o640)
        // ... and xtrabackup_info.cof is encrypted with a key this run does not have.
        let other = try dir.keygen("other.key")
        _ = try dir.write(Array("other content".utf8), "elsewhere/xtrabackup_info")
        let made = try coffer(["encrypt", "-q", "--key-file", other, "-o", dir.file("tree/xtrabackup_info.cof"), "--force",
                               dir.file("elsewhere/xtrabackup_info")])
        try #require(made.status == Exit.ok, "\(made.stderr)")
        let again = try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, "--chunk-size", "64K",
                                dir.file("tree")])
        #expect(again.status == Exit.io, "\(again.stderr)")
        #expect(again.stderr.contains("already exists"), "\(again.stderr)")
        #expect(dir.exists("tree/ibdata1") && dir.exists("tree/xtrabackup_info"))
        #expect(try dir.read("tree/ibdata1") == Self.treeContents["ibdata1"]!)
        #expect(try dir.read("tree/ibdata1.cof") == swapped)
        // The other files resumed.
        #expect(dir.absent("tree/ib_logfile0") && dir.absent("tree/db/t1.ibd"))
    }

    @Test("resuming 'decrypt --recursive --remove-original' with NAME.cof and NAME both present: NAME is checked against NAME.cof, then NAME.cof removed")
    func resumeDecryptBothPresent() throws {
        let dir = Scratch()
        let key = try Self.bothPresent(dir)
        // One plaintext differs from its .cof: that pair stays, with an error.
        _ = try dir.write(Array("changed".utf8), "tree/db/t3.ibd", mode: 0o640)
        let again = try coffer(["decrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("tree")])
        #expect(again.status == Exit.io, "\(again.stderr)")
        #expect(again.stderr.contains("holds other data"), "\(again.stderr)")
        for (name, _) in Self.treeFiles where name != "db/t3.ibd" {
            #expect(dir.absent("tree/\(name).cof"), "\(name).cof was not removed")
            #expect(try dir.read("tree/\(name)") == Self.treeContents[name]!)
        }
        #expect(dir.exists("tree/db/t3.ibd.cof"))
        #expect(try dir.read("tree/db/t3.ibd") == Array("changed".utf8))
    }

    @Test("kill -9 at random moments of 'rewrap --recursive' (v1 files converted, v2 files in place): every file opens with the old key, and with the new one or not at all; a re-run completes")
    func killRewrap() throws {
        let master = Scratch()
        let old = try master.keygen("old.key")
        let new = try master.keygen("new.key")
        try Self.makeTree(master)
        var encrypted: [String: [UInt8]] = [:]
        for (i, (name, _)) in Self.treeFiles.enumerated() {
            let made = try coffer(["encrypt", "-q", "--key-file", old, "--chunk-size", "64K", "--file-version", i % 2 == 0 ? "1" : "2",
                                   "-o", master.file("tree/\(name).cof"), master.file("tree/\(name)")])
            try #require(made.status == Exit.ok, "\(made.stderr)")
            encrypted[name] = try master.read("tree/\(name).cof")
        }
        _ = try Self.killCampaign("rewrap --recursive --add-key-file", seedOffset: 3, prepare: { dir in
            _ = try dir.write(try master.read("old.key"), "old.key")
            _ = try dir.write(try master.read("new.key"), "new.key")
            for (name, bytes) in encrypted { _ = try dir.write(bytes, "tree/\(name).cof", mode: 0o640) }
            return ["rewrap", "-q", "--recursive", "--key-file", dir.file("old.key"), "--add-key-file", dir.file("new.key"), dir.file("tree")]
        }, check: { dir, phase in
            var problems: [String] = []
            for (name, _) in Self.treeFiles {
                let path = dir.file("tree/\(name).cof")
                guard dir.exists("tree/\(name).cof") else { problems.append("\(phase): \(name).cof lost"); continue }
                let withOld = try Self.opened(path, ["--key-file", dir.file("old.key")])
                if withOld.status != Exit.ok || withOld.bytes != Self.treeContents[name]! {
                    problems.append("\(phase): \(name).cof no longer opens with the old key (exit \(withOld.status))")
                }
                let withNew = try Self.opened(path, ["--key-file", dir.file("new.key")])
                if withNew.status == Exit.ok {
                    if withNew.bytes != Self.treeContents[name]! { problems.append("\(phase): \(name).cof opens with the new key to other bytes") }
                } else if withNew.status != Exit.key || phase != "after kill" {
                    problems.append("\(phase): \(name).cof with the new key: exit \(withNew.status)")
                }
            }
            return problems
        })
    }

    @Test("kill -9 at random moments of 'migrate --from age --remove-original': no file lost, every file old or new and intact, a re-run completes")
    func killMigrate() throws {
        let master = Scratch()
        let made = try coffer(["keygen", "--type", "x25519", "-o", master.file("x")])
        try #require(made.status == Exit.ok, "\(made.stderr)")
        try Self.makeTree(master)
        var encrypted: [String: [UInt8]] = [:]
        for (name, _) in Self.treeFiles {
            let sealed = try coffer(["encrypt", "-q", "--format", "age", "-r", master.file("x.pub"), "-o", master.file("tree/\(name).age"),
                                     master.file("tree/\(name)")])
            try #require(sealed.status == Exit.ok, "\(sealed.stderr)")
            encrypted[name] = try master.read("tree/\(name).age")
        }
        _ = try Self.killCampaign("migrate --from age --remove-original", seedOffset: 4, prepare: { dir in
            _ = try dir.write(try master.read("x.key"), "x.key")
            _ = try dir.write(try master.read("x.pub"), "x.pub")
            _ = try dir.keygen("k.key")
            for (name, bytes) in encrypted { _ = try dir.write(bytes, "tree/\(name).age", mode: 0o640) }
            return ["migrate", "-q", "--from", "age", "--from-identity", dir.file("x.key"), "--key-file", dir.file("k.key"),
                    "--remove-original", dir.file("tree")]
        }, check: { dir, phase in
            var problems: [String] = []
            for (name, _) in Self.treeFiles {
                problems += try Self.checkFile(dir, name, old: ".age", oldKeys: ["-i", dir.file("x.key")], new: ".cof",
                                               newKeys: ["--key-file", dir.file("k.key")], phase: phase, mustBeNew: phase != "after kill")
            }
            return problems
        })
    }
}

/// What kill -9 cannot show: that an original is removed only after its replacement is durable.
/// The system calls of a whole run, traced by strace (-y names each descriptor's file), must show
/// for every removed original: the replacement's temporary file flushed (fsync/fdatasync), then
/// renamed to its final name, then that directory flushed, and only then the original unlinked.
@Suite struct DurabilityOrder {
    enum Event: Equatable {
        case flush(String)
        case rename(String, String)
        case unlink(String)
    }

    static func normalized(_ path: String) -> String {
        var p = path
        while p.contains("//") { p = p.replacingOccurrences(of: "//", with: "/") }
        return p
    }

    static func resolve(_ directory: String, _ name: String) -> String {
        normalized(name.hasPrefix("/") ? name : "\(directory)/\(name)")
    }

    /// The successful flushes, renames and unlinks of an strace -f -y log, in order of completion.
    static func events(_ log: String) -> [Event] {
        var pending: [Substring: String] = [:]
        var out: [Event] = []
        func match(_ pattern: String, _ text: String) -> [String]? {
            guard let regex = try? NSRegularExpression(pattern: pattern),
                  let m = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) else { return nil }
            return (1..<m.numberOfRanges).map { m.range(at: $0).location == NSNotFound ? "" : String(text[Range(m.range(at: $0), in: text)!]) }
        }
        for raw in log.split(separator: "\n") {
            guard let space = raw.firstIndex(of: " ") else { continue }
            let pid = raw[..<space]
            // strace pads the pid column ("877   fsync(…"): the call starts after the spaces.
            var line = String(raw[raw.index(after: space)...].drop { $0 == " " })
            if let cut = line.range(of: " <unfinished ...>") {
                pending[pid] = String(line[..<cut.lowerBound])
                continue
            }
            if line.hasPrefix("<... "), let end = line.range(of: " resumed>") {
                line = (pending.removeValue(forKey: pid) ?? "") + line[end.upperBound...]
            }
            let fd = "(?:AT_FDCWD|\\d+)<([^>]*)>"
            if let m = match("^(?:fsync|fdatasync)\\(\\d+<([^>]*)>\\) += 0", line) {
                out.append(.flush(normalized(m[0])))
            } else if let m = match("^rename\\(\"([^\"]*)\", \"([^\"]*)\"\\) += 0", line) {
                out.append(.rename(normalized(m[0]), normalized(m[1])))
            } else if let m = match("^renameat2?\\(\(fd), \"([^\"]*)\", \(fd), \"([^\"]*)\".*\\) += 0", line) {
                out.append(.rename(resolve(m[0], m[1]), resolve(m[2], m[3])))
            } else if let m = match("^unlink\\(\"([^\"]*)\"\\) += 0", line) {
                out.append(.unlink(normalized(m[0])))
            } else if let m = match("^unlinkat\\(\(fd), \"([^\"]*)\", 0\\) += 0", line) {
                out.append(.unlink(resolve(m[0], m[1])))
            }
        }
        return out
    }

    /// Problems with the order in which `original` was replaced by `replacement`.
    static func check(_ events: [Event], original: String, replacement: String) -> [String] {
        guard let removed = events.firstIndex(of: .unlink(original)) else { return ["\(original) was not removed"] }
        guard let renamed = events[..<removed].lastIndex(where: { if case .rename(_, replacement) = $0 { return true }; return false }),
              case .rename(let temporary, _) = events[renamed] else {
            return ["\(original) removed before \(replacement) got its final name"]
        }
        var problems: [String] = []
        if !events[..<renamed].contains(.flush(temporary)) { problems.append("\(replacement) renamed before its data was flushed") }
        let directory = (replacement as NSString).deletingLastPathComponent
        if !events[renamed..<removed].contains(.flush(directory)) {
            problems.append("\(original) removed before the rename to \(replacement) was flushed (directory fsync)")
        }
        return problems
    }

    static let strace = "/usr/bin/strace"

    /// Runs `arguments` under strace; nil (after recording an issue) when strace cannot run.
    static func traced(_ dir: Scratch, _ arguments: [String]) throws -> [Event]? {
        guard FileManager.default.isExecutableFile(atPath: strace) else {
            Issue.record("strace is not installed (Debian package strace; scripts/test.sh installs it)")
            return nil
        }
        let env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        let log = dir.file("strace.log")
        let result = try spawn([strace, "-f", "-qq", "-y", "-o", log, "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat",
                                cofferBinary] + arguments, environment: env, stdin: nil)
        #expect(result.status == Exit.ok, "\(arguments[0]): \(result.stderr)")
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        unlink(log)
        let found = events(text)
        guard !found.isEmpty else {
            Issue.record("\(arguments[0]): strace saw no flush, rename or unlink (exit \(result.status)): \(result.stderr.prefix(500)) \(text.prefix(500))")
            return nil
        }
        return found
    }

    static func realDirectory(_ dir: Scratch) -> String {
        normalized(URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path)
    }

    @Test("encrypt, decrypt and migrate with --remove-original: each original is unlinked only after its replacement was flushed, renamed and its directory flushed")
    func removeOriginalOrder() throws {
        let dir = Scratch()
        let key = try dir.keygen("k.key")
        #expect(try coffer(["keygen", "--type", "x25519", "-o", dir.file("x")]).status == Exit.ok)
        for (name, bytes) in Campaigns.treeContents { _ = try dir.write(bytes, "tree/\(name)") }
        let root = Self.realDirectory(dir) + "/tree"
        let names = Campaigns.treeFiles.map(\.0)

        guard let encrypted = try Self.traced(dir, ["encrypt", "-q", "--recursive", "--remove-original", "--key-file", key, dir.file("tree")])
        else { return }
        var problems: [String] = []
        for name in names { problems += Self.check(encrypted, original: "\(root)/\(name)", replacement: "\(root)/\(name).cof") }
        #expect(problems.isEmpty, "encrypt: \(problems)")

        guard let decrypted = try Self.traced(dir, ["decrypt", "-q", "--recursive", "--remove-original", "--key-file", key, dir.file("tree")])
        else { return }
        problems = []
        for name in names { problems += Self.check(decrypted, original: "\(root)/\(name).cof", replacement: "\(root)/\(name)") }
        #expect(problems.isEmpty, "decrypt: \(problems)")

        for name in names {
            let made = try coffer(["encrypt", "-q", "--format", "age", "-r", dir.file("x.pub"), "-o", dir.file("tree/\(name).age"),
                                   dir.file("tree/\(name)")])
            #expect(made.status == Exit.ok, "\(made.stderr)")
            unlink(dir.file("tree/\(name)"))
        }
        guard let migrated = try Self.traced(dir, ["migrate", "-q", "--from", "age", "--from-identity", dir.file("x.key"), "--key-file", key,
                                                   "--remove-original", dir.file("tree")])
        else { return }
        problems = []
        for name in names { problems += Self.check(migrated, original: "\(root)/\(name).age", replacement: "\(root)/\(name).cof") }
        #expect(problems.isEmpty, "migrate: \(problems)")
    }

    @Test("the order check itself: a log that unlinks before the directory flush, or renames unflushed data, is caught")
    func checkerCatchesBadOrder() {
        let good = """
            100 fsync(5</d/.a.cof.coffer-tmp-X>) = 0
            100 renameat2(AT_FDCWD</>, "/d/.a.cof.coffer-tmp-X", AT_FDCWD</>, "/d/a.cof", RENAME_NOREPLACE) = 0
            101 fsync(6</d> <unfinished ...>
            100 getpid() = 100
            101 <... fsync resumed>) = 0
            100 unlinkat(7</d>, "a", 0) = 0
            """
        #expect(Self.check(Self.events(good), original: "/d/a", replacement: "/d/a.cof").isEmpty)
        let noDirectoryFlush = good.replacingOccurrences(of: "fsync(6</d>", with: "fsync(6</e>")
        #expect(Self.check(Self.events(noDirectoryFlush), original: "/d/a", replacement: "/d/a.cof").count == 1)
        let noDataFlush = good.replacingOccurrences(of: "100 fsync(5</d/.a.cof.coffer-tmp-X>) = 0\n", with: "")
        #expect(Self.check(Self.events(noDataFlush), original: "/d/a", replacement: "/d/a.cof").count == 1)
        let early = "100 unlink(\"/d/a\") = 0\n" + good
        #expect(!Self.check(Self.events(early), original: "/d/a", replacement: "/d/a.cof").isEmpty)
    }
}

/// SplitMix64: a small, seedable generator, so that a campaign replays exactly from its seed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A number in 0..<bound (bound ≥ 1).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(1, bound))) }
}
