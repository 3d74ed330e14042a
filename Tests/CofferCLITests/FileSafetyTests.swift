import CofferFormat
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs `coffer` under the umask `mask` (through /bin/sh, as a login shell would set it).
func coffer(umask mask: mode_t, _ arguments: [String]) throws -> RunResult {
    let env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
    return try spawn(["/bin/sh", "-c", "umask \(String(mask, radix: 8)) && exec \"$0\" \"$@\"", cofferBinary] + arguments,
                     environment: env, stdin: nil)
}

func mode(of path: String) -> mode_t {
    var st = stat()
    lstat(path, &st)
    return st.st_mode & 0o7777
}

/// Issue 10, item 2: the modes of outputs.
@Suite struct OutputModes {
    @Test("a setuid/setgid/sticky .cof never yields a setuid/setgid/sticky output (decrypt --recursive, decrypt -o, encrypt --recursive)")
    func noSpecialBits() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(Array("#!/bin/sh\necho hi\n".utf8), "backup/tool", mode: 0o755)
        #expect(chmod(dir.file("backup/tool"), 0o6755) == 0)
        let enc = try coffer(umask: 0o022, ["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")])
        #expect(enc.status == Exit.ok, "\(enc.stderr)")
        #expect(mode(of: dir.file("backup/tool.cof")) == 0o755)
        // Another user's `chmod 4755 tool.cof` (here: ours), then a decryption.
        #expect(chmod(dir.file("backup/tool.cof"), 0o7755) == 0)
        let dec = try coffer(umask: 0o022, ["decrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(dec.status == Exit.ok, "\(dec.stderr)")
        #expect(mode(of: dir.file("backup/tool")) == 0o755, "mode \(String(mode(of: dir.file("backup/tool")), radix: 8))")
        let single = try coffer(umask: 0o022, ["decrypt", "--key-file", key, "-o", dir.file("tool-single"), dir.file("backup/tool.cof")])
        #expect(single.status == Exit.ok, "\(single.stderr)")
        #expect(mode(of: dir.file("tool-single")) == 0o755)
    }

    @Test("outputs respect the umask: source mode & 0o777 & ~umask")
    func umask() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(Array("shared".utf8), "backup/shared.txt", mode: 0o664)
        _ = try dir.write(Array("script".utf8), "backup/run.sh", mode: 0o775)
        let enc = try coffer(umask: 0o027, ["encrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(enc.status == Exit.ok, "\(enc.stderr)")
        #expect(mode(of: dir.file("backup/shared.txt.cof")) == 0o640)
        #expect(mode(of: dir.file("backup/run.sh.cof")) == 0o750)
        for name in ["shared.txt", "run.sh"] { unlink(dir.file("backup/\(name)")) }
        for name in ["shared.txt.cof", "run.sh.cof"] { chmod(dir.file("backup/\(name)"), 0o666) }
        let dec = try coffer(umask: 0o077, ["decrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(dec.status == Exit.ok, "\(dec.stderr)")
        #expect(mode(of: dir.file("backup/shared.txt")) == 0o600)
        #expect(mode(of: dir.file("backup/run.sh")) == 0o600)
        let single = try coffer(umask: 0o077, ["decrypt", "--key-file", key, "-o", dir.file("single"), dir.file("backup/run.sh.cof")])
        #expect(single.status == Exit.ok, "\(single.stderr)")
        #expect(mode(of: dir.file("single")) == 0o600)
    }
}

/// Issue 10, item 3: only what is proven safe is deleted.
@Suite struct ProvenDeletions {
    /// A passphrase-encrypted age file of `plaintext` at `name`.
    func ageFile(_ dir: Scratch, _ plaintext: [UInt8], _ name: String) throws {
        let plain = try dir.write(plaintext, "plain-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: dir.file(name)).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        let made = try coffer(["encrypt", "--format", "age", "-p", "--work-factor", "10", "--force", "-o", dir.file(name), plain],
                              environment: ["COFFER_PASSPHRASE": "old pw"])
        #expect(made.status == 0, "\(made.stderr)")
        unlink(plain)
    }

    @Test("a resumed migrate --remove-original keeps a newer db.age when an older db.cof exists")
    func newerOriginal() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("old pw\n".utf8), "pw.txt")
        try ageFile(dir, Array("old contents".utf8), "backup/db.age")
        let first = try coffer(["migrate", "-q", "--from", "age", "--from-passphrase-file", pw, "--key-file", key, dir.file("backup")])
        #expect(first.status == Exit.ok, "\(first.stderr)")
        let olderCof = try dir.read("backup/db.cof")
        // A newer backup arrives under the same name before the resumed run.
        try ageFile(dir, Array("newer contents".utf8), "backup/db.age")
        let newerAge = try dir.read("backup/db.age")
        let resumed = try coffer(["migrate", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                                  "--remove-original", dir.file("backup")])
        #expect(resumed.status != Exit.ok)
        #expect(resumed.stderr.contains("holds other data"), "\(resumed.stderr)")
        #expect(try dir.read("backup/db.age") == newerAge, "the newer original was removed")
        #expect(try dir.read("backup/db.cof") == olderCof)
        // Single-file mode, the same situation (db.cof, of a directory run, has an object name
        // that a single file's conversion would not have: it is kept as unverifiable).
        let single = try coffer(["migrate", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                                 "--remove-original", dir.file("backup/db.age")])
        #expect(single.stderr.contains("the original was kept"), "\(single.stderr)")
        #expect(try dir.read("backup/db.age") == newerAge)
    }

    @Test("single-file migrate --remove-original keeps report.age when an unrelated report.cof exists under the same key")
    func unrelatedFile() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("old pw\n".utf8), "pw.txt")
        try ageFile(dir, Array("the quarterly report".utf8), "report.age")
        let original = try dir.read("report.age")
        let other = try dir.write(Array("something else entirely".utf8), "other.txt")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("report.cof"), other]).status == 0)
        let run = try coffer(["migrate", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                              "--remove-original", dir.file("report.age")])
        #expect(run.status != Exit.ok)
        #expect(run.stderr.contains("holds other data"), "\(run.stderr)")
        #expect(try dir.read("report.age") == original, "report.age was removed")
        #expect(try coffer(["decrypt", "--key-file", key, dir.file("report.cof")]).stdout == Array("something else entirely".utf8))
    }

    @Test("a resumed migrate whose existing .cof holds the same plaintext removes the original")
    func sameContentResumes() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("old pw\n".utf8), "pw.txt")
        try ageFile(dir, Array("same".utf8), "backup/db.age")
        #expect(try coffer(["migrate", "-q", "--from", "age", "--from-passphrase-file", pw, "--key-file", key, dir.file("backup")]).status == 0)
        let resumed = try coffer(["migrate", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                                  "--remove-original", dir.file("backup")])
        #expect(resumed.status == Exit.ok, "\(resumed.stderr)")
        #expect(!dir.exists("backup/db.age"))
        #expect(try coffer(["decrypt", "--key-file", key, dir.file("backup/db.cof")]).stdout == Array("same".utf8))
    }

    @Test("--remove-original keeps the source when the read-back of the new file fails (migrate, encrypt --recursive, reencrypt)")
    func readBackFailureKeepsSource() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("old pw\n".utf8), "pw.txt")
        let damage = ["COFFER_TEST_DAMAGE_READBACK": "1"]
        try ageFile(dir, pseudoRandom(100_000, seed: 3), "m/db.age")
        let age = try dir.read("m/db.age")
        let migrated = try coffer(["migrate", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                                   "--remove-original", dir.file("m")], environment: damage)
        #expect(migrated.status == Exit.integrity, "\(migrated.stderr)")
        #expect(try dir.read("m/db.age") == age)
        #expect(!dir.exists("m/db.cof"))

        let plain = pseudoRandom(70_000, seed: 4)
        _ = try dir.write(plain, "e/file")
        let encrypted = try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("e")], environment: damage)
        #expect(encrypted.status == Exit.integrity, "\(encrypted.stderr)")
        #expect(try dir.read("e/file") == plain)
        #expect(!dir.exists("e/file.cof"))

        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("r.cof"), dir.file("e/file")]).status == 0)
        let before = try dir.read("r.cof")
        let reencrypted = try coffer(["reencrypt", "--key-file", key, "--to-key-file", key, dir.file("r.cof")], environment: damage)
        #expect(reencrypted.status == Exit.integrity, "\(reencrypted.stderr)")
        #expect(try dir.read("r.cof") == before)
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") }, "\(dir.listing())")
        // Without the hook, the same commands succeed.
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("e")]).status == Exit.ok)
        #expect(!dir.exists("e/file"))
    }
}

