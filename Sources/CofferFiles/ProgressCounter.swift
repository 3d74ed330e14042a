import Foundation

/// Counts bytes processed across threads, for progress lines.
public final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var done: UInt64 = 0
    private var expected: UInt64?

    public init(total: UInt64?) { expected = total }

    /// The bytes the work will cover, when known (a directory run sets it once it has listed the tree).
    public var total: UInt64? {
        get { lock.withLock { expected } }
        set { lock.withLock { expected = newValue } }
    }

    public func add(_ bytes: UInt64) { lock.withLock { done += bytes } }
    public var bytesDone: UInt64 { lock.withLock { done } }

    /// An engine progress callback (cumulative per file) that feeds this counter.
    public func engineCallback() -> @Sendable (UInt64) -> Void {
        let last = LockedValue<UInt64>(0)
        return { [self] cumulative in
            let delta = last.exchange(cumulative)
            add(cumulative - delta)
        }
    }
}
