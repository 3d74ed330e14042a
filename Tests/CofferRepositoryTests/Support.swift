import Foundation

/// A fresh directory under the system temporary directory, removed when released.
final class TemporaryDirectory {
    let path: String
    init() {
        var template = Array("\(NSTemporaryDirectory())/coffer-repo-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// Reproducible filler (xorshift64*), not a secret.
func deterministicBytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed &* 0x9E3779B97F4A7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        out[i] = UInt8(truncatingIfNeeded: (state &* 2685821657736338717) >> 56)
    }
    return out
}

/// Compressible text resembling a SQL dump.
func sqlLikeText(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    let noise = deterministicBytes(count / 8 + 64, seed: seed)
    var out: [UInt8] = []
    out.reserveCapacity(count + 128)
    var i = 0
    while out.count < count {
        let row = "INSERT INTO `orders` VALUES (\(i),'2024-01-\(noise[i % noise.count] % 28 + 1)','user\(noise[(i * 7) % noise.count])@example.org',\(noise[(i * 3) % noise.count]));\n"
        out += Array(row.utf8)
        i += 1
    }
    return Array(out[..<count])
}

enum FileManagerLite {
    static func write(_ bytes: [UInt8], to path: String) -> Bool {
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }
}
