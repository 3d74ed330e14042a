import CofferCloud
import CofferRepository
@testable import CofferS3
import CofferTestServers
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Descriptor hygiene of the test process: S3 clients, the fault proxy, the logging listener and
/// the servers' spawns leave no descriptor behind. Other suites run beside these in the same
/// process, so each check counts only the TCP sockets on its own server's port.
@Suite("Descriptors: S3 clients and the test servers leave none open", .serialized)
struct DescriptorTests {
    static func ownPool(_ options: S3Options = S3Fixture.fastOptions, connections: Int = 16) -> S3Options {
        var options = options
        options.ownConnectionPool = true
        options.connections = connections
        return options
    }

    @Test("many parallel requests open many connections; after the client's shutdown the descriptor count on the server's port is back to its start")
    func s3ClientShutdown() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        let port = fixture.server.port
        let start = Descriptors.tcpSockets(port: port)
        #expect(start.isEmpty, "before any client: \(start)")
        let client = try S3Client(uri: try fixture.uri(), options: Self.ownPool(), environment: Moto.environment, stats: S3RequestStats())
        let storage = S3Storage(client: client)
        try await storage.prepareBucket(objectLock: false)
        let names = try (0..<48).map { try ObjectName(.data, String(format: "%02x", $0) + "cafe") }
        // Sample the sockets on the server's port while the saves run (moto closes each connection
        // after its answer, so only requests in flight hold one).
        let sampler = Task { () -> Int in
            var peak = 0
            while !Task.isCancelled {
                peak = max(peak, Descriptors.tcpSockets(port: port).count)
                try? await Task.sleep(nanoseconds: 2_000_000)
            }
            return peak
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (n, name) in names.enumerated() {
                group.addTask { try await storage.save(name, contents: pattern(20_000, seed: UInt8(n)), overwrite: false) }
            }
            try await group.waitForAll()
        }
        sampler.cancel()
        let peak = await sampler.value
        for name in names.prefix(4) { #expect(try await storage.load(name, range: nil).count == 20_000) }
        #expect(peak >= 2, "the requests ran on several connections (peak \(peak))")
        try await client.shutdown()
        let end = Descriptors.tcpSockets(port: port)
        #expect(end == start, "after shutdown: \(end) (at the start: \(start))")
    }

    @Test("the fault proxy and the logging listener: after stop(), no descriptor on their ports or on the upstream's")
    func proxyAndListener() async throws {
        let fixture = try S3Fixture()
        defer { fixture.server.stop() }
        let proxy = try FaultProxy(upstreamPort: fixture.server.port, period: 3, faults: [.internalError, .reset, .truncate], stallSeconds: 1)
        let listener = try LoggingListener { _, _ in .forward(port: proxy.port) }
        let client = try S3Client(uri: try fixture.uri(endpoint: listener.endpoint), options: Self.ownPool(connections: 4),
                                  environment: Moto.environment, stats: S3RequestStats())
        let storage = S3Storage(client: client)
        try await storage.prepareBucket(objectLock: false)
        for n in 0..<12 {
            let name = try ObjectName(.data, String(format: "%02x", n) + "beef")
            try await storage.save(name, contents: pattern(5_000, seed: UInt8(n)), overwrite: false)
            #expect(try await storage.load(name, range: nil) == pattern(5_000, seed: UInt8(n)))
        }
        #expect(proxy.totalInjected > 0)
        #expect(!Descriptors.tcpSockets(port: proxy.port).isEmpty, "the proxy listens")
        try await client.shutdown()
        listener.stop()
        proxy.stop()
        for (what, port) in [("listener", listener.port), ("proxy", proxy.port), ("moto", fixture.server.port)] {
            // A closed connection may take a moment to leave its handler's thread.
            var left = Descriptors.tcpSockets(port: port)
            for _ in 0..<50 where !left.isEmpty {
                try await Task.sleep(nanoseconds: 20_000_000)
                left = Descriptors.tcpSockets(port: port)
            }
            #expect(left.isEmpty, "\(what) port \(port): \(left)")
        }
    }

    @Test("a spawned server or tool gets only descriptors 0, 1 and 2, even ones this process opened without close-on-exec")
    func spawnClosesInherited() throws {
        let inherited = open("/dev/null", O_RDONLY)  // no O_CLOEXEC: posix_spawn alone would pass it on
        try #require(inherited > 2)
        defer { close(inherited) }
        #expect(fcntl(inherited, F_GETFD) & FD_CLOEXEC == 0)
        let directory = NSTemporaryDirectory() + "coffer-spawn-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The shell lists its own descriptors (`$$`: the shell itself, not a child of it).
        let pid = try TestSpawn.start(["/bin/sh", "-c", "ls /proc/$$/fd; [ -e /proc/$$/fd/\(inherited) ] && echo inherited || echo closed"],
                                      environment: [:], stdout: directory + "/out", stderr: nil)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let out = try String(contentsOfFile: directory + "/out", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(out.last == "closed", "\(out)")
        let listed = Set(out.dropLast().compactMap(Int32.init))
        #expect(listed.isSuperset(of: [0, 1, 2]) && !listed.contains(inherited), "the shell's descriptors: \(out)")
    }
}
