import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// Reads Percona XtraBackup's `.xbcrypt` files (../shared/vectors/xbcrypt/README.md), so existing
/// encrypted backups stay restorable and can be migrated.
///
/// The format is a sequence of chunks with no file header:
/// ```
/// magic "XBCRYP01" | "XBCRYP02" | "XBCRYP03"   8 bytes
/// reserved                                     8 bytes
/// original size (v3: plaintext + 32)           8 bytes, little-endian
/// encrypted size (payload length)              8 bytes, little-endian
/// CRC-32 of the payload                        4 bytes, little-endian
/// IV length, IV                                8 bytes + IV (v2, v3 only)
/// payload                                      AES-CTR, 128-bit big-endian counter, restarted per chunk
/// ```
/// v3 encrypts `plaintext ‖ SHA-256(plaintext)` with the IV as the first counter block; v1 and v2
/// start the counter at zero (v2's stored IV was never applied) and carry no hash. Nothing in this
/// format is authenticated: a CRC is not a MAC, and v1/v2 cannot even tell a wrong key.
public enum Xbcrypt {
    public static let magicPrefix = Array("XBCRYP0".utf8)
    static let fixedHeaderSize = 36
    /// Larger chunks than any xbcrypt writes are refused rather than allocated.
    public static let maxChunkSize = 256 << 20

    public enum Version: Int, Sendable, Comparable {
        case v1 = 1, v2, v3
        public static func < (a: Version, b: Version) -> Bool { a.rawValue < b.rawValue }
    }

    /// What a decryption found.
    public struct Summary: Sendable {
        public var plaintextBytes: UInt64 = 0
        public var chunks: UInt64 = 0
        /// The oldest chunk version seen (v1/v2 chunks carry no integrity check).
        public var oldestVersion: Version?
        /// True when every chunk carried v3's SHA-256 and it matched.
        public var everyChunkHashed: Bool { oldestVersion.map { $0 == .v3 } ?? true }

        public init() {}
    }

    /// The key exactly as xbcrypt uses it: the raw bytes, whose length picks AES-128/192/256.
    public static func key(_ raw: [UInt8], source: String) throws -> SymmetricKey {
        guard [16, 24, 32].contains(raw.count) else {
            var hint = ""
            if [17, 25, 33].contains(raw.count) && raw.last == 0x0A {
                hint = " (it ends with a line feed, which xbcrypt would also have used as part of the key: if the files were made with the key without it, remove the newline)"
            }
            throw CofferError.invalidKey(
                "xbcrypt key from \(source) is \(raw.count) bytes; xbcrypt keys are 16, 24 or 32 bytes (AES-128, -192, -256)\(hint)")
        }
        return SymmetricKey(data: raw)
    }

    public static func looksLikeXbcrypt(_ firstBytes: [UInt8]) -> Bool {
        firstBytes.count >= 8 && firstBytes.starts(with: magicPrefix) && (0x31...0x33).contains(firstBytes[7])
    }

    static func littleEndian(_ bytes: UnsafeRawBufferPointer, at offset: Int, count: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in (0..<count).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
        return value
    }

