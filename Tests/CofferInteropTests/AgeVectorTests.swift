import CofferFormat
import CofferKeys
@testable import CofferInterop
import Crypto
import CZlib
import Foundation
import Testing

/// The 143 age test vectors of C2SP/CCTV in ../shared/vectors/age (beside the repository); their
/// file format is in ../shared/vectors/README-age.txt.
enum AgeVectors {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/vectors/age").path
    static let expectedCount = 143

    struct Vector: Sendable, CustomTestStringConvertible {
        let name: String
        let expect: String
        /// SHA-256 of the plaintext released before success or failure.
        let payload: String?
        let identities: [String]
        let passphrases: [String]
        let armored: Bool
        /// The age file itself (inflated when stored compressed).
        let file: [UInt8]
        var testDescription: String { name }
    }

    static let knownKeys: Set<String> = ["expect", "payload", "file key", "identity", "passphrase", "armored", "compressed", "comment"]
    static let knownExpectations: Set<String> = ["success", "no match", "HMAC failure", "header failure", "payload failure", "armor failure"]

    /// Every vector file, parsed; files that cannot be run come back in `skipped` with the reason.
    static let all: (vectors: [Vector], skipped: [(name: String, reason: String)], files: Int) = {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        var vectors: [Vector] = []
        var skipped: [(String, String)] = []
        for name in names {
            do {
                guard let vector = try parse(name: name, bytes: [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)"))))
                else { continue }
                vectors.append(vector)
            } catch let reason as SkipReason {
                skipped.append((name, reason.text))
            } catch {
                skipped.append((name, "unreadable: \(error)"))
            }
        }
        return (vectors, skipped, names.count)
    }()

    struct SkipReason: Error { let text: String }

    static func parse(name: String, bytes: [UInt8]) throws -> Vector? {
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

    static func identities(of vector: Vector) throws -> [AgeIdentity] {
        var identities: [AgeIdentity] = []
        for text in vector.identities {
            if text.hasPrefix("AGE-SECRET-KEY-PQ-1") {
                identities.append(AgeHybridIdentity(try HybridIdentity(encoded: text)))
            } else {
                identities.append(AgeX25519Identity(privateKey: try AgeKeyEncoding.parseIdentity(text)))
            }
        }
        for passphrase in vector.passphrases {
            identities.append(try AgeScrypt(passphrase: Array(passphrase.utf8)))
        }
        return identities
    }

    /// The class of failure an error stands for, in the vectors' words.
    static func failureClass(of error: Error) -> String {
        switch error as? CofferError {
        case .malformedArmor?: return "armor failure"
        case .headerMACMismatch?: return "HMAC failure"
        case .noMatchingKey?: return "no match"
        case .chunkAuthenticationFailed?, .truncated?, .trailingData?: return "payload failure"
        case .malformedHeader?, .malformedStanza?, .unsupportedVersion?: return "header failure"
        default: return "other error: \(error)"
        }
    }

    /// Writes the vector's age file to a temporary file (the decryptor reads files and pipes).
    static func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "coffer-age-vector-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

@Suite struct AgeVectorTests {
    @Test("every age vector file is run, or skipped with a stated reason")
    func inventory() {
        let (vectors, skipped, files) = AgeVectors.all
        print("age vectors: \(files) files, \(vectors.count) run, \(skipped.count) skipped")
        for (name, reason) in skipped { print("age vector \(name) skipped: \(reason)") }
        #expect(files == AgeVectors.expectedCount, "vectors not found in \(AgeVectors.directory)")
        #expect(vectors.count + skipped.count == files)
        #expect(skipped.isEmpty, "skipped: \(skipped.map(\.name))")
    }

    @Test("age vector", arguments: AgeVectors.all.vectors)
    func vector(_ vector: AgeVectors.Vector) throws {
        let path = try AgeVectors.temporaryFile(vector.file)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let identities = try AgeVectors.identities(of: vector)
        for threads in [1, 3] {
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            let sink = MemorySink()
            var failure: Error?
            do {
                _ = try AgeFile.decrypt(from: source, kind: vector.armored ? .armored : .binary, identities: identities,
                                        to: sink, threads: threads)
            } catch {
                failure = error
            }
            if vector.expect == "success" {
                #expect(failure == nil, "threads \(threads): \(failure.map { "\($0)" } ?? "")")
            } else {
                let got = failure.map(AgeVectors.failureClass) ?? "success"
                #expect(got == vector.expect, "threads \(threads): \(failure.map { "\($0)" } ?? "no error")")
            }
            if let payload = vector.payload {
                // Exactly the authenticated plaintext before the failure (or all of it) was released.
                #expect(hex(SHA256.hash(data: sink.bytes)) == payload, "threads \(threads): released \(sink.bytes.count) bytes")
            } else if vector.expect != "success" {
                #expect(sink.bytes.isEmpty, "threads \(threads): released \(sink.bytes.count) bytes")
            }
        }
    }
}
