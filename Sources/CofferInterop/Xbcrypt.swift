import CZlib
import CofferFormat
import CofferKeys
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
            throw KeyError.invalid(
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

    /// A chunk header's size and its payload's, from the header's first bytes (36, or 44 with
    /// v2/v3's IV length; `bytes` may hold more). Checks the magic, the IV length and the size limit.
    static func parseHeader(_ bytes: UnsafeRawBufferPointer, index: UInt64) throws -> (headerLength: Int, payloadLength: Int) {
        guard bytes.count >= fixedHeaderSize else {
            throw CofferError.truncated("xbcrypt chunk \(index) is cut off inside its header")
        }
        guard looksLikeXbcrypt(Array(bytes[0..<8])) else {
            throw CofferError.malformedHeader("xbcrypt chunk \(index) does not start with XBCRYP01/02/03")
        }
        var headerLength = fixedHeaderSize
        if bytes[7] != 0x31 {  // v2 and v3 store an IV
            guard bytes.count >= fixedHeaderSize + 8 else {
                throw CofferError.truncated("xbcrypt chunk \(index) is cut off inside its header")
            }
            let ivLength = littleEndian(bytes, at: fixedHeaderSize, count: 8)
            guard ivLength == 16 else {
                throw CofferError.malformedHeader("xbcrypt chunk \(index) has an IV of \(ivLength) bytes, not 16")
            }
            headerLength += 8 + 16
        }
        let payloadLength = littleEndian(bytes, at: 24, count: 8)
        guard payloadLength <= UInt64(maxChunkSize) else {
            throw CofferError.malformedHeader("xbcrypt chunk \(index) claims \(payloadLength) bytes")
        }
        return (headerLength, Int(payloadLength))
    }

    /// Decrypts every chunk of `source` into `sink`, on `threads` threads, in order.
    ///
    /// From a regular file, one thread reads only the chunk headers (each gives the next chunk's
    /// offset) and every worker reads its own chunk with a positioned read; a chunk larger than
    /// what is left of the file is refused before any memory is set aside for it. From a pipe, one
    /// reader reads whole chunks, and a chunk's buffer grows only as its bytes arrive.
    public static func decrypt(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                               threads: Int, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        try decrypt(from: source, to: sink, key: key, threads: threads, progress: progress, reserving: nil)
    }

    /// ``decrypt(from:to:key:threads:progress:)``; `reserving` sees every chunk buffer size asked for
    /// (the tests check that a chunk's claimed size alone sets nothing aside).
    static func decrypt(from source: ByteSource, to sink: ByteSink, key: SymmetricKey, threads: Int,
                        progress: (@Sendable (UInt64) -> Void)?, reserving: ((Int) -> Void)?) throws -> Summary {
        let threads = max(1, threads)
        let pipeline: OrderedPipeline
        let positioned = source.positionedReadStart
        if let (size, start) = positioned {
            pipeline = positionedPipeline(source: source, size: size, start: start, key: key, threads: threads,
                                          reserving: reserving)
        } else {
            pipeline = sequentialPipeline(source: source, key: key, threads: threads, reserving: reserving)
        }
        var summary = Summary()
        try pipeline.run(waitForReader: positioned != nil || source.regularFileSize != nil) { slot in
            let version = Version(rawValue: Int(slot.input[7]) - 0x30)!
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

    static let initialCapacity = 65536 + 128

    /// A regular file: the reader reads each header where the previous chunk ended, checks that the
    /// chunk fits in the file, and hands its offset on; the worker reads the whole chunk itself.
    static func positionedPipeline(source: ByteSource, size: UInt64, start: UInt64, key: SymmetricKey,
                                   threads: Int, reserving: ((Int) -> Void)?) -> OrderedPipeline {
        var counter: UInt64 = 0
        var offset = start
        let offsets = LockedTable<UInt64>()
        let headerMax = fixedHeaderSize + 8 + 16
        return OrderedPipeline(
            slotCount: threads <= 1 ? 1 : 2 * threads + 2, workers: threads, inputCapacity: initialCapacity,
            produce: { slot in
                guard offset < size else { return .end }
                let left = size - offset
                let want = Int(min(UInt64(headerMax), left))
                let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<want]), at: offset)
                let (headerLength, payloadLength) = try parseHeader(UnsafeRawBufferPointer(rebasing: slot.input[0..<got]),
                                                                    index: counter)
                // The size limit of what is left of the file comes before any allocation.
                guard UInt64(headerLength + payloadLength) <= left else {
                    let start = fixedHeaderSize + (headerLength > fixedHeaderSize ? 8 : 0)
                    throw CofferError.truncated(
                        "xbcrypt chunk \(counter) is cut off: \(left - UInt64(start)) of \(headerLength + payloadLength - start) bytes")
                }
                let total = headerLength + payloadLength
                if total > slot.input.count { reserving?(total) }
                slot.reserveInput(total)
                slot.inputCount = total
                slot.counter = counter
                offsets.set(counter, offset)
                offset += UInt64(total)
                counter += 1
                return .chunk
            },
            transform: { slot in
                let at = offsets.take(slot.counter)!
                let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<slot.inputCount]), at: at)
                // What this worker read is what it decrypts: it must be the chunk the reader measured.
                guard got == slot.inputCount,
                      let (headerLength, payloadLength) = try? parseHeader(slot.filledInput, index: slot.counter),
                      headerLength + payloadLength == got else {
                    throw CofferError.readFailed(path: source.path, reason: "the file changed while being read")
                }
                slot.output = [try decryptChunk(slot.filledInput, key: key, index: slot.counter)]
            })
    }

    /// A pipe: one reader reads whole chunks, header included, into the slots.
    static func sequentialPipeline(source: ByteSource, key: SymmetricKey, threads: Int,
                                   reserving: ((Int) -> Void)?) -> OrderedPipeline {
        var counter: UInt64 = 0
        return OrderedPipeline(
            slotCount: threads <= 1 ? 1 : 2 * threads + 2, workers: threads, inputCapacity: initialCapacity,
            produce: { slot in
                let got = try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<fixedHeaderSize]))
                if got == 0 { return .end }
                var filled = got
                if got == fixedHeaderSize && looksLikeXbcrypt(Array(slot.input[0..<8])) && slot.input[7] != 0x31 {
                    filled += try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[filled..<(filled + 8)]))
                }
                let (headerLength, payloadLength) = try parseHeader(UnsafeRawBufferPointer(rebasing: slot.input[0..<filled]),
                                                                    index: counter)
                let total = headerLength + payloadLength
                let start = filled
                // The buffer grows no faster than the bytes arrive: a header that claims 256 MiB
                // in a short stream gets no more memory than the stream holds.
                while filled < total {
                    if filled == slot.input.count {
                        let kept = Array(UnsafeRawBufferPointer(rebasing: slot.input[0..<filled]))
                        let capacity = min(total, 2 * slot.input.count)
                        reserving?(capacity)
                        slot.reserveInput(capacity)
                        kept.withUnsafeBytes { slot.input.copyMemory(from: $0) }
                    }
                    let end = min(total, slot.input.count)
                    let n = try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[filled..<end]))
                    filled += n
                    guard filled == end else {
                        throw CofferError.truncated("xbcrypt chunk \(counter) is cut off: \(filled - start) of \(total - start) bytes")
                    }
                }
                slot.inputCount = total
                slot.counter = counter
                counter += 1
                return .chunk
            },
            transform: { slot in slot.output = [try decryptChunk(slot.filledInput, key: key, index: slot.counter)] })
    }

    static let zeroCounterBlock = [UInt8](repeating: 0, count: 16)

    /// Decrypts one complete chunk (header and payload, as ``parseHeader(_:index:)`` measured it).
    /// Returns the plaintext: for v3, a slice of the decrypted bytes without their SHA-256 (no copy).
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
        let nonce = version == .v3
            ? try AES._CTR.Nonce(nonceBytes: UnsafeRawBufferPointer(rebasing: chunk[(fixedHeaderSize + 8)..<(fixedHeaderSize + 24)]))
            : try AES._CTR.Nonce(nonceBytes: zeroCounterBlock)
        let decrypted = try AES._CTR.decrypt(payload, using: key, nonce: nonce)
        guard UInt64(decrypted.count) == originalSize else {
            throw CofferError.malformedHeader("xbcrypt chunk \(index) declares \(originalSize) bytes but holds \(decrypted.count)")
        }
        guard version == .v3 else { return decrypted }
        guard decrypted.count >= 32 else {
            throw CofferError.malformedHeader("xbcrypt v3 chunk \(index) is too short for its SHA-256")
        }
        let plaintextCount = decrypted.count - 32
        let matches = decrypted.withUnsafeBytes { bytes in
            var hasher = SHA256()
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[0..<plaintextCount]))
            return hasher.finalize() == UnsafeRawBufferPointer(rebasing: bytes[plaintextCount...])
        }
        guard matches else {
            throw KeyError.invalid(
                "wrong xbcrypt key: chunk \(index) does not match its SHA-256 once decrypted (or the chunk was altered)")
        }
        return decrypted.prefix(plaintextCount)
    }
}

/// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), by zlib itself.
/// A checksum, not cryptography: xbcrypt stores one per chunk.
enum CRC32 {
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(truncatingIfNeeded: crc32_z(0, base.assumingMemoryBound(to: Bytef.self), bytes.count))
    }
}
