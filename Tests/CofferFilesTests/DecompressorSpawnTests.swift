@testable import CofferFiles
import CofferFormat
import Foundation
import Testing

/// The decompressor child (`decrypt --decompress`) is started through ChildSpawn: it gets its
/// input and output as descriptors 0 and 1, and no other descriptor of this process.
@Suite struct DecompressorSpawn {
    /// Runs `script` as a decompressor (sh -c) with `input` as standard input; returns what it wrote.
    func run(_ script: String, input: [UInt8]) throws -> (output: [UInt8], wait: () throws -> Void) {
        let tool = Decompressor(suffix: ".test", tool: "sh", arguments: ["-c", script], package: "dash")
        let inPipe = try makePipe(for: "in"), outPipe = try makePipe(for: "out")
        let wait: () throws -> Void
        do {
            wait = try tool.start(input: inPipe.read, output: outPipe.write)
        } catch {
            for fd in [inPipe.read, inPipe.write, outPipe.read, outPipe.write] { close(fd) }
            throw error
        }
        close(inPipe.read); close(outPipe.write)
        _ = input.withUnsafeBytes { write(inPipe.write, $0.baseAddress, $0.count) }
        close(inPipe.write)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(outPipe.read, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            output += buffer[..<n]
        }
        close(outPipe.read)
        return (output, wait)
    }

    @Test("the decompressor gets descriptors 0-2 only, none of this process's (even inheritable ones)")
    func onlyStandardDescriptors() throws {
        let fd = open("/dev/null", O_RDONLY)  // inheritable (no O_CLOEXEC)
        #expect(fd > 2)
        defer { close(fd) }
        // Lists the child's open descriptors other than the one ls itself opens for the listing.
        let script = "cat >/dev/null; for f in /proc/self/fd/*; do n=${f##*/}; [ -e \"$f\" ] && echo $n; done; [ -e /proc/self/fd/\(fd) ] && echo leaked || echo closed"
        let (output, wait) = try run(script, input: Array("input".utf8))
        try wait()
        let lines = String(decoding: output, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines.last == "closed")
        // The shell opens nothing of its own for a glob: what is open is 0, 1, 2 (and at most the
        // directory the glob reads, already closed when the loop runs).
        #expect(Set(lines.dropLast()).isSubset(of: ["0", "1", "2"]), "\(lines)")
        #expect(Set(lines.dropLast()).isSuperset(of: ["0", "1", "2"]), "\(lines)")
    }

    @Test("the decompressor's input and output are the descriptors given; its failure is an error naming its status")
    func inputOutputAndFailure() throws {
        let (output, wait) = try run("tr a-z A-Z", input: Array("plain text\n".utf8))
        try wait()
        #expect(output == Array("PLAIN TEXT\n".utf8))
        let (_, failing) = try run("cat >/dev/null; exit 3", input: Array("x".utf8))
        let error = #expect(throws: CofferError.self) { try failing() }
        #expect(error.map { "\($0)" }?.contains("exit status 3") == true)
    }

    @Test("the decompressor's environment holds no secret variable")
    func noSecretsInEnvironment() throws {
        setenv("COFFER_TEST_DECOMPRESSOR_SECRET", "hunter2", 1)
        defer { unsetenv("COFFER_TEST_DECOMPRESSOR_SECRET") }
        let (output, wait) = try run("cat >/dev/null; env", input: [])
        try wait()
        let env = String(decoding: output, as: UTF8.self)
        #expect(!env.contains("hunter2"))
        #expect(env.contains("PATH="))
    }
}
