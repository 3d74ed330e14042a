import CofferFormat
import CofferKeys
@testable import CofferInterop
import Crypto
import Foundation
import Testing

/// The 36 files made by Percona's xbcrypt in ../shared/vectors/xbcrypt (beside the repository).
enum XbcryptVectors {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/vectors/xbcrypt").path

    struct Row: Sendable, CustomTestStringConvertible {
        let file: String
        let key: String
        let plaintextLength: Int
        let plaintextSHA256: String
        var testDescription: String { file }
    }

    static let rows: [Row] = {
        guard let text = try? String(contentsOfFile: "\(directory)/MANIFEST.txt", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Row(file: f[0], key: String(f[2].dropFirst("--encrypt-key=".count)),
                       plaintextLength: Int(f[4])!, plaintextSHA256: f[5])
        }
    }()
}

func hex(_ data: some Sequence<UInt8>) -> String { data.map { String(format: "%02x", $0) }.joined() }

@Suite struct XbcryptReading {
    @Test("the manifest lists all 36 vector files")
    func manifest() {
        #expect(XbcryptVectors.rows.count == 36, "vectors not found in \(XbcryptVectors.directory)")
    }

    @Test("every xbcrypt vector decrypts to its plaintext", arguments: XbcryptVectors.rows)
    func vector(_ row: XbcryptVectors.Row) throws {
        for threads in [1, 3] {
            let source = try ByteSource.open(path: "\(XbcryptVectors.directory)/\(row.file)")
            defer { source.close() }
            let sink = MemorySink()
            let summary = try Xbcrypt.decrypt(from: source, to: sink, key: Xbcrypt.key(Array(row.key.utf8), source: "test"),
                                              threads: threads)
            #expect(sink.bytes.count == row.plaintextLength)
            #expect(hex(SHA256.hash(data: sink.bytes)) == row.plaintextSHA256)
            #expect(summary.plaintextBytes == UInt64(row.plaintextLength))
            let expected = (0..<row.plaintextLength).map { UInt8(($0 * 7) % 251) }
            #expect(sink.bytes == expected)
        }
    }

    static func sample() throws -> (XbcryptVectors.Row, [UInt8]) {
        let row = try #require(XbcryptVectors.rows.first { $0.file == "aes256_chunk4096_len65537.xbcrypt" })
        return (row, [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(XbcryptVectors.directory)/\(row.file)"))))
    }

    func decrypt(_ bytes: [UInt8], key: String) throws -> [UInt8] {
        let dir = NSTemporaryDirectory() + "xb-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: dir))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try ByteSource.open(path: dir)
        defer { source.close() }
        let sink = MemorySink()
        _ = try Xbcrypt.decrypt(from: source, to: sink, key: Xbcrypt.key(Array(key.utf8), source: "test"), threads: 2)
        return sink.bytes
    }

    @Test("which chunk versions the vectors hold, and that v3 reports every chunk hashed")
    func versions() throws {
        let (row, bytes) = try Self.sample()
        let version = bytes[7]
        let source = try ByteSource.open(path: "\(XbcryptVectors.directory)/\(row.file)")
        defer { source.close() }
        let summary = try Xbcrypt.decrypt(from: source, to: MemorySink(), key: Xbcrypt.key(Array(row.key.utf8), source: "t"),
                                          threads: 1)
        #expect(summary.chunks == 17)
        #expect(summary.oldestVersion == Xbcrypt.Version(rawValue: Int(version) - 0x30))
        #expect(summary.everyChunkHashed == (version == 0x33))
    }

    @Test("a wrong key is reported as such (v3 chunks carry a SHA-256 of the plaintext)")
    func wrongKey() throws {
        let (_, bytes) = try Self.sample()
        try #require(bytes[7] == 0x33, "the vectors are expected to be XBCRYP03")
        #expect(throws: KeyError.self) { _ = try decrypt(bytes, key: "xbcrypt-test-vector-key-256-bit!") }
        do {
            _ = try decrypt(bytes, key: "xbcrypt-test-vector-key-256-bit!")
        } catch let error as KeyError {
            #expect(error.category == .key)
        }
    }

    @Test("a flipped byte fails the CRC-32 (an integrity error) or, in the IV, the SHA-256 (reported as a wrong key or an altered chunk); a cut chunk and a bad magic are errors")
    func damage() throws {
        let (row, bytes) = try Self.sample()
        var flipped = bytes
        flipped[bytes.count / 2] ^= 1
        do {
            _ = try decrypt(flipped, key: row.key)
            Issue.record("a flipped byte was accepted")
        } catch let error as CofferError {
            #expect(error.category == .integrity, "\(error)")
        } catch let error as KeyError {
            #expect("\(error)".contains("or the chunk was altered"), "\(error)")
        }
        #expect(throws: CofferError.self) { _ = try decrypt(Array(bytes.dropLast(10)), key: row.key) }
        #expect(throws: CofferError.self) { _ = try decrypt(Array(bytes[..<20]), key: row.key) }
        var magic = bytes
        magic[3] = UInt8(ascii: "X")
        #expect(throws: CofferError.self) { _ = try decrypt(magic, key: row.key) }
    }

    @Test("keys must be 16, 24 or 32 bytes; a trailing newline is named")
    func keys() {
        #expect(throws: KeyError.self) { try Xbcrypt.key(Array("short".utf8), source: "k") }
        do {
            _ = try Xbcrypt.key(Array("0123456789abcdef0123456789abcdef\n".utf8), source: "k")
            Issue.record("33-byte key accepted")
        } catch {
            #expect("\(error)".contains("line feed"))
        }
    }

    @Test("CRC-32 matches zlib's check value")
    func crc() {
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926)
        #expect([UInt8]().withUnsafeBytes { CRC32.checksum($0) } == 0)
        let long = (0..<1000).map { UInt8($0 % 256) }
        // Slicing by 8 and the byte-at-a-time tail agree with a plain bitwise CRC.
        var c: UInt32 = 0xFFFF_FFFF
        for b in long {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        #expect(long.withUnsafeBytes { CRC32.checksum($0) } == ~c)
    }
}
