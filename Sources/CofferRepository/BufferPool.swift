import Foundation

/// Byte buffers of one large size (a pack's), kept and handed out again instead of being freed and
/// allocated for every pack.
///
/// Why: glibc serves these multi-MiB blocks from its heaps (AllocatorTuning raises the mmap threshold
/// for single-file sealing speed) and never gives freed ones back; a new 4 MiB block rarely fits the
/// hole an old one left among chunk-sized blocks, so every pack allocated anew grew the process
/// (docs/PERFORMANCE.md, "Memory"). A pool keeps the same few buffers for the whole run.
///
/// A buffer is an array value: once taken it belongs to its taker alone, and ``give(_:)`` empties it
/// (keeping its capacity) before it can be taken again, so no two takers ever share one. At most
/// `keep` buffers wait in the pool; more are freed.
final class BufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [[UInt8]] = []
    private var made = 0
    private var reused = 0
    let keep: Int

    init(keep: Int) { self.keep = max(0, keep) }

    /// An empty buffer with room for at least `capacity` bytes: a kept one if one is large enough.
    func take(capacity: Int) -> [UInt8] {
        let kept: [UInt8]? = lock.withLock {
            guard let i = free.lastIndex(where: { $0.capacity >= capacity }) else { return nil }
            reused += 1
            return free.remove(at: i)
        }
        if let kept { return kept }
        lock.withLock { made += 1 }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(capacity)
        return buffer
    }

    /// Takes `buffer` back (leaving `buffer` empty, with no storage): its bytes are dropped, its
    /// storage kept for the next ``take(capacity:)`` unless `keep` buffers already wait.
    func give(_ buffer: inout [UInt8]) {
        var returned: [UInt8] = []
        swap(&returned, &buffer)
        guard returned.capacity > 0 else { return }
        let before = returned.withUnsafeBytes { $0.baseAddress }
        returned.removeAll(keepingCapacity: true)  // new storage if someone else still holds the bytes
        let shared = returned.withUnsafeBytes { $0.baseAddress } != before
        lock.withLock {
            if shared { sharedOnReturn += 1 }
            if free.count < keep { free.append(returned) }
        }
    }

    /// Buffers given back while someone else still held their bytes (their storage was not reused).
    var sharedReturns: Int { lock.withLock { sharedOnReturn } }
    private var sharedOnReturn = 0

    /// Buffers waiting in the pool.
    var available: Int { lock.withLock { free.count } }
    /// Buffers allocated by ``take(capacity:)`` (not served from the pool).
    var allocated: Int { lock.withLock { made } }
    /// Takes served from the pool.
    var reuses: Int { lock.withLock { reused } }
}

/// Holds one array so that it can be moved into a task with no second reference left behind (the
/// task takes it out with ``take()``), so that the task can change it in place without a copy.
final class BufferBox: @unchecked Sendable {
    private var bytes: [UInt8]
    init(_ bytes: consuming [UInt8]) { self.bytes = bytes }

    /// The array, leaving the box empty.
    func take() -> [UInt8] {
        var out: [UInt8] = []
        swap(&out, &bytes)
        return out
    }
}
