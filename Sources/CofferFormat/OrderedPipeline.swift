import Foundation

/// One chunk in flight: an input buffer, an output buffer, and what the stages learned about it.
/// Buffers are allocated once per pipeline and reused for every chunk (the malloc trap in
/// docs/PERFORMANCE.md: fresh 1 MiB buffers per chunk cost a page fault per 4 KiB).
final class ChunkSlot {
    let input: UnsafeMutableRawBufferPointer
    var inputCount = 0
    /// When set, the transform stage reads the input itself at this file offset, so that reading
    /// a regular file is spread over the worker threads instead of one reader.
    var readOffset: UInt64?
    var counter: UInt64 = 0
    var isFinal = false
    /// What the transform made, to be written in order.
    var output: [Data] = []
    /// An error found by the transform stage, reported when the slot's turn to be consumed comes.
    var error: Error?

    init(inputCapacity: Int) {
        input = .allocate(byteCount: max(inputCapacity, 1), alignment: 64)
    }

    deinit { input.deallocate() }

    var filledInput: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: input[0..<inputCount]) }
}

/// Runs produce → transform → consume over a ring of chunk slots: one reader thread fills slots
/// in order, `workers` threads transform them in parallel, and the calling thread consumes them
/// in order. Memory is the ring, whatever the input size.
///
/// Errors are reported in stream order: every chunk before a failing one is consumed first, so
/// a reader sees exactly the authenticated prefix before the error, and never anything after it.
final class OrderedPipeline: @unchecked Sendable {
    enum Produced { case chunk, end }

    private enum State { case free, filled, done }

    private let slots: [ChunkSlot]
    private var states: [State]
    private let workers: Int
    private let condition = NSCondition()
    private var produced = 0          // slots handed out by the reader so far
    private var nextToTransform = 0
    private var producerFinished = false
    private var producerError: Error?
    private var aborted = false       // set when consumption stops; releases every waiting thread

    private let produce: (ChunkSlot) throws -> Produced
    private let transform: (ChunkSlot) throws -> Void

    init(slotCount: Int, workers: Int, inputCapacity: Int,
         produce: @escaping (ChunkSlot) throws -> Produced,
         transform: @escaping (ChunkSlot) throws -> Void) {
        slots = (0..<slotCount).map { _ in ChunkSlot(inputCapacity: inputCapacity) }
        states = Array(repeating: .free, count: slotCount)
        self.workers = workers
        self.produce = produce
        self.transform = transform
    }

    /// Runs the pipeline to the end; `consume` sees slots in order on the calling thread.
    /// `waitForReader` is false only for pipes and terminals, where the reader may block in `read`
    /// indefinitely after a failure; for regular files it is joined so it never outlives its descriptor.
    func run(waitForReader: Bool = true, consume: (ChunkSlot) throws -> Void) throws {
        if workers <= 1 && slots.count == 1 {
            try runInline(consume: consume)
            return
        }
        let group = DispatchGroup()
        let readerDone = DispatchGroup()
        readerDone.enter()
        Thread.detachNewThread { [self] in
            readerLoop()
            readerDone.leave()
        }
        for _ in 0..<workers {
            group.enter()
            Thread.detachNewThread { [self] in
                workerLoop()
                group.leave()
            }
        }
        var failure: Error?
        var k = 0
        while true {
            let slot = slots[k % slots.count]
            condition.lock()
            while states[k % slots.count] != .done && !(producerFinished && k >= produced) {
                condition.wait()
            }
            if states[k % slots.count] != .done {
                failure = producerError
                condition.unlock()
                break
            }
            condition.unlock()
            if let error = slot.error {
                failure = error
                break
            }
            do { try consume(slot) } catch {
                failure = error
                break
            }
            condition.lock()
            states[k % slots.count] = .free
            condition.broadcast()
            condition.unlock()
            k += 1
        }
        condition.lock()
        aborted = true
        condition.broadcast()
        condition.unlock()
        // Workers are CPU-bound and stop quickly. A reader blocked on a pipe holds its own
        // references to the slots and exits on its own when not waited for.
        group.wait()
        if waitForReader { readerDone.wait() }
        if let failure { throw failure }
    }

    /// One slot, no threads: for a single worker on small inputs, where thread start-up would dominate.
    private func runInline(consume: (ChunkSlot) throws -> Void) throws {
        let slot = slots[0]
        while true {
            slot.readOffset = nil
            slot.output = []
            guard try produce(slot) == .chunk else { return }
            try transform(slot)
            if let error = slot.error { throw error }
            try consume(slot)
            if slot.isFinal { return }
        }
    }

    private func readerLoop() {
        var k = 0
        while true {
            let index = k % slots.count
            condition.lock()
            while states[index] != .free && !aborted { condition.wait() }
            if aborted { condition.unlock(); return }
            condition.unlock()
            let slot = slots[index]
            slot.error = nil
            slot.readOffset = nil
            slot.output = []
            let result: Produced
            do { result = try produce(slot) } catch {
                condition.lock()
                producerError = error
                producerFinished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            condition.lock()
            if result == .chunk {
                states[index] = .filled
                produced = k + 1
            }
            if result == .end || slot.isFinal { producerFinished = true }
            condition.broadcast()
            let finished = producerFinished
            condition.unlock()
            if finished { return }
            k += 1
        }
    }

    private func workerLoop() {
        while true {
            condition.lock()
            while nextToTransform >= produced && !producerFinished && !aborted { condition.wait() }
            if aborted || nextToTransform >= produced {
                condition.unlock()
                return
            }
            let k = nextToTransform
            nextToTransform += 1
            condition.unlock()
            let slot = slots[k % slots.count]
            do { try transform(slot) } catch { slot.error = error }
            condition.lock()
            states[k % slots.count] = .done
            condition.broadcast()
            condition.unlock()
        }
    }
}
