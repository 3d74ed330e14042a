import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The test harness itself: tests run in parallel in one process, so a descriptor one test holds
/// reaches every process another test spawns meanwhile unless it is close-on-exec and the spawn
/// closes what it does not pass on. A script still open for writing in any process cannot be
/// executed ("Text file busy", ETXTBSY): the cause of a rare "cannot run" of a fake tool.
@Suite struct SpawnRace {
    @Test("scripts written and run at once from many threads, while others spawn, never meet a busy text file")
    func scriptsWrittenAndRunInParallel() throws {
        let dir = Scratch()
        let threads = 12, rounds = 25
        let failures = LockedFailures()
        var workers: [Thread] = []
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            let worker = Thread {
                defer { done.leave() }
                for r in 0..<rounds {
                    do {
                        let script = try dir.write(Array("#!/bin/sh\nexit \(r % 50 + 3)\n".utf8), "bin/t\(t)-r\(r)", mode: 0o755)
                        let result = try spawn([script], environment: [:], stdin: nil)
                        if result.status != Int32(r % 50 + 3) { failures.add("t\(t) r\(r): status \(result.status) \(result.stderr)") }
                    } catch {
                        failures.add("t\(t) r\(r): \(error)")
                    }
                }
            }
            worker.stackSize = 1 << 20
            workers.append(worker)
            worker.start()
        }
        done.wait()
        let failed = failures.all
        #expect(failed.count == 0, "\(failed.count) of \(threads * rounds) runs failed, e.g. \(failed.prefix(3))")
    }

    @Test("a spawned child gets descriptors 0-2 only: none this process opened, close-on-exec or not")
    func childGetsOnlyStandardDescriptors() throws {
        let fd = open("/dev/null", O_RDONLY)  // inheritable (no O_CLOEXEC), as Foundation's writes are
        #expect(fd > 2)
        defer { close(fd) }
        let script = "if [ -e /proc/self/fd/\(fd) ]; then echo leaked; else echo closed; fi"
        let result = try spawn(["/bin/sh", "-c", script], environment: [:], stdin: nil)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdoutText == "closed\n")
    }

    @Test("an executable written for a test is whole, has its mode, and runs at once")
    func executableWritten() throws {
        let dir = Scratch()
        let body = "#!/bin/sh\necho \"$@\" \"$0\"\n" + String(repeating: "# padding past one pipe buffer\n", count: 4000)
        let path = try dir.write(Array(body.utf8), "bin/tool", mode: 0o750)
        #expect(try dir.read("bin/tool") == Array(body.utf8))
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o7777 == 0o750)
        let result = try spawn([path, "a", "b"], environment: [:], stdin: nil)
        #expect(result.status == 0 && result.stdoutText == "a b \(path)\n", "\(result.stderr)")
    }
}

final class LockedFailures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.withLock { items.append(s) } }
    var all: [String] { lock.withLock { items } }
}
