@_spi(TestVectors) import CofferFormat
import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 10, item 7 through the real binary: names from headers and directories cannot drive the
/// terminal, secrets stay out of child processes' environments, and the process cannot dump core.
@Suite struct Hygiene {
    /// An object name an attacker chooses: a fake "OK" line (ESC, CR), BEL, NUL, DEL, a C1 CSI,
    /// a line feed, a bidi override and bytes that are not UTF-8.
    static let hostileName: [UInt8] = Array("\u{1B}[2K\rOK: all good\u{07}\u{00}\u{7F}\u{9B}31m\n\u{202E}x".utf8) + [0xFF, 0xC3, 0x28]

    /// Bytes a terminal acts on: C0 controls other than line feed, DEL, and C1 controls (UTF-8 C2 80...C2 9F).
    static func terminalControls(_ bytes: [UInt8]) -> [String] {
        var found: [String] = []
        for (i, b) in bytes.enumerated() {
            if (b < 0x20 && b != 0x0A) || b == 0x7F { found.append(String(format: "0x%02x at %d", b, i)) }
            if b == 0xC2, i + 1 < bytes.count, (0x80...0x9F).contains(bytes[i + 1]) { found.append("C1 at \(i)") }
            if b == 0xE2, i + 2 < bytes.count, bytes[i + 1] == 0x80, bytes[i + 2] == 0xAE { found.append("U+202E at \(i)") }
        }
        return found
    }

    /// A file that anyone can write: any stanza, any object name (inspect needs no key).
    static func hostileFile(_ dir: Scratch, objectName: [UInt8]) throws -> String {
        let plain = try dir.write(Array("hello".utf8), "plain")
        let source = try ByteSource.open(path: plain)
        defer { source.close() }
        let stanza = Stanza(type: "custom", arguments: ["abc"], body: [UInt8](repeating: 1, count: 32))
        let encryptor = CofferEncryptor(fileKey: FileKey.random(), stanzas: [stanza])
        let sink = MemorySink()
        _ = try encryptor.encrypt(from: source, to: sink, parameters: HeaderParameters(objectName: objectName),
                                  engine: StreamEngine(threads: 1))
        return try dir.write(sink.bytes, "hostile.cof")
    }