/// Issue 10, item 3: a directory swapped for a symbolic link while a run goes on is not followed.
/// The run pauses between listing the tree and opening its files (COFFER_TEST_PAUSE_AFTER_LISTING,
/// debug builds only), which makes the race deterministic.
@Suite struct SymlinkRace {
    /// Runs `arguments` with the pause hook; once the tree is listed, runs `swap`, then lets it go on.
    func raced(_ dir: Scratch, _ arguments: [String], swap: () throws -> Void) throws -> RunResult {
        let hook = dir.file("hook")
        try FileManager.default.createDirectory(atPath: hook, withIntermediateDirectories: true)
        let result = LockedResult()
        let thread = Thread {
            result.set(Result { try coffer(arguments, environment: ["COFFER_TEST_PAUSE_AFTER_LISTING": hook]) })
        }
        thread.start()
        var listed = false
        for _ in 0..<3000 where !result.done {
            if access("\(hook)/listed", F_OK) == 0 { listed = true; break }
            usleep(10_000)
        }
        #expect(listed, "the run never paused after listing (no test hook in this build?)")
        if listed { try swap() }
        close(open("\(hook)/continue", O_WRONLY | O_CREAT, 0o600))
        return try result.wait()
    }

    /// Moves `backup/sub` away to `outside` and puts a symbolic link to it in its place.
    func swapForLink(_ dir: Scratch, to target: String) throws {
        #expect(rename(dir.file("backup/sub"), dir.file("moved-away")) == 0)
        #expect(symlink(target, dir.file("backup/sub")) == 0)
    }

