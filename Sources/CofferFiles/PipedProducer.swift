import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a producer on its own thread, writing into a pipe whose read end the caller consumes (so a
/// decryption feeds an encryption without the plaintext touching the disk).
enum PipedProducer {
    /// Returns the read end and a function that waits for the producer and returns its result or
    /// rethrows its error. The caller closes the read end first if it stops early: the producer
    /// then fails with EPIPE (SIGPIPE is ignored) and must still be waited for.
    static func start<T: Sendable>(name: String, for path: String,
                                   _ produce: @escaping @Sendable (ByteSink) throws -> T) throws -> (ByteSource, () throws -> T) {
        let (readEnd, writeEnd) = try makePipe(for: path)
        signal(SIGPIPE, SIG_IGN)
        let result = LockedValue<Result<T, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let outcome = Result { try produce(FileDescriptorSink(fd: writeEnd, path: "pipe")) }
            close(writeEnd)
            _ = result.exchange(outcome)
            done.signal()
        }
        let wait: () throws -> T = {
            done.wait()
            return try result.withValue { $0! }.get()
        }
        return (ByteSource(fd: readEnd, path: name), wait)
    }
}
