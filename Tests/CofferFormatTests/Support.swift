import CofferFormat
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory, removed when the test's scope ends.
final class TemporaryDirectory {
    let path: String
    init() {
        var template = Array("\(NSTemporaryDirectory())/coffer-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }
}

func deterministicBytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    // xorshift64*: reproducible filler, not a secret.
    var state = seed &* 0x9E3779B97F4A7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        out[i] = UInt8(truncatingIfNeeded: (state &* 2685821657736338717) >> 56)
    }
    return out
}

func write(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func read(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// A source that yields `bytes` through a pipe, as standard input would (no positioned reads).
func pipeSource(_ bytes: [UInt8]) -> ByteSource {
    // A test that reads only the header drops its source early: the writer then gets EPIPE (and
    // ends) instead of a SIGPIPE that would kill the test process.
    signal(SIGPIPE, SIG_IGN)
    var fds: [Int32] = [0, 0]
    precondition(closeOnExecPipe(&fds, O_CLOEXEC) == 0)  // no child of another test keeps an end
    let writeEnd = fds[1]
    let payload = bytes
    Thread.detachNewThread {
        var done = 0
        payload.withUnsafeBytes { raw in
            while done < raw.count {
                let n = Glibc.write(writeEnd, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { break }
                done += n
            }
        }
        close(writeEnd)
    }
    // The source closes its end when the test drops it: thousands of sources (one per size,
    // thread count and cipher) must not stay open in the test process.
    return ByteSource(fd: fds[0], path: "pipe", ownsDescriptor: true)
}

/// A source over a regular file holding `bytes` (positioned, parallel reads).
func fileSource(_ bytes: [UInt8], in dir: TemporaryDirectory, name: String = UUID().uuidString) throws -> ByteSource {
    let path = dir.file(name)
    try write(bytes, to: path)
    return try ByteSource.open(path: path)
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// `bytes` with the first occurrence of `pattern` replaced by `replacement` (of any length).
func replacingFirst(_ pattern: [UInt8], with replacement: [UInt8], in bytes: [UInt8]) -> [UInt8] {
    guard pattern.count <= bytes.count else { return bytes }
    for i in 0...(bytes.count - pattern.count) where bytes[i..<(i + pattern.count)].elementsEqual(pattern) {
        return Array(bytes[..<i]) + replacement + Array(bytes[(i + pattern.count)...])
    }
    return bytes
}

/// pipe2(2) is behind _GNU_SOURCE in Glibc's headers, so Swift does not import it.
@_silgen_name("pipe2")
func closeOnExecPipe(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