    @Test("encrypt --recursive --remove-original: a directory swapped for a link to ../outside after listing is not followed")
    func encryptRace() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(Array("in the tree".utf8), "backup/sub/victim")
        _ = try dir.write(Array("kept".utf8), "backup/top")
        let victim = try dir.write(Array("outside the tree: must not be touched".utf8), "outside/victim")
        let result = try raced(dir, ["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]) {
            try swapForLink(dir, to: "../outside")
        }
        #expect(result.status != Exit.ok)
        #expect(result.stderr.contains("not followed"), "\(result.stderr)")
        #expect(try dir.read("outside/victim") == Array("outside the tree: must not be touched".utf8), "\(victim) was removed")
        #expect(!dir.exists("outside/victim.cof"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("outside")) == ["victim"])
        #expect(dir.exists("backup/top.cof") && !dir.exists("backup/top"))
    }

    @Test("decrypt --recursive --remove-original: a directory swapped for a link after listing is not followed")
    func decryptRace() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(Array("secret".utf8), "backup/sub/victim")
        _ = try dir.write(Array("top".utf8), "backup/top")
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        // The attacker's copy of the run's sub directory, outside the tree.
        try FileManager.default.copyItem(atPath: dir.file("backup/sub"), toPath: dir.file("outside"))
        let result = try raced(dir, ["decrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]) {
            try swapForLink(dir, to: "../outside")
        }
        #expect(result.status != Exit.ok)
        #expect(result.stderr.contains("not followed"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("outside")) == ["victim.cof"])
        #expect(try dir.read("backup/top") == Array("top".utf8))
    }

    @Test("rewrap --recursive: a directory swapped for a link after listing is not followed")
    func rewrapRace() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let second = try dir.keygen("second.key")
        _ = try dir.write(Array("secret".utf8), "backup/sub/victim")
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--file-version", "1", "--key-file", key, dir.file("backup")]).status == 0)
        try FileManager.default.copyItem(atPath: dir.file("backup/sub"), toPath: dir.file("outside"))
        let before = try dir.read("outside/victim.cof")
        let result = try raced(dir, ["rewrap", "--key-file", key, "--add-key-file", second, "--recursive", dir.file("backup")]) {
            try swapForLink(dir, to: "../outside")
        }
        #expect(result.status != Exit.ok)
        #expect(result.stderr.contains("not followed"), "\(result.stderr)")
        #expect(try dir.read("outside/victim.cof") == before)
    }
}

