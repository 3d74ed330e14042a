import CofferFormat
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A source that owns its descriptor closes it when it goes away: the test helpers' pipe sources
/// (thousands per run) once stayed open in the test process until it held more than a child's
/// open-file limit.
@Suite struct ByteSourceOwnership {
    /// The descriptors of this process whose link is `pipe:[inode]` (other tests' pipes, running
    /// beside this one, have other inodes).
    static func descriptors(ofPipe inode: UInt64) -> Int {
        var count = 0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            var buffer = [CChar](repeating: 0, count: 128)
            let n = readlink("/proc/self/fd/\(entry)", &buffer, buffer.count - 1)
            if n > 0, String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "pipe:[\(inode)]" { count += 1 }
        }
        return count
    }

    static func makePipe() throws -> (read: Int32, write: Int32, inode: UInt64) {
        var fds: [Int32] = [0, 0]
        try #require(closeOnExecPipe(&fds, O_CLOEXEC) == 0)
        var st = stat()
        try #require(fstat(fds[0], &st) == 0)
        return (fds[0], fds[1], UInt64(st.st_ino))
    }

    @Test("an owning source closes its descriptor when released; a non-owning one leaves it open")
    func releaseClosesOwned() throws {
        let owned = try Self.makePipe()
        close(owned.write)
        do {
            let source = ByteSource(fd: owned.read, path: "pipe", ownsDescriptor: true)
            #expect(source.fd == owned.read)
            #expect(Self.descriptors(ofPipe: owned.inode) == 1)
        }
        #expect(Self.descriptors(ofPipe: owned.inode) == 0)

        let borrowed = try Self.makePipe()
        defer { close(borrowed.read) }
        close(borrowed.write)
        do { _ = ByteSource(fd: borrowed.read, path: "pipe") }
        #expect(Self.descriptors(ofPipe: borrowed.inode) == 1)
    }

    @Test("close() then release closes once: a descriptor opened meanwhile (likely with the same number) stays open")
    func closeThenRelease() throws {
        let pipeEnds = try Self.makePipe()
        close(pipeEnds.write)
        var reused: Int32 = -1
        do {
            let source = ByteSource(fd: pipeEnds.read, path: "pipe", ownsDescriptor: true)
            source.close()
            source.close()
            #expect(Self.descriptors(ofPipe: pipeEnds.inode) == 0)
            reused = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(reused >= 0)
        }
        defer { close(reused) }
        #expect(fcntl(reused, F_GETFD) != -1, "descriptor \(reused) (the pipe's was \(pipeEnds.read)) was closed by the released source")
    }
}
