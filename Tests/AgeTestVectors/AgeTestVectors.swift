import CZlib
import Foundation

/// The 143 age test vectors of C2SP/CCTV in ../shared/vectors/age (beside the repository), parsed
/// for the library's and the CLI's tests. Their file format: ../shared/vectors/README-age.txt.
public enum AgeTestVectors {
    public static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/vectors/age").path
    public static let expectedCount = 143

    public struct Vector: Sendable, CustomStringConvertible {
        public let name: String
        public let expect: String
        /// SHA-256 (hex) of the plaintext released before success or failure.
        public let payload: String?
        public let identities: [String]
        public let passphrases: [String]
        public let armored: Bool
        /// The age file itself (inflated when stored compressed).
        public let file: [UInt8]
        public var description: String { name }
    }

    static let knownKeys: Set<String> = ["expect", "payload", "file key", "identity", "passphrase", "armored", "compressed", "comment"]
    static let knownExpectations: Set<String> = ["success", "no match", "HMAC failure", "header failure", "payload failure", "armor failure"]

    /// Every vector file, parsed; files that cannot be run come back in `skipped` with the reason.
    public static let all: (vectors: [Vector], skipped: [(name: String, reason: String)], files: Int) = {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        var vectors: [Vector] = []
        var skipped: [(String, String)] = []
        for name in names {
            do {
                vectors.append(try parse(name: name, bytes: [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)")))))
            } catch let reason as SkipReason {
                skipped.append((name, reason.text))
            } catch {
                skipped.append((name, "unreadable: \(error)"))
            }
        }
        return (vectors, skipped, names.count)
    }()

    struct SkipReason: Error { let text: String }

    static func parse(name: String, bytes: [UInt8]) throws -> Vector {
        var fields: [(String, String)] = []
        var index = 0
        while true {
            guard let end = bytes[index...].firstIndex(of: 0x0A) else { throw SkipReason(text: "no blank line after the header") }
            let line = String(decoding: bytes[index..<end], as: UTF8.self)
            index = end + 1
            if line.isEmpty { break }
            guard let colon = line.range(of: ": ") else { throw SkipReason(text: "header line without ': '") }
            fields.append((String(line[..<colon.lowerBound]), String(line[colon.upperBound...])))
        }
        // README-age.txt: "Unknown keys: ignore the file."
        if let unknown = fields.first(where: { !knownKeys.contains($0.0) }) {
            throw SkipReason(text: "unknown header key '\(unknown.0)' (README-age.txt: ignore the file)")
        }
        func values(_ key: String) -> [String] { fields.filter { $0.0 == key }.map(\.1) }
        guard let expect = values("expect").first, knownExpectations.contains(expect) else {
            throw SkipReason(text: "unknown expectation \(values("expect"))")
        }
        var file = Array(bytes[index...])
        if values("compressed").first == "zlib" { file = try inflate(file) }
        return Vector(name: name, expect: expect, payload: values("payload").first, identities: values("identity"),
                      passphrases: values("passphrase"), armored: values("armored").first == "yes", file: file)
    }

    /// zlib's inflate over a whole buffer.
    static func inflate(_ input: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw SkipReason(text: "zlib does not start")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var input = input
        var status: Int32 = Z_OK
        input.withUnsafeMutableBufferPointer { inBuffer in
            stream.next_in = inBuffer.baseAddress
            stream.avail_in = UInt32(inBuffer.count)
            repeat {
                chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    output += out[0..<(out.count - Int(stream.avail_out))]
                }
            } while status == Z_OK
        }
        guard status == Z_STREAM_END else { throw SkipReason(text: "the zlib data is damaged (\(status))") }
        return output
    }
}