final class LockedResult: @unchecked Sendable {
    private let lock = NSCondition()
    private var value: Result<RunResult, Error>?
    var done: Bool { lock.withLock { value != nil } }
    func set(_ result: Result<RunResult, Error>) {
        lock.withLock {
            value = result
            lock.broadcast()
        }
    }
    func wait() throws -> RunResult {
        lock.lock()
        defer { lock.unlock() }
        while value == nil { lock.wait() }
        return try value!.get()
    }
}

/// Issue 10, item 6: what a reader of a directory accepts as one run.
@Suite struct DirectoryRunMembership {
    func tree(_ dir: Scratch, _ root: String, _ names: [String]) throws {
        for (i, name) in names.enumerated() { _ = try dir.write(pseudoRandom(1000 + i, seed: UInt64(i + 1)), "\(root)/\(name)") }
    }

    @Test("a file of another run dropped into a directory (same key, same name) is reported by verify and decrypt --recursive")
    func fileOfAnotherRun() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        try tree(dir, "backup", ["ibdata1", "db/t1.ibd", "db/t2.ibd", "db/t3.ibd"])
        try tree(dir, "other", ["ibdata1", "extra"])
        _ = try dir.write(Array("planted".utf8), "other/ibdata1")
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("other")]).status == 0)
        // Replace one file, and add one, with files of the other run.
        #expect(rename(dir.file("other/ibdata1.cof"), dir.file("backup/ibdata1.cof")) == 0)
        #expect(rename(dir.file("other/extra.cof"), dir.file("backup/extra.cof")) == 0)
        let verify = try coffer(["verify", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(verify.status == Exit.integrity, "\(verify.stderr)")
        #expect(verify.stderr.contains("ibdata1.cof: not part of this directory's run"), "\(verify.stderr)")
        #expect(verify.stderr.contains("extra.cof: not part of this directory's run"))
        #expect(verify.stderr.contains("2 failed"))
        let decrypt = try coffer(["decrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(decrypt.status == Exit.integrity)
        #expect(!dir.exists("backup/ibdata1") && !dir.exists("backup/extra"))
        #expect(dir.exists("backup/db/t1.ibd") && dir.exists("backup/db/t3.ibd"))
    }

    @Test("a file without an object line dropped into a directory is reported by verify and decrypt --recursive")
    func fileWithoutObjectName() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        try tree(dir, "backup", ["a", "b"])
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        let planted = try dir.write(Array("planted".utf8), "planted")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("backup/a.cof"), "--force", planted]).status == 0)
        let verify = try coffer(["verify", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(verify.status == Exit.integrity)
        #expect(verify.stderr.contains("a.cof: not part of this directory's run: it has no object name"), "\(verify.stderr)")
        let decrypt = try coffer(["decrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(decrypt.status == Exit.integrity)
        #expect(!dir.exists("backup/a") && dir.exists("backup/b"))
    }

    @Test("a run decrypts from its parent directory (object names are relative to the run's root); two runs side by side are told apart")
    func fromParentDirectory() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        try tree(dir, "parent/backup", ["ibdata1", "db/t1.ibd", "db/t2.ibd"])
        let contents = try ["ibdata1", "db/t1.ibd", "db/t2.ibd"].map { try dir.read("parent/backup/\($0)") }
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("parent/backup")]).status == 0)
        let verify = try coffer(["verify", "--recursive", "--key-file", key, dir.file("parent")])
        #expect(verify.status == Exit.ok, "\(verify.stderr)")
        let decrypt = try coffer(["decrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("parent")])
        #expect(decrypt.status == Exit.ok, "\(decrypt.stderr)")
        #expect(try ["ibdata1", "db/t1.ibd", "db/t2.ibd"].map { try dir.read("parent/backup/\($0)") } == contents)

        // Two runs of equal size side by side: neither is chosen, and the message says why.
        try tree(dir, "two/a", ["x", "y"])
        try tree(dir, "two/b", ["x", "y"])
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("two/a")]).status == 0)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("two/b")]).status == 0)
        let both = try coffer(["decrypt", "--recursive", "--key-file", key, dir.file("two")])
        #expect(both.status == Exit.integrity)
        #expect(both.stderr.contains("decrypt each run's own directory"), "\(both.stderr)")
        #expect(!dir.exists("two/a/x") && !dir.exists("two/b/x"))
        // A bigger run beside a smaller one: the bigger is the directory's run, the other is reported.
        try tree(dir, "three/a", ["x", "y", "z"])
        try tree(dir, "three/b", ["x", "y"])
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("three/a")]).status == 0)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("three/b")]).status == 0)
        let bigger = try coffer(["decrypt", "--recursive", "--key-file", key, dir.file("three")])
        #expect(bigger.status == Exit.integrity)
        #expect(bigger.stderr.contains("b/x.cof: not part of this directory's run: it belongs to another run"), "\(bigger.stderr)")
        #expect(bigger.stderr.contains("3 file(s) rooted at 'a'"))
        #expect(dir.exists("three/a/x") && dir.exists("three/a/z") && !dir.exists("three/b/x"))
    }

    @Test("a file of the run moved into a subdirectory of the run is refused as moved")
    func movedWithinRun() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        try tree(dir, "backup", ["ibdata1", "db/t1.ibd", "db/t2.ibd", "db/t3.ibd"])
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        #expect(rename(dir.file("backup/ibdata1.cof"), dir.file("backup/db/ibdata1.cof")) == 0)
        let verify = try coffer(["verify", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(verify.status == Exit.integrity)
        #expect(verify.stderr.contains("db/ibdata1.cof: file was encrypted as 'ibdata1' but found at 'db/ibdata1'"), "\(verify.stderr)")
    }

    /// The stanzas of a Coffer file (identical stanzas: one wrap of one file key).
    func stanzas(_ path: String) throws -> [Stanza] {
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        return try HeaderReading.read(from: source).header.stanzas
    }

    @Test("migrate over several paths: files with the same relative name get different file keys")
    func migrateDistinctNames() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("old pw\n".utf8), "pw.txt")
        for name in ["a/x.age", "b/x.age", "single1.age", "single2.age"] {
            let plain = try dir.write(Array(name.utf8), "plain")
            try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: dir.file(name)).deletingLastPathComponent().path,
                                                    withIntermediateDirectories: true)
            #expect(try coffer(["encrypt", "--format", "age", "-p", "--work-factor", "10", "-o", dir.file(name), plain],
                               environment: ["COFFER_PASSPHRASE": "old pw"]).status == 0)
        }
        let run = try coffer(["migrate", "-q", "--from", "age", "--from-passphrase-file", pw, "--key-file", key,
                              dir.file("a"), dir.file("b"), dir.file("single1.age"), dir.file("single2.age")])
        #expect(run.status == Exit.ok, "\(run.stderr)")
        let all = try ["a/x.cof", "b/x.cof", "single1.cof", "single2.cof"].map { try stanzas(dir.file($0)) }
        for i in all.indices { for j in all.indices where i < j { #expect(all[i] != all[j], "files \(i) and \(j) share a file key") } }
    }

    @Test("reencrypt of several files: a repeated object name gets its own file key; distinct names share one")
    func reencryptDistinctNames() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let next = try dir.keygen("next.key")
        let plain = try dir.write(Array("data".utf8), "plain")
        for name in ["one.cof", "two.cof"] {
            #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file(name), plain]).status == 0)
        }
        try tree(dir, "run", ["p", "q"])
        #expect(try coffer(["encrypt", "--recursive", "--key-file", key, dir.file("run")]).status == 0)
        let result = try coffer(["reencrypt", "-q", "--key-file", key, "--to-key-file", next,
                                 dir.file("one.cof"), dir.file("two.cof"), dir.file("run/p.cof"), dir.file("run/q.cof")])
        #expect(result.status == Exit.ok, "\(result.stderr)")
        #expect(try stanzas(dir.file("one.cof")) != stanzas(dir.file("two.cof")), "two files without object names share a file key")
        // run/p and run/q have distinct names: they may share the key of two.cof's key set.
        #expect(try stanzas(dir.file("run/p.cof")) == stanzas(dir.file("run/q.cof")))
        #expect(try coffer(["verify", "--recursive", "--key-file", next, dir.file("run")]).status == Exit.ok)
        #expect(try coffer(["decrypt", "--key-file", next, dir.file("one.cof")]).stdout == Array("data".utf8))
    }
}
