import Foundation

/// A value shared between threads, guarded by a lock.
public final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    public init(_ value: T) { self.value = value }
    public func exchange(_ new: T) -> T { lock.withLock { let old = value; value = new; return old } }
    public func withValue<R>(_ body: (inout T) throws -> R) rethrows -> R { try lock.withLock { try body(&value) } }
}

/// Hands a value that is used by one thread at a time to another thread.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