    /// Decrypts every chunk of `source` into `sink`, on `threads` threads, in order.
    public static func decrypt(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                               threads: Int, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        var counter: UInt64 = 0
        let pipeline = OrderedPipeline(
            slotCount: threads <= 1 ? 1 : 2 * threads + 2, workers: max(1, threads), inputCapacity: 65536 + 128,
            produce: { slot in
                // Read one whole chunk, header included, into the slot; the workers parse it again.
                slot.reserveInput(fixedHeaderSize + 8)
                let got = try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<fixedHeaderSize]))
                if got == 0 { return .end }
                guard got == fixedHeaderSize else {
                    throw CofferError.truncated("xbcrypt chunk \(counter) is cut off inside its header")
                }
                guard looksLikeXbcrypt(Array(UnsafeRawBufferPointer(rebasing: slot.input[0..<8]))) else {
                    throw CofferError.malformedHeader("xbcrypt chunk \(counter) does not start with XBCRYP01/02/03")
                }
                let hasIV = slot.input[7] != 0x31  // v2 and v3 store an IV
                var length = fixedHeaderSize
                if hasIV {
                    let got = try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[length..<(length + 8)]))
                    guard got == 8 else { throw CofferError.truncated("xbcrypt chunk \(counter) is cut off inside its header") }
                    let ivLength = littleEndian(UnsafeRawBufferPointer(slot.input), at: length, count: 8)
                    guard ivLength == 16 else {
                        throw CofferError.malformedHeader("xbcrypt chunk \(counter) has an IV of \(ivLength) bytes, not 16")
                    }
                    length += 8 + 16
                }
                let payloadLength = littleEndian(UnsafeRawBufferPointer(slot.input), at: 24, count: 8)
                guard payloadLength <= UInt64(maxChunkSize) else {
                    throw CofferError.malformedHeader("xbcrypt chunk \(counter) claims \(payloadLength) bytes")
                }
                let total = length + Int(payloadLength)
                if slot.input.count < total {
                    // Growing the buffer loses what it holds: keep the header read so far.
                    let head = Array(UnsafeRawBufferPointer(rebasing: slot.input[0..<fixedHeaderSize + 8]))
                    slot.reserveInput(total)
                    head.withUnsafeBytes { slot.input.copyMemory(from: $0) }
                }
                let start = fixedHeaderSize + (hasIV ? 8 : 0)
                let want = total - start
                let read = try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[start..<total]))
                guard read == want else {
                    throw CofferError.truncated("xbcrypt chunk \(counter) is cut off: \(read) of \(want) bytes")
                }
                slot.inputCount = total
                slot.counter = counter
                counter += 1
                return .chunk
            },
            transform: { slot in slot.output = [try decryptChunk(slot.filledInput, key: key, index: slot.counter)] })
        var summary = Summary()
        try pipeline.run(waitForReader: source.regularFileSize != nil) { slot in
            let chunk = slot.filledInput
            let version = Version(rawValue: Int(chunk[7]) - 0x30)!
            summary.oldestVersion = min(summary.oldestVersion ?? version, version)
            summary.chunks += 1
            for part in slot.output {
                try part.withUnsafeBytes { try sink.write($0) }
                summary.plaintextBytes += UInt64(part.count)
            }
            progress?(summary.plaintextBytes)
        }
        return summary
    }

    /// Decrypts one complete chunk (header and payload).
    static func decryptChunk(_ chunk: UnsafeRawBufferPointer, key: SymmetricKey, index: UInt64) throws -> Data {
        let version = Version(rawValue: Int(chunk[7]) - 0x30)!
        let originalSize = littleEndian(chunk, at: 16, count: 8)
        let payloadLength = Int(littleEndian(chunk, at: 24, count: 8))
        let expectedCRC = UInt32(littleEndian(chunk, at: 32, count: 4))
        let payloadStart = chunk.count - payloadLength
        let payload = UnsafeRawBufferPointer(rebasing: chunk[payloadStart...])
        guard CRC32.checksum(payload) == expectedCRC else {
            throw CofferError.chunkAuthenticationFailed(chunk: index, reason: "the xbcrypt chunk's CRC-32 does not match: the data was altered")
        }
        // v1/v2: the counter starts at zero; v3: the stored IV is the first counter block.
        let counterBlock = version == .v3 ? Array(chunk[(fixedHeaderSize + 8)..<(fixedHeaderSize + 24)])
                                          : [UInt8](repeating: 0, count: 16)
        let decrypted = try AES._CTR.decrypt(payload, using: key, nonce: AES._CTR.Nonce(nonceBytes: counterBlock))
        guard UInt64(decrypted.count) == originalSize else {
            throw CofferError.malformedHeader("xbcrypt chunk \(index) declares \(originalSize) bytes but holds \(decrypted.count)")
        }
        guard version == .v3 else { return decrypted }
        guard decrypted.count >= 32 else {
            throw CofferError.malformedHeader("xbcrypt v3 chunk \(index) is too short for its SHA-256")
        }
        let plaintext = decrypted.prefix(decrypted.count - 32)
        guard Data(SHA256.hash(data: plaintext)) == decrypted.suffix(32) else {
            throw CofferError.invalidKey(
                "wrong xbcrypt key: chunk \(index) does not match its SHA-256 once decrypted (or the chunk was altered)")
        }
        return Data(plaintext)
    }
}

/// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), slicing by 8 bytes.
/// A checksum, not cryptography: xbcrypt stores one per chunk.
enum CRC32 {
    static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            tables[0][i] = c
        }
        for i in 0..<256 {
            for t in 1..<8 { tables[t][i] = tables[0][Int(tables[t - 1][i] & 0xFF)] ^ (tables[t - 1][i] >> 8) }
        }
        return tables
    }()

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        let t = tables
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            let lo = crc ^ (UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
            crc = t[7][Int(lo & 0xFF)] ^ t[6][Int((lo >> 8) & 0xFF)] ^ t[5][Int((lo >> 16) & 0xFF)] ^ t[4][Int(lo >> 24)]
                ^ t[3][Int(bytes[i + 4])] ^ t[2][Int(bytes[i + 5])] ^ t[1][Int(bytes[i + 6])] ^ t[0][Int(bytes[i + 7])]
            i += 8
        }
        while i < n {
            crc = t[0][Int((crc ^ UInt32(bytes[i])) & 0xFF)] ^ (crc >> 8)
            i += 1
        }
        return ~crc
    }
}
