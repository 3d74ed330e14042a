@testable import CofferDatabase
import Foundation
import Testing

/// A started tool is waited for once, whoever asks (a failing backup ends a psql session from one
/// task while another is still reading from it).
@Suite struct ChildTests {
    @Test("two waits at once share one waitpid: both see the real exit status; terminate after the reap signals nothing")
    func sharedWait() async throws {
        let child = try Child(["/bin/sh", "-c", "sleep 0.2; exit 7"], name: "sh", environment: [])
        async let first = child.wait()
        async let second = child.wait()
        let (a, b) = await (first, second)
        #expect(a == b, "\(a) and \(b)")
        #expect(a & 0x7f == 0 && (a >> 8) & 0xff == 7, "status \(a)")
        child.terminate()  // reaped: its pid may be another process's by now
        #expect(await child.wait() == a)
    }

    @Test("terminate before the reap stops the child, and the wait reports the signal")
    func terminateRunning() async throws {
        let child = try Child(["/bin/sh", "-c", "exec sleep 30"], name: "sh", environment: [])
        child.terminate()
        let status = await child.wait()
        #expect(status & 0x7f == SIGTERM, "status \(status)")
    }
}
