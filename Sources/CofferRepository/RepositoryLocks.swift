import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A lock this process holds on a repository; refreshed in the background until released.
public final class RepositoryLock: @unchecked Sendable {
    public let name: String
    public let exclusive: Bool
    let repository: Repository
    private var refresher: Task<Void, Never>?

    init(name: String, exclusive: Bool, repository: Repository, refreshInterval: TimeInterval) {
        self.name = name
        self.exclusive = exclusive
        self.repository = repository
        refresher = Task.detached { [repository] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(refreshInterval * 1e9))
                if Task.isCancelled { break }
                try? await repository.writeLock(name: name, exclusive: exclusive, overwrite: true)
            }
        }
    }

    /// Stops refreshing and removes the lock object.
    public func release() async {
        refresher?.cancel()
        refresher = nil
        try? await repository.storage.remove(try ObjectName(.locks, name))
    }
}

extension Repository {
    /// A lock is stale when its time is older than this (it is refreshed every `lockRefreshInterval`).
    public static let lockStaleAge: TimeInterval = 30 * 60
    public static let lockRefreshInterval: TimeInterval = 5 * 60

    static var hostname: String { ProcessInfo.processInfo.hostName }

    func writeLock(name: String, exclusive: Bool, overwrite: Bool) async throws {
        let info = LockInfo(time: Date(), exclusive: exclusive, hostname: Self.hostname,
                            username: ProcessInfo.processInfo.environment["USER"] ?? "", pid: getpid())
        _ = try await writeObject(try ObjectName(.locks, name), try RepositoryJSON.encode(info), overwrite: overwrite) {
            try indexKey.stanzas(for: $0)
        }
    }

    /// Every lock object with its content (nil when it does not authenticate).
    public func listLocks() async throws -> [(name: String, info: LockInfo?)] {
        var out: [(name: String, info: LockInfo?)] = []
        for item in try await storage.listAll(.locks) {
            let plain = try? await readIndexKeyed(item.name)
            let info = plain.flatMap { try? RepositoryJSON.decode(LockInfo.self, $0, object: item.name.description) }
            out.append((name: item.name.name, info: info))
        }
        return out
    }

    /// Whether a lock no longer counts: older than ``lockStaleAge``, or made on this host by a
    /// process that no longer exists.
    public static func isStale(_ info: LockInfo, now: Date = Date()) -> Bool {
        if now.timeIntervalSince(info.time) > lockStaleAge { return true }
        if info.hostname == hostname, info.pid > 0, kill(info.pid, 0) != 0, errno == ESRCH { return true }
        return false
    }

    /// Takes a shared lock (backups, check) or an exclusive one (prune, key removal). Writes the lock
    /// first and then looks at the others, so two processes racing both see each other's lock.
    public func lock(exclusive: Bool) async throws -> RepositoryLock {
        let name = randomObjectName()
        try await writeLock(name: name, exclusive: exclusive, overwrite: false)
        let others: [(name: String, info: LockInfo?)]
        do { others = try await listLocks().filter { $0.name != name } } catch {
            try? await storage.remove(try ObjectName(.locks, name))
            throw error
        }
        for other in others {
            // A lock that does not authenticate cannot have been written with this repository's keys.
            guard let info = other.info, !Self.isStale(info) else { continue }
            if exclusive || info.exclusive {
                try? await storage.remove(try ObjectName(.locks, name))
                throw RepositoryError.locked("\(info.exclusive ? "an exclusive" : "a") lock is held by pid \(info.pid) on \(info.hostname) since \(RepositoryJSON.formatDate(info.time)) (locks/\(other.name))")
            }
        }
        return RepositoryLock(name: name, exclusive: exclusive, repository: self, refreshInterval: Self.lockRefreshInterval)
    }

    /// Runs `body` under a lock, releasing it afterwards whatever happens.
    public func withLock<T: Sendable>(exclusive: Bool, _ body: () async throws -> T) async throws -> T {
        let held = try await lock(exclusive: exclusive)
        do {
            let result = try await body()
            await held.release()
            return result
        } catch {
            await held.release()
            throw error
        }
    }

    /// Removes stale lock objects; returns how many.
    @discardableResult
    public func removeStaleLocks() async throws -> Int {
        var removed = 0
        for (name, info) in try await listLocks() {
            guard let info, Self.isStale(info) else { continue }
            try? await storage.remove(try ObjectName(.locks, name))
            removed += 1
        }
        return removed
    }
}
