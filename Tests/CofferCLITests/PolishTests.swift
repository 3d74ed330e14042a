import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What a new user notices first (issue 11, item 6): help texts, exit codes, pipes, counted
/// messages, the version line, leftovers of killed runs, and the install script.
@Suite("Polish: what a new user notices first")
struct PolishTests {
    // MARK: Help texts

    /// Every subcommand `coffer --help` lists.
    static let subcommands = ["keygen", "encrypt", "decrypt", "verify", "inspect", "rewrap", "reencrypt", "migrate",
                              "init", "backup", "snapshots", "ls", "restore", "dump", "diff", "check", "forget", "prune", "key"]

    /// Lines of a help text that the parser broke before they were full: a line of a paragraph
    /// followed by another line of the same paragraph whose first word would have fitted on it
    /// (with 3 columns to spare, as the parser keeps the column after a word free). That is what a
    /// help string with line breaks of its own looks like once re-wrapped ("when omitted or" /
    /// "'-')…"). Paragraphs are the unindented lines of the description and the help of an option
    /// (its lines indented to the help column); lists and examples (indented) keep their lines.
    static func brokenLines(_ help: String, width: Int) -> [String] {
        func indent(_ line: Substring) -> Int { line.prefix { $0 == " " }.count }
        func isHeading(_ line: Substring) -> Bool { line.first?.isUppercase == true && line.prefix { $0 != " " }.hasSuffix(":") && line.uppercased() == line }
        var broken: [String] = []
        var section = ""
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        for (a, b) in zip(lines, lines.dropFirst()) {
            if let colon = a.firstIndex(of: ":"), a[..<colon].allSatisfy({ $0.isUppercase }), !a[..<colon].isEmpty { section = String(a[..<colon]) }
            guard !a.trimmingCharacters(in: .whitespaces).isEmpty, !b.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            if section == "OPTIONS" || section == "ARGUMENTS" {
                guard indent(b) >= 20 else { continue }  // b is a new option
                // a is an option whose label fills its line (its help starts on the next): not a paragraph line.
                if indent(a) < 20, a.dropFirst(2).range(of: "  ") == nil { continue }
            } else {
                guard indent(a) == 0, indent(b) == 0, !isHeading(b) else { continue }
            }
            let firstWord = b.split(separator: " ").first ?? ""
            if a.count + 1 + firstWord.count <= width - 3 { broken.append("\(a)⏎\(b)") }
        }
        return broken
    }

    /// Commands whose help is exempt from the check (none).
    static let unwrappedElsewhere: Set<String> = []

    @Test("help texts are one paragraph per string: at 80 columns no line of a paragraph ends before it is full",
          arguments: [""] + subcommands)
    func helpNotHardWrapped(command: String) throws {
        if Self.unwrappedElsewhere.contains(command) { return }
        let result = try coffer(command.isEmpty ? ["--help"] : [command, "--help"], environment: ["COLUMNS": "80"])
        #expect(result.status == Exit.ok, "\(result.stderr)")
        #expect(result.stdoutText.contains("USAGE: coffer"))
        let broken = Self.brokenLines(result.stdoutText, width: 80)
        #expect(broken.isEmpty, "coffer \(command) --help:\n\(broken.joined(separator: "\n"))")
        // No line is longer than the width, examples aside (a command line is not broken).
        for line in result.stdoutText.split(separator: "\n") where line.count > 80 {
            #expect(line.hasPrefix("  ") || line.hasPrefix("USAGE: "), "coffer \(command) --help: a line of \(line.count) columns: \(line)")
        }
    }