    @Test("inspect escapes control characters and invalid UTF-8 of an object name, in text and in JSON")
    func inspectEscapes() throws {
        let dir = Scratch()
        let path = try Self.hostileFile(dir, objectName: Self.hostileName)
        let text = try coffer(["inspect", path])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(Self.terminalControls(text.stdout).isEmpty, "\(Self.terminalControls(text.stdout))")
        #expect(text.stdoutText.contains("object:      \\u{1B}[2K\\u{0D}OK: all good\\u{07}\\u{00}\\u{7F}\\u{9B}31m\\u{0A}\\u{202E}x\\xFF\\xC3("),
                "\(text.stdoutText)")
        #expect(!text.stdoutText.split(separator: "\n").contains { $0.hasPrefix("OK") })
        let json = try coffer(["inspect", "--json", path])
        #expect(json.status == 0)
        #expect(Self.terminalControls(json.stdout).isEmpty, "\(Self.terminalControls(json.stdout))")
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout)) as? [String: Any]
        #expect((object?["object"] as? String)?.hasPrefix("\\u{1B}[2K") == true)
        // A valid UTF-8 name with controls stays exact in JSON (escaped the JSON way).
        let exact = try Self.hostileFile(dir, objectName: Array("a\u{1B}b\u{9B}c\u{7F}".utf8))
        let exactJSON = try coffer(["inspect", "--json", exact])
        #expect(Self.terminalControls(exactJSON.stdout).isEmpty, "\(Self.terminalControls(exactJSON.stdout))")
        let parsed = try JSONSerialization.jsonObject(with: Data(exactJSON.stdout)) as? [String: Any]
        #expect(parsed?["object"] as? String == "a\u{1B}b\u{9B}c\u{7F}")
    }

    @Test("error messages escape names from headers and from the directory: no fake OK line reaches the terminal")
    func messagesEscape() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let name = "x\u{1B}[2K\rOK: verified\u{07}\u{9B}"
        _ = try dir.write(Array("data".utf8), "tree/\(name)")
        let encrypted = try coffer(["encrypt", "--key-file", key, "--recursive", "--remove-original", dir.file("tree")])
        #expect(encrypted.status == 0, "\(encrypted.stderr)")
        #expect(Self.terminalControls(Array(encrypted.stderr.utf8)).isEmpty)
        // Moved: the object name in its header (escaped) and the path (escaped) are both named.
        try FileManager.default.moveItem(atPath: dir.file("tree/\(name).cof"), toPath: dir.file("tree/moved\u{1B}[1A.cof"))
        let verify = try coffer(["verify", "--key-file", key, "--recursive", dir.file("tree")])
        #expect(verify.status != 0)
        #expect(Self.terminalControls(Array(verify.stderr.utf8)).isEmpty, "\(Self.terminalControls(Array(verify.stderr.utf8)))")
        #expect(verify.stderr.contains("\\u{1B}[2K\\u{0D}OK: verified\\u{07}\\u{9B}"), "\(verify.stderr)")
        // The same name in a single-file error, and a hostile header refused for want of a key.
        let hostile = try Self.hostileFile(dir, objectName: Self.hostileName)
        let refused = try coffer(["decrypt", "--key-file", key, hostile])
        #expect(refused.status == Exit.key)
        #expect(Self.terminalControls(Array(refused.stderr.utf8)).isEmpty)
        let moved = try coffer(["decrypt", "--key-file", key, dir.file("tree/moved\u{1B}[1A.cof"), "-o", dir.file("out\r")])
        #expect(moved.status == 0, "\(moved.stderr)")
        let missing = try coffer(["decrypt", "--key-file", key, dir.file("no\u{1B}]0;title\u{07}such.cof")])
        #expect(missing.status == Exit.io)
        #expect(Self.terminalControls(Array(missing.stderr.utf8)).isEmpty, "\(missing.stderr)")
        #expect(missing.stderr.contains("no\\u{1B}]0;title\\u{07}such.cof"))
    }

    @Test("a decompressor started by decrypt --decompress sees no secret environment variable")
    func childEnvironment() throws {
        let dir = Scratch()
        let text = Array(String(repeating: "INSERT INTO t VALUES (1);\n", count: 500).utf8)
        let key = Array(XbcryptCommand.key.utf8)
        _ = try dir.write(try XbcryptCommand.v3File(text, key: key), "backup/t1.ibd.zst.xbcrypt")
        // A fake zstd: records its environment, passes its input through.
        let dump = dir.file("environment")
        _ = try dir.write(Array("#!/bin/sh\nenv > '\(dump)'\nexec cat\n".utf8), "bin/zstd", mode: 0o755)
        let secrets = [
            "XBCRYPT_ENCRYPTION_KEY": XbcryptCommand.key,
            "COFFER_PASSPHRASE": "passphrase-secret-1",
            "COFFER_IDENTITY_PASSPHRASE": "identity-secret-2",
            "AWS_SECRET_ACCESS_KEY": "aws-secret-3",
            "AWS_SESSION_TOKEN": "aws-session-4",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE5",
            "VAULT_TOKEN": "vault-token-6",
            "GITHUB_TOKEN": "other-token-7",
        ]
        var environment = secrets
        environment["PATH"] = "\(dir.file("bin")):/usr/bin:/bin"
        environment["HARMLESS_SETTING"] = "visible"
        let result = try coffer(["decrypt", "--recursive", "--decompress", dir.file("backup")], environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try dir.read("backup/t1.ibd") == text)
        let seen = String(decoding: try dir.read("environment"), as: UTF8.self)
        #expect(seen.contains("HARMLESS_SETTING=visible"), "the child's environment was not recorded: \(seen)")
        for (name, value) in secrets {
            #expect(!seen.contains(name), "\(name) reached the decompressor")
            #expect(!seen.contains(value), "the value of \(name) reached the decompressor")
        }
    }

    /// Starts `argv` with standard input from a pipe the caller holds open; returns the pid and the write end.
    static func spawnBlocked(_ argv: [String]) throws -> (pid_t, Int32) {
        let env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        let started = try TestSpawn.startWithInput(argv, environment: env.map { "\($0.key)=\($0.value)" })
        return (started.pid, started.input)
    }

    static func procText(_ pid: pid_t, _ name: String) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/\(name)", encoding: .utf8)) ?? ""
    }

    @Test("a running coffer has core dumps disabled (RLIMIT_CORE 0) and is not dumpable (its /proc files belong to root)")
    func noCoreDumps() throws {
        // The core limit is raised first, so only coffer itself can bring it to 0. As root, the
        // process runs as nobody, so that the owner of /proc/PID tells whether it is dumpable.
        let shell = ["/bin/sh", "-c", "ulimit -c 4096 || exit 97; exec \"$0\" decrypt", cofferBinary]
        let asNobody = getuid() == 0
        let argv = asNobody ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] + shell : shell
        let (pid, writeEnd) = try Self.spawnBlocked(argv)
        defer {
            close(writeEnd)  // coffer then reads an empty input and exits
            _ = waitForExit(pid)
        }
        // Wait until coffer itself is blocked reading standard input.
        let deadline = Date().addingTimeInterval(20)
        var blocked = false
        var sleepingSince: Date?
        while Date() < deadline {
            let stat = Self.procText(pid, "stat")
            let wchan = Self.procText(pid, "wchan")
            if stat.contains("(coffer) S") {
                sleepingSince = sleepingSince ?? Date()
                // Where the kernel hides wchan ("0"), a second of sleep stands in for it.
                if wchan.contains("pipe") || (wchan == "0" && Date().timeIntervalSince(sleepingSince!) > 1) {
                    blocked = true
                    break
                }
            } else {
                sleepingSince = nil
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        try #require(blocked, "coffer did not start and block on its input: \(Self.procText(pid, "stat"))")
        let limits = Self.procText(pid, "limits").split(separator: "\n").first { $0.hasPrefix("Max core file size") }
        let fields = limits?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        #expect(fields.count >= 6 && fields[4] == "0" && fields[5] == "0", "\(limits ?? "no limits line")")
        let uidLine = Self.procText(pid, "status").split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        let uid = uidLine.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap { UInt32($0) }
        try #require(uid != nil && uid != 0, "the test needs coffer to run as a user other than root: \(uidLine)")
        // The files of a non-dumpable process's /proc entry belong to root (only root may read its
        // environment and memory); a dumpable one's belong to its user.
        var st = stat()
        #expect(stat("/proc/\(pid)/environ", &st) == 0)
        #expect(st.st_uid == 0, "/proc/\(pid)/environ belongs to uid \(st.st_uid): the process is dumpable")
    }
}
