import Foundation

/// One chunk in flight: an input buffer, an output buffer, and what the stages learned about it.
/// Buffers are allocated once per pipeline and reused for every chunk (the malloc trap in
/// docs/PERFORMANCE.md: fresh 1 MiB buffers per chunk cost a page fault per 4 KiB).
public final class ChunkSlot {
    public private(set) var input: UnsafeMutableRawBufferPointer
    public var inputCount = 0
    /// When set, the transform stage reads the input itself at this file offset, so that reading
    /// a regular file is spread over the worker threads instead of one reader.
    var readOffset: UInt64?
    public var counter: UInt64 = 0
    public var isFinal = false
    /// Set by the reader on the slot after the last chunk (with `error` when reading failed).
    var isEnd = false
    /// What the transform made, to be written in order.
    public var output: [Data] = []
    /// The chunk's contribution to a signature's payload digest, when one is being computed.
    var digest: [UInt8] = []
    /// An error found by the transform stage, reported when the slot's turn to be consumed comes.
    var error: Error?

    init(inputCapacity: Int) {
        input = .allocate(byteCount: max(inputCapacity, 1), alignment: 64)
    }

    deinit { input.deallocate() }

    /// Grows the input buffer to hold at least `capacity` bytes (for formats whose chunks vary in size).
    public func reserveInput(_ capacity: Int) {
        guard capacity > input.count else { return }
        input.deallocate()
        input = .allocate(byteCount: capacity, alignment: 64)
    }

    public var filledInput: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: input[0..<inputCount]) }
}

/// Runs produce → transform → consume over a ring of chunk slots: one reader thread fills slots
/// in order, `workers` threads transform them in parallel, and the calling thread consumes them
/// in order. Memory is the ring, whatever the input size.
///
/// Hand-offs are semaphores, one wake-up per event: a slot becomes free (reader may fill it), a
/// chunk is ready (one worker may take it), a slot is done (the consumer may write it). With a
/// single condition variable every event woke every thread, which cost ~40 µs per chunk and made
/// 64 KiB chunks slower on two threads than on one.
///
/// Errors are reported in stream order: every chunk before a failing one is consumed first, so
/// a reader sees exactly the authenticated prefix before the error, and never anything after it.
public final class OrderedPipeline: @unchecked Sendable {
    public enum Produced: Sendable { case chunk, end }

    private let slots: [ChunkSlot]
    private let workers: Int
    // All semaphores start at 0 (libdispatch traps when one is freed below its initial value).
    private let free: [DispatchSemaphore]
    private let done: [DispatchSemaphore]
    private let ready = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var produced = 0          // chunks handed to the workers so far
    private var nextToTransform = 0
    private var aborted = false       // set when consumption stops; readers and workers then quit

    private let produce: (ChunkSlot) throws -> Produced
    private let transform: (ChunkSlot) throws -> Void

    public init(slotCount: Int, workers: Int, inputCapacity: Int,
         produce: @escaping (ChunkSlot) throws -> Produced,
         transform: @escaping (ChunkSlot) throws -> Void) {
        slots = (0..<slotCount).map { _ in ChunkSlot(inputCapacity: inputCapacity) }
        free = (0..<slotCount).map { _ in DispatchSemaphore(value: 0) }
        done = (0..<slotCount).map { _ in DispatchSemaphore(value: 0) }
        self.workers = workers
        self.produce = produce
        self.transform = transform
    }

    /// Runs the pipeline to the end; `consume` sees slots in order on the calling thread.
    /// `waitForReader` is false only for pipes and terminals, where the reader may block in `read`
    /// indefinitely after a failure; for regular files it is joined so it never outlives its descriptor.
    public func run(waitForReader: Bool = true, consume: (ChunkSlot) throws -> Void) throws {
        if slots.count == 1 {
            try runInline(consume: consume)
            return
        }
        for semaphore in free { semaphore.signal() }
        let workersDone = DispatchGroup()
        let readerDone = DispatchGroup()
        readerDone.enter()
        Thread.detachNewThread { [self] in
            readerLoop()
            readerDone.leave()
        }
        for _ in 0..<workers {
            workersDone.enter()
            Thread.detachNewThread { [self] in
                workerLoop()
                workersDone.leave()
            }
        }
        var failure: Error?
        var k = 0
        while true {
            let index = k % slots.count
            done[index].wait()
            let slot = slots[index]
            if slot.isEnd || slot.error != nil {
                failure = slot.error
                break
            }
            do { try consume(slot) } catch {
                failure = error
                break
            }
            if slot.isFinal { break }
            slot.output = []
            free[index].signal()
            k += 1
        }
        // Release whoever still waits: the reader on a free slot, workers on a ready chunk.
        lock.withLock { aborted = true }
        for semaphore in free { semaphore.signal() }
        for _ in 0..<workers { ready.signal() }
        workersDone.wait()
        // A reader blocked on a pipe holds its own references to the slots and exits on its own.
        if waitForReader { readerDone.wait() }
        if let failure { throw failure }
    }

    /// One slot, no threads: for one thread, or an input of one chunk, where thread start-up would dominate.
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
            free[index].wait()
            if lock.withLock({ aborted }) { return }
            let slot = slots[index]
            slot.error = nil
            slot.isEnd = false
            slot.isFinal = false
            slot.readOffset = nil
            slot.output = []
            let result: Produced
            do { result = try produce(slot) } catch {
                slot.error = error
                result = .end
            }
            if result == .end {
                // No more chunks: the consumer meets this marker (or error) after every chunk before it.
                slot.isEnd = true
                done[index].signal()
            } else {
                lock.withLock { produced = k + 1 }
                ready.signal()
            }
            if result == .end || slot.isFinal {
                for _ in 0..<workers { ready.signal() }  // one wake-up for each worker to quit on
                return
            }
            k += 1
        }
    }

    private func workerLoop() {
        while true {
            ready.wait()
            let k: Int? = lock.withLock {
                guard !aborted, nextToTransform < produced else { return nil }
                defer { nextToTransform += 1 }
                return nextToTransform
            }
            guard let k else { return }
            let slot = slots[k % slots.count]
            do { try transform(slot) } catch { slot.error = error }
            done[k % slots.count].signal()
        }
    }
}
