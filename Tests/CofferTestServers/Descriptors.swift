import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// This process's open descriptors, from /proc/self/fd: for tests that check that a client, a
/// server or a spawn leaves none behind. Tests run in parallel in one process, so a check counts
/// only what belongs to it (the TCP sockets on one port), never the process's total.
public enum Descriptors {
    /// How many descriptors the process has open.
    public static var count: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
    }

    /// The descriptors of this process that are TCP sockets (IPv4 or IPv6) whose local or remote
    /// port is `port`: the connections to a test server on 127.0.0.1:`port`, both ends when the
    /// server runs in this process, and its listening socket.
    public static func tcpSockets(port: Int) -> [Int32] {
        let inodes = tcpInodes(port: port)
        guard !inodes.isEmpty else { return [] }
        var found: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let fd = Int32(entry), let target = link("/proc/self/fd/\(entry)"),
                  target.hasPrefix("socket:["), target.hasSuffix("]"),
                  let inode = UInt64(target.dropFirst("socket:[".count).dropLast()) else { continue }
            if inodes.contains(inode) { found.append(fd) }
        }
        return found.sorted()
    }

    /// readlink(2): a descriptor's link is `socket:[INODE]`, not a path Foundation would resolve.
    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A /proc file whole: its size says 0, and one read gives only a page of it.
    static func readAll(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += buffer[..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The inodes of TCP sockets (any process's) with `port` at either end, from /proc/net/tcp{,6}:
    /// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …`,
    /// addresses as HEX_ADDRESS:HEX_PORT.
    public static func tcpInodes(port: Int) -> Set<UInt64> {
        var inodes: Set<UInt64> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readAll(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 9 else { continue }
                let ports = [fields[1], fields[2]].compactMap { $0.split(separator: ":").last.flatMap { Int($0, radix: 16) } }
                if ports.contains(port), let inode = UInt64(fields[9]), inode != 0 { inodes.insert(inode) }
            }
        }
        return inodes
    }
}
