import CofferFormat
import Foundation
import Testing

@Suite("AsyncLimiter: the bound on work in flight shared by S3 and the repository")
struct AsyncLimiterTests {
    final class Gauge: @unchecked Sendable {
        private let lock = NSLock()
        private var current = 0
        private(set) var peak = 0
        private(set) var finished = 0
        func enter() { lock.withLock { current += 1; peak = max(peak, current) } }
        func leave() { lock.withLock { current -= 1; finished += 1 } }
        var now: Int { lock.withLock { current } }
    }

    @Test("never more than `count` holders at once, and every waiter gets its turn", arguments: [1, 3])
    func bound(count: Int) async {
        let limiter = AsyncLimiter(count)
        let gauge = Gauge()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<24 {
                group.addTask {
                    await limiter.acquire()
                    gauge.enter()
                    // Hold the place until `count` holders were in at once (or 5 s went by), so
                    // the peak does not depend on how the machine schedules the tasks.
                    let start = DispatchTime.now().uptimeNanoseconds
                    while gauge.peak < count && DispatchTime.now().uptimeNanoseconds - start < 5_000_000_000 {
                        try? await Task.sleep(nanoseconds: 1_000_000)
                    }
                    gauge.leave()
                    await limiter.release()
                }
            }
        }
        #expect(gauge.peak == count)
        #expect(gauge.finished == 24)
        #expect(gauge.now == 0)
    }

    @Test("a count below 1 is 1; waiters are served in arrival order")
    func orderAndFloor() async {
        let limiter = AsyncLimiter(0)
        await limiter.acquire()  // the one place
        let order = OrderLog()
        var tasks: [Task<Void, Never>] = []
        for n in 0..<5 {
            tasks.append(Task {
                await limiter.acquire()
                order.append(n)
                await limiter.release()
            })
            // Let task n queue before task n+1 starts.
            while await limiter.waiting < n + 1 { await Task.yield() }
        }
        #expect(order.values.isEmpty)
        await limiter.release()
        for task in tasks { await task.value }
        #expect(order.values == [0, 1, 2, 3, 4])
    }

    final class OrderLog: @unchecked Sendable {
        private let lock = NSLock()
        private var log: [Int] = []
        func append(_ n: Int) { lock.withLock { log.append(n) } }
        var values: [Int] { lock.withLock { log } }
    }
}
