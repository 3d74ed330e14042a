/// A counting semaphore for async code: at most `count` holders at once, the others wait in
/// arrival order. It bounds the requests in flight of an S3 client (CofferS3) and the work in
/// flight of the repository (CofferRepository); it lives here, below both.
public actor AsyncLimiter {
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// `count` below 1 counts as 1.
    public init(_ count: Int) { available = max(1, count) }

    /// Waits for a free place and takes it.
    public func acquire() async {
        if available > 0 { available -= 1; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// How many are waiting for a place.
    public var waiting: Int { waiters.count }

    /// Gives a place back: to the longest waiter, if any.
    public func release() {
        if waiters.isEmpty { available += 1 } else { waiters.removeFirst().resume() }
    }
}
