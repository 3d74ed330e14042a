import CofferKeys
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// ``ChildSpawn``: the one way Coffer starts a child process (database tools; to be used by the
/// archiver's command streams and the decompressors).
@Suite struct ChildSpawnTests {
    /// Runs `argv` with stdout into a pipe; returns (wait status, stdout, stderr when captured).
    static func run(_ argv: [String], environment: [String] = ChildEnvironment.entries(), captureStderr: Bool = false,
                    newProcessGroup: Bool = false) throws -> (status: Int32, out: String, err: String, pid: pid_t) {
        let out = try ChildSpawn.pipe()
        let started = try ChildSpawn.start(argv, environment: environment, stdout: .fd(out.write), captureStderr: captureStderr,
                                           newProcessGroup: newProcessGroup)
        close(out.write)
        let stdout = readAll(out.read)
        let stderr = started.stderrPipe.map(readAll) ?? ""
        return (ChildSpawn.wait(started.pid), stdout, stderr, started.pid)
    }

    static func readAll(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        close(fd)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("a descriptor of this process without close-on-exec does not reach the child; 0-2 are what was asked")
    func descriptorsAreClosed() throws {
        let fd = open("/dev/null", O_RDONLY)  // no O_CLOEXEC: a plain posix_spawn would pass it on
        #expect(fd >= 0)
        let high = dup2(fd, 77)
        close(fd)
        defer { close(high) }
        #expect(high == 77)
        let leaked = try Self.run(["/usr/bin/readlink", "/proc/self/fd/77"])
        #expect(leaked.status != 0, "descriptor 77 reached the child: \(leaked.out)")
        let stdin = try Self.run(["/usr/bin/readlink", "/proc/self/fd/0"])
        #expect(stdin.status == 0 && stdin.out == "/dev/null\n", "\(stdin)")
    }

    @Test("signal dispositions are the defaults and the mask is empty, whatever this process set; a new process group on request")
    func signalsAndProcessGroup() throws {
        // SigIgn/SigBlk of the child itself (cat of /proc/self/status), as hex masks.
        let status = try Self.run(["/bin/cat", "/proc/self/status"], newProcessGroup: true)
        #expect(status.status == 0)
        func mask(_ field: String) -> UInt64? {
            status.out.split(separator: "\n").first { $0.hasPrefix(field + ":") }
                .flatMap { UInt64($0.split(separator: "\t").last.map(String.init) ?? "", radix: 16) }
        }
        let ignored = try #require(mask("SigIgn")), blocked = try #require(mask("SigBlk"))
        for sig in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
            #expect(ignored & (1 << UInt64(sig - 1)) == 0, "signal \(sig) ignored in the child")
        }
        #expect(blocked == 0)
        // Its own process group: the group id it reports is its pid.
        let group = try Self.run(["/bin/sh", "-c", "ps -o pgid= -p $$ | tr -d ' '; echo $$"], newProcessGroup: true)
        let lines = group.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines[0] == lines[1], "pgid vs pid: \(lines)")
    }

    @Test("standard error captured through a pipe; exit status and signal described; only the given environment")
    func stderrStatusEnvironment() throws {
        let failing = try Self.run(["/bin/sh", "-c", "echo oops >&2; exit 3"], captureStderr: true)
        #expect(failing.err == "oops\n")
        #expect(ChildSpawn.describe(failing.status) == "exit status 3")
        let killed = try Self.run(["/bin/sh", "-c", "kill -9 $$"])
        #expect(ChildSpawn.describe(killed.status) == "killed by signal 9")
        let env = try Self.run(["/usr/bin/env"], environment: ["ONLY=this"])
        #expect(env.out == "ONLY=this\n")
        #expect(throws: ChildSpawn.Failure.self) { _ = try ChildSpawn.start(["/nonexistent/tool"]) }
    }
}
