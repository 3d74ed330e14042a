import Foundation
import Testing

@Suite struct KeyHandling {
    @Test("a wrong key is refused with exit 2, naming the key id the file needs and the one given")
    func wrongKey() throws {
        let dir = Scratch()
        let right = try dir.keygen("right.key")
        let wrong = try dir.keygen("wrong.key")
        let input = try dir.write(pseudoRandom(1000), "in")
        #expect(try coffer(["encrypt", "--key-file", right, "-o", dir.file("f.cof"), input]).status == 0)
        func id(_ name: String) throws -> String {
            String(String(decoding: try dir.read(name), as: UTF8.self).components(separatedBy: "# key id: ")[1].prefix(16))
        }
        let result = try coffer(["decrypt", "--key-file", wrong, "-o", dir.file("out"), dir.file("f.cof")])
        #expect(result.status == Exit.key)
        #expect(result.stderr.contains("opens with: key file \(try id("right.key"))"))
        #expect(result.stderr.contains("you gave: key file \(try id("wrong.key"))"))
        #expect(dir.absent("out"))
        #expect(try coffer(["verify", "--key-file", wrong, dir.file("f.cof")]).status == Exit.key)
    }

    @Test("passphrases from a file (LF or CRLF), from COFFER_PASSPHRASE; a wrong one is refused")
    func passphrases() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(5000), "in")
        let lf = try dir.write(Array("open sesame\n".utf8), "lf")
        let crlf = try dir.write(Array("open sesame\r\n".utf8), "crlf")
        #expect(try coffer(["encrypt", "--passphrase-file", lf, "--work-factor", "10", "-o", dir.file("f.cof"), input]).status == 0)
        let viaCRLF = try coffer(["decrypt", "--passphrase-file", crlf, dir.file("f.cof")])
        #expect(viaCRLF.status == Exit.ok)
        #expect(viaCRLF.stdout == (try dir.read("in")))
        let viaEnv = try coffer(["decrypt", dir.file("f.cof")], environment: ["COFFER_PASSPHRASE": "open sesame"])
        #expect(viaEnv.stdout == (try dir.read("in")))
        let wrong = try coffer(["decrypt", "-o", dir.file("out"), dir.file("f.cof")], environment: ["COFFER_PASSPHRASE": "open sesame!"])
        #expect(wrong.status == Exit.key)
        #expect(wrong.stderr.contains("passphrase"))
        #expect(dir.absent("out"))
        // No terminal to ask on and no passphrase given: a clear error, not a hang.
        let none = try coffer(["decrypt", dir.file("f.cof")])
        #expect(none.status == Exit.key)
        #expect(none.stderr.contains("passphrase (scrypt 2^10)"))
    }

    @Test("a file with a key file and a passphrase opens with either one alone")
    func severalStanzas() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("pw".utf8), "pw")
        let input = try dir.write(pseudoRandom(70000), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--passphrase-file", pw, "--work-factor", "10",
                            "-o", dir.file("f.cof"), input]).status == 0)
        #expect(try coffer(["decrypt", "--key-file", key, dir.file("f.cof")]).stdout == (try dir.read("in")))
        #expect(try coffer(["decrypt", "--passphrase-file", pw, dir.file("f.cof")]).stdout == (try dir.read("in")))
    }

    @Test("a raw key file with a CRLF is refused by name; a text key file with CRLF line endings works")
    func crlfKeyFiles() throws {
        let dir = Scratch()
        let input = try dir.write(pseudoRandom(100), "in")
        let raw = try dir.write(pseudoRandom(32, seed: 3) + [0x0D, 0x0A], "raw-crlf.key")
        let refused = try coffer(["encrypt", "--key-file", raw, "-o", dir.file("x.cof"), input])
        #expect(refused.status == Exit.key)
        #expect(refused.stderr.contains("CRLF"))
        #expect(dir.absent("x.cof"))
        let rawLF = try dir.write(pseudoRandom(32, seed: 3) + [0x0A], "raw-lf.key")
        #expect(try coffer(["encrypt", "--key-file", rawLF, input]).stderr.contains("line feed"))
        let exact = try dir.write(pseudoRandom(32, seed: 3), "raw.key")
        #expect(try coffer(["encrypt", "--key-file", exact, "-o", dir.file("raw.cof"), input]).status == 0)
        let text = String(decoding: try dir.read(URL(fileURLWithPath: try dir.keygen()).lastPathComponent), as: UTF8.self)
        let crlfText = try dir.write(Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8), "crlf-text.key")
        #expect(try coffer(["encrypt", "--key-file", crlfText, "-o", dir.file("t.cof"), input]).status == 0)
        #expect(try coffer(["decrypt", "--key-file", dir.file("test.key"), dir.file("t.cof")]).stdout == (try dir.read("in")))
        let short = try dir.write(pseudoRandom(31), "short.key")
        let wrongLength = try coffer(["encrypt", "--key-file", short, input])
        #expect(wrongLength.status == Exit.key)
        #expect(wrongLength.stderr.contains("is 31 bytes"))
    }

    @Test("a key file readable by group or others is refused unless --allow-insecure-key-file")
    func insecureKeyFile() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        chmod(key, 0o644)
        let input = try dir.write(pseudoRandom(100), "in")
        let refused = try coffer(["encrypt", "--key-file", key, "-o", dir.file("x.cof"), input])
        #expect(refused.status == Exit.key)
        #expect(refused.stderr.contains("chmod 600"))
        #expect(dir.absent("x.cof"))
        #expect(try coffer(["encrypt", "--key-file", key, "--allow-insecure-key-file", "-o", dir.file("x.cof"), input]).status == 0)
    }

    @Test("encrypt with no key lists the ways to give one; no option takes a secret as its value")
    func missingKey() throws {
        let result = try coffer(["encrypt"], stdin: [1, 2, 3])
        #expect(result.status == Exit.key)
        for way in ["--key-file", "--key-fd", "COFFER_KEY", "--passphrase"] { #expect(result.stderr.contains(way)) }
        #expect(result.stdout.isEmpty)
        #expect(try coffer(["encrypt", "--key", "abc"], stdin: []).status == Exit.usage)
        #expect(try coffer(["encrypt", "--password", "abc"], stdin: []).status == Exit.usage)
    }

    @Test("keys from COFFER_KEY and from a descriptor (--key-fd)")
    func environmentAndDescriptor() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let text = String(decoding: try dir.read("test.key"), as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix("COFFER-") }!
        let input = try dir.write(pseudoRandom(4000), "in")
        #expect(try coffer(["encrypt", "-o", dir.file("f.cof"), input], environment: ["COFFER_KEY": String(line)]).status == 0)
        #expect(try coffer(["decrypt", "--key-file", key, dir.file("f.cof")]).stdout == (try dir.read("in")))
        let shell = try spawn(["/bin/sh", "-c", "\"$0\" decrypt --key-fd 3 -o \"$1\" \"$2\" 3< \"$3\"", cofferBinary,
                               dir.file("viafd"), dir.file("f.cof"), key], environment: [:], stdin: nil)
        #expect(shell.status == 0, "\(shell.stderr)")
        #expect(try dir.read("viafd") == (try dir.read("in")))
    }
}
