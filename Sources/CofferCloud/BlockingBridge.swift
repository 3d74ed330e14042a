import Foundation

/// Runs async key-service calls from the synchronous key protocols (`Recipient.wrap`,
/// `Identity.unwrap`), which the CLI and the file layer call from the main thread or from
/// Dispatch worker threads.
///
/// The calling thread waits on a semaphore while the work runs as a detached task on the
/// concurrency pool and the HTTP client's event loops. That is safe only because the waiting
/// thread is never one of the pool's threads (a waiting pool thread could starve the very task it
/// waits for), so a call made from inside a task is refused instead of risking that deadlock.
public enum BlockingBridge {
    public static func run<T: Sendable>(_ operation: @escaping @Sendable () async throws(KeyServiceError) -> T) throws(KeyServiceError) -> T {
        let insideTask = withUnsafeCurrentTask { $0 != nil }
        guard !insideTask else {
            throw KeyServiceError(.refused, "internal: a blocking key-service call was made from async code; call the async client instead")
        }
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do throws(KeyServiceError) {
                box.result = .success(try await operation())
            } catch {
                box.result = .failure(error)
            }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }

    /// Written by the task before it signals, read by the waiter after: the semaphore orders them.
    final class ResultBox<T: Sendable>: @unchecked Sendable {
        var result: Result<T, KeyServiceError>?
    }
}