    @Test("the hard-wrap check finds a hard-wrapped paragraph, and accepts lists, examples and option help")
    func hardWrapCheckWorks() {
        // 'coffer encrypt --help' at 80 columns before this fix: the parser re-wrapped a string
        // that had line breaks of its own.
        let broken = """
            OVERVIEW: Encrypt a file, a stream, or every file in a directory tree.

            Reads IN (standard input when omitted or '-') and writes OUT (standard output
            when omitted or
            '-'). A file output is written under a temporary name and appears under its
            name only when
            complete. Several keys may be given: any one of them opens the file.

            USAGE: coffer encrypt [<options>] [<in>]
            """
        #expect(Self.brokenLines(broken, width: 80) == ["when omitted or⏎'-'). A file output is written under a temporary name and appears under its",
                                                        "name only when⏎complete. Several keys may be given: any one of them opens the file."])
        let fine = """
            OVERVIEW: Encrypt a file.

            Reads IN (standard input when omitted or '-') and writes OUT (standard output
            when omitted or '-'). A file output is written under a temporary name.

            Exit codes:
              0    success
              1    any other failure

            Examples:
              coffer keygen --symmetric -o backup.key

            USAGE: coffer encrypt [<options>] [<in>]

            OPTIONS:
              --key-file <file>       A symmetric key file (from 'coffer keygen --symmetric', or
                                      32 raw bytes). Repeatable.
              --passphrase-file <file>
                                      Read the passphrase from the first line of this file.
              -q, --quiet             No progress line.
            """
        #expect(Self.brokenLines(fine, width: 80).isEmpty, "\(Self.brokenLines(fine, width: 80))")
    }

    // MARK: Exit codes and pipes

    @Test("refusing to write ciphertext to a terminal is a usage error (exit 64), not a key error")
    func ciphertextToTerminalIsUsage() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let run = try cofferOnTerminal(["encrypt", "--key-file", key], answers: [])
        #expect(!run.timedOut)
        #expect(run.status == Exit.usage, "\(run.screen)")
        #expect(run.screen.contains("refusing to write binary ciphertext to a terminal"), "\(run.screen)")
    }

    /// Runs a bash pipeline with `set -o pipefail`; $COFFER is the binary. Returns its exit
    /// status (a pipeline whose first command died of SIGPIPE: 141) and stderr.
    func pipeline(_ script: String, in dir: Scratch) throws -> RunResult {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") }
        env["COFFER"] = cofferBinary
        env["DIR"] = dir.path
        return try spawn(["/bin/bash", "-c", "set -o pipefail; \(script)"], environment: env, stdin: nil)
    }

    @Test("'coffer … | head' ends quietly: no error message, the pipeline status of a SIGPIPE (141), as other tools")
    func brokenPipeIsQuiet() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(pseudoRandom(16 << 20, seed: 11), "big")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("big.cof"), dir.file("big")]).status == Exit.ok)
        for (what, script) in [
            ("decrypt", "\"$COFFER\" decrypt --key-file \"$DIR/test.key\" \"$DIR/big.cof\" | head -c 1000 > /dev/null"),
            ("encrypt", "\"$COFFER\" encrypt --key-file \"$DIR/test.key\" \"$DIR/big\" | head -c 1000 > /dev/null"),
            // Both ends quiet: decrypt's reader goes, then encrypt's.
            ("encrypt | decrypt", "\"$COFFER\" encrypt --key-file \"$DIR/test.key\" \"$DIR/big\" | \"$COFFER\" decrypt --key-file \"$DIR/test.key\" | head -c 10 > /dev/null; s=(\"${PIPESTATUS[@]}\"); [ \"${s[0]}${s[1]}\" = 141141 ] || exit 1; exit 141"),
        ] {
            // (Tools such as yes(1) or cat(1) would complain here: this test process ignores
            // SIGPIPE, and its children inherit that. coffer restores the default to end by it.)
            let result = try pipeline(script, in: dir)
            #expect(result.status == 128 + SIGPIPE, "\(what): status \(result.status), \(result.stderr)")
            #expect(result.stderr.isEmpty, "\(what): \(result.stderr)")
        }
        // A reader that takes everything: success, as before.
        let whole = try pipeline("\"$COFFER\" decrypt --key-file \"$DIR/test.key\" \"$DIR/big.cof\" | cmp - \"$DIR/big\"", in: dir)
        #expect(whole.status == Exit.ok, "\(whole.stderr)")
        // A write error that is not a closed pipe is still reported (standard output on a full device).
        if FileManager.default.fileExists(atPath: "/dev/full") {
            let full = try pipeline("\"$COFFER\" decrypt --key-file \"$DIR/test.key\" \"$DIR/big.cof\" > /dev/full", in: dir)
            #expect(full.status == Exit.io, "\(full.stderr)")
            #expect(full.stderr.contains("error:"), "\(full.stderr)")
        }
    }

    // MARK: Messages and version

    @Test("counted messages agree in number: 1 file, 2 files, 1 chunk, 1 byte")
    func countsAgree() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write([7], "one/a")
        let one = try coffer(["encrypt", "--key-file", key, "--recursive", dir.file("one")])
        #expect(one.status == Exit.ok, "\(one.stderr)")
        #expect(one.stderr.contains("encrypted 1 file ("), "\(one.stderr)")
        #expect(!one.stderr.contains("1 files"), "\(one.stderr)")
        _ = try dir.write([1, 2], "two/a")
        _ = try dir.write([3], "two/b")
        let two = try coffer(["encrypt", "--key-file", key, "--recursive", dir.file("two")])
        #expect(two.stderr.contains("encrypted 2 files ("), "\(two.stderr)")
        let verified = try coffer(["verify", "--key-file", key, dir.file("one/a.cof")])
        #expect(verified.status == Exit.ok)
        #expect(verified.stderr.contains(": 1 byte authenticated"), "\(verified.stderr)")
        let inspected = try coffer(["inspect", dir.file("one/a.cof")])
        #expect(inspected.stdoutText.contains("payload:     1 byte in 1 chunk\n"), "\(inspected.stdoutText)")
        #expect(inspected.stdoutText.contains("stanzas:     1 (it opens the file)"), "\(inspected.stdoutText)")
    }

    @Test("--version names the format version that encrypt writes")
    func versionNamesWrittenFormat() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let version = try coffer(["--version"])
        #expect(version.status == Exit.ok)
        _ = try dir.write([1, 2, 3], "p")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("p.cof"), dir.file("p")]).status == Exit.ok)
        let json = try coffer(["inspect", "--json", dir.file("p.cof")])
        let written = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout)) as? [String: Any])["version"] as? String
        #expect(written == "coffer/v2")
        #expect(version.stdoutText.contains("writes format \(written ?? "?");"), "\(version.stdoutText)")
    }

    // MARK: Leftovers of killed runs

    /// The temporary outputs (`.NAME.coffer-tmp-XXXXXX`) in a directory.
    static func temporaries(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.contains(".coffer-tmp-") }.sorted()
    }

    @Test("a killed run's temporary output is removed by the next recursive run; one a live process writes is kept")
    func leftoversOfKilledRuns() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write(pseudoRandom(1000, seed: 3), "tree/a")
        let tree = dir.file("tree")
        // A live writer: 'encrypt -o tree/b.cof' reading a FIFO that stays open, so it waits with
        // its temporary output open (and locked).
        let fifo = dir.file("input.fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        let writer = open(fifo, O_RDWR)
        defer { close(writer) }
        let pid = try spawnInBackground([cofferBinary, "encrypt", "--key-file", key, "-o", "\(tree)/b.cof"], stdinPath: fifo)
        let chunk = pseudoRandom(1 << 20)
        _ = chunk.withUnsafeBytes { write(writer, $0.baseAddress!, $0.count) }
        for _ in 0..<500 where Self.temporaries(tree).isEmpty { usleep(20_000) }
        let live = Self.temporaries(tree)
        #expect(live.count == 1 && live.first?.hasPrefix(".b.cof.coffer-tmp-") == true, "\(live)")
        // Not a name Coffer gives its temporary files: never removed.
        _ = try dir.write([9], "tree/notes.coffer-tmp-mine")

        let first = try coffer(["encrypt", "--key-file", key, "--recursive", tree])
        #expect(first.status == Exit.ok, "\(first.stderr)")
        #expect(first.stderr.contains("temporary file of a run in progress: left alone"), "\(first.stderr)")
        #expect(Self.temporaries(tree) == (live + ["notes.coffer-tmp-mine"]).sorted())

        // The writer is killed: nothing removes its temporary file, until the next run.
        kill(pid, SIGKILL)
        #expect(waitForExit(pid) == 128 + SIGKILL)
        #expect(Self.temporaries(tree) == (live + ["notes.coffer-tmp-mine"]).sorted())
        let second = try coffer(["verify", "--key-file", key, "--recursive", tree])
        #expect(second.status == Exit.ok, "\(second.stderr)")
        #expect(second.stderr.contains("\(live.first ?? "?"): temporary file of an interrupted run: removed"), "\(second.stderr)")
        #expect(Self.temporaries(tree) == ["notes.coffer-tmp-mine"])
        #expect(try dir.read("tree/notes.coffer-tmp-mine") == [9])
        #expect(dir.exists("tree/a.cof") && !dir.exists("tree/b.cof"))
        unlink(fifo)
    }

    @Test("a leftover written by hand (no process ever held it) is removed; one whose lock a live process holds is kept")
    func leftoverLockDecides() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try dir.write([1], "tree/a")
        let dead = try dir.write([2], "tree/.x.cof.coffer-tmp-Ab12Cd")
        let held = try dir.write([3], "tree/sub/.y.cof.coffer-tmp-Zz9876")
        // Close-on-exec: processes that other tests spawn meanwhile must not inherit (and hold) the lock.
        let fd = open(held, O_RDONLY | O_CLOEXEC)
        #expect(flock(fd, LOCK_EX) == 0)
        let run = try coffer(["encrypt", "--key-file", key, "--recursive", dir.file("tree")])
        #expect(run.status == Exit.ok, "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dead), "\(run.stderr)")
        #expect(FileManager.default.fileExists(atPath: held), "\(run.stderr)")
        close(fd)  // the owner is gone
        let again = try coffer(["encrypt", "--key-file", key, "--recursive", "--force", dir.file("tree")])
        #expect(again.status == Exit.ok, "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: held), "\(again.stderr)")
    }

    // MARK: Installation

    /// scripts/ of this checkout.
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts").path

    @Test("scripts/install.sh installs the binary, a man page per command and bash/zsh/fish completions under DESTDIR/PREFIX")
    func installScript() throws {
        let dir = Scratch()
        let env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COFFER_") && $0.key != "PREFIX" && $0.key != "DESTDIR" }
        let help = try spawn(["/bin/bash", "\(Self.scripts)/install.sh", "--help"], environment: env, stdin: nil)
        #expect(help.status == 0)
        #expect(help.stdoutText.contains("DESTDIR") && help.stdoutText.contains("--prefix"))
        let wrong = try spawn(["/bin/bash", "\(Self.scripts)/install.sh", "--prefix", "relative/path", "--binary", cofferBinary],
                              environment: env, stdin: nil)
        #expect(wrong.status == Exit.usage)

        var stageEnv = env
        stageEnv["DESTDIR"] = dir.file("stage")
        stageEnv["PREFIX"] = "/opt/coffer"
        let install = try spawn(["/bin/bash", "\(Self.scripts)/install.sh", "--binary", cofferBinary], environment: stageEnv, stdin: nil)
        #expect(install.status == 0, "\(install.stderr)")
        let root = dir.file("stage/opt/coffer")
        #expect(FileManager.default.isExecutableFile(atPath: "\(root)/bin/coffer"))
        let installed = try spawn(["\(root)/bin/coffer", "--version"], environment: env, stdin: nil)
        #expect(installed.status == 0 && installed.stdoutText.contains("coffer/v2"))

        let manDir = "\(root)/share/man/man1"
        for command in [""] + Self.subcommands {
            let page = "\(manDir)/coffer\(command.isEmpty ? "" : "-\(command)").1"
            let text = try String(contentsOfFile: page, encoding: .utf8)
            for section in [".TH", ".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SEE ALSO"] {
                #expect(text.contains("\n\(section)"), "\(page) lacks \(section)")
            }
            if command != "" { #expect(text.contains(".SH DESCRIPTION"), "\(page)") }
            if FileManager.default.isExecutableFile(atPath: "/usr/bin/groff") {
                // troff reads it without a single warning.
                let check = try spawn(["/usr/bin/groff", "-k", "-man", "-Tutf8", "-ww", "-z", page], environment: env, stdin: nil)
                #expect(check.status == 0 && check.stderr.isEmpty, "\(page): \(check.stderr)")
            }
        }
        // A paragraph of the help is one line of the page: troff fills it for the reader's width.
        let encrypt = try String(contentsOfFile: "\(manDir)/coffer-encrypt.1", encoding: .utf8)
        #expect(encrypt.contains("Reads IN (standard input when omitted or '\\-') and writes OUT (standard output when omitted or '\\-'). A file output"))
        #expect(encrypt.contains(".TP\n\\fB\\-\\-key\\-file\\fR \\fIfile\\fR\n"))
        let top = try String(contentsOfFile: "\(manDir)/coffer.1", encoding: .utf8)
        #expect(top.contains("\\fBcoffer\\-encrypt\\fR(1)"))

        let bash = "\(root)/share/bash-completion/completions/coffer"
        #expect(try String(contentsOfFile: bash, encoding: .utf8).contains("complete -o filenames -F _coffer coffer"))
        #expect(try spawn(["/bin/bash", "-n", bash], environment: env, stdin: nil).status == 0)
        #expect(try String(contentsOfFile: "\(root)/share/zsh/site-functions/_coffer", encoding: .utf8).hasPrefix("#compdef coffer"))
        #expect(try String(contentsOfFile: "\(root)/share/fish/vendor_completions.d/coffer.fish", encoding: .utf8).contains("complete -c 'coffer' -n"))
        // Nothing outside DESTDIR/PREFIX.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("stage")) == ["opt"])
    }
}
