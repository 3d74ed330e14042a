import CofferRepository
import Foundation

/// Every throwaway server this process started and has not torn down yet, so that a command can
/// tear them all down when it is interrupted (its SIGINT/SIGTERM handler calls ``tearDownAll()``
/// before exiting). Engines register their servers as soon as anything exists to clean up.
public final class ThrowawayRegistry: @unchecked Sendable {
    public static let shared = ThrowawayRegistry()

    private let lock = NSLock()
    private var servers: [ObjectIdentifier: any ThrowawayServer] = [:]

    /// Registers `server`; returns false (and tears it down at once) when the process was already
    /// interrupted (``interrupt()``), so a server started by a task still running then never survives.
    @discardableResult
    public func register(_ server: any ThrowawayServer) -> Bool {
        let accepted = lock.withLock { () -> Bool in
            if interruptedFlag { return false }
            servers[ObjectIdentifier(server)] = server
            return true
        }
        if !accepted { server.tearDown() }
        return accepted
    }

    public func unregister(_ server: any ThrowawayServer) {
        _ = lock.withLock { servers.removeValue(forKey: ObjectIdentifier(server)) }
    }

    /// Tears down every registered server (each ``ThrowawayServer/tearDown()`` is idempotent).
    public func tearDownAll() {
        let all = lock.withLock { () -> [any ThrowawayServer] in
            let list = Array(servers.values)
            servers.removeAll()
            return list
        }
        for server in all { server.tearDown() }
    }

    public var count: Int { lock.withLock { servers.count } }

    /// How many registered servers are of `engine` (tests of one engine run beside the other's).
    public func count(of engine: DatabaseInfo.Engine) -> Int {
        lock.withLock { servers.values.filter { $0.engine == engine }.count }
    }

    private var interruptedFlag = false
    /// Set by ``interrupt()``: the process is being interrupted; whatever still runs must not
    /// record an outcome (the servers it used were torn down under it).
    public var interrupted: Bool { lock.withLock { interruptedFlag } }

    /// For a SIGINT/SIGTERM handler: marks the process interrupted, then tears every server down.
    public func interrupt() {
        lock.withLock { interruptedFlag = true }
        tearDownAll()
    }
}
