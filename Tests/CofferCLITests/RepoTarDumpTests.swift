import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `coffer dump SNAPSHOT DIR` through the real binary, piped into GNU tar.
@Suite struct RepoTarDumpTests {
    @Test("dump of a directory pipes into tar -t and tar -x; the extracted tree equals the source; a file still dumps raw")
    func dumpDirectoryIntoTar() throws {
        let scratch = Scratch()
        let key = try scratch.keygen()
        let env = ["COFFER_REPOSITORY": scratch.file("repo")]
        func run(_ args: [String]) throws -> RunResult { try coffer([args[0], "--key-file", key] + args.dropFirst(), environment: env) }
        let source = scratch.file("src").replacingOccurrences(of: "//", with: "/")
        _ = try scratch.write(Array("hello\n".utf8), "src/a.txt", mode: 0o640)
        _ = try scratch.write(pseudoRandom(2 << 20, seed: 5), "src/sub/big.bin", mode: 0o600)
        let long = String(repeating: "l", count: 110)
        _ = try scratch.write(Array("long\n".utf8), "src/sub/\(long)", mode: 0o644)
        symlink("../a.txt", scratch.file("src/sub/link"))
        #expect(try run(["init"]).status == 0)
        #expect(try run(["backup", source]).status == 0)

        // tar -t on the piped stream (bash's pipefail: either side failing fails the test).
        let pipeline = "set -o pipefail; '\(cofferBinary)' dump --key-file '\(key)' latest '\(source)' | tar -t"
        let listed = try spawn(["/bin/bash", "-c", pipeline], environment: env, stdin: nil)
        #expect(listed.status == 0, "\(listed.stderr)")
        let base = String(source.dropFirst())
        let names = Set(listed.stdoutText.split(separator: "\n").map(String.init))
        #expect(names == [base + "/", base + "/a.txt", base + "/sub/", base + "/sub/big.bin", base + "/sub/\(long)", base + "/sub/link"])

        // tar -x, then compare.
        let out = scratch.file("x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extract = "set -o pipefail; '\(cofferBinary)' dump --key-file '\(key)' latest '\(source)' | tar -x -C '\(out)'"
        let extracted = try spawn(["/bin/bash", "-c", extract], environment: env, stdin: nil)
        #expect(extracted.status == 0, "\(extracted.stderr)")
        for name in ["a.txt", "sub/big.bin", "sub/\(long)"] {
            #expect(FileManager.default.contents(atPath: out + source + "/" + name).map { [UInt8]($0) } == (try scratch.read("src/" + name)), "\(name)")
        }
        var st = stat()
        #expect(lstat(out + source + "/a.txt", &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: out + source + "/sub/link")) == "../a.txt")

        // "/" is the whole snapshot; a file is still written raw; a missing path fails with usage.
        let whole = try spawn(["/bin/bash", "-c", "set -o pipefail; '\(cofferBinary)' dump --key-file '\(key)' latest / | tar -t"],
                              environment: env, stdin: nil)
        #expect(whole.status == 0 && whole.stdoutText.contains(base + "/sub/big.bin"), "\(whole.stderr)")
        #expect(try run(["dump", "latest", source + "/a.txt"]).stdout == Array("hello\n".utf8))
        #expect(try run(["dump", "latest", source + "/nowhere"]).status == 64)
    }
}
