import CofferFormat
import Crypto

/// Content-defined chunking parameters: FastCDC with normalized chunking (level 2).
///
/// A cut is never made before `minSize` bytes nor after `maxSize`; between them, the Gear hash of
/// the last 63 bytes decides. Up to `averageSize` a harder condition is used (2 more mask bits) and
/// after it an easier one (2 fewer), which pulls chunk sizes towards the average (FastCDC's
/// "normalized chunking", Xia et al., USENIX ATC 2016 / TPDS 2020).
public struct ChunkerParameters: Equatable, Sendable, CustomStringConvertible {
    public let minSize: Int
    public let averageSize: Int
    public let maxSize: Int

    /// Smallest and largest average sizes accepted (recorded in a repository's config, so a reader
    /// must refuse values outside these bounds before allocating `maxSize` buffers).
    public static let averageSizeRange = (1 << 12)...(1 << 24)
    /// The largest chunk any parameters may produce (64 MiB): bounds every chunk buffer.
    public static let maxChunkSize = 1 << 26

    /// The default: 512 KiB average, 128 KiB minimum, 2 MiB maximum (see docs/PERFORMANCE.md,
    /// "Repository chunk size", for the measurement behind it).
    public static let `default` = try! ChunkerParameters(averageSize: 512 << 10)

    /// `averageSize` a power of two; minimum a quarter of it, maximum four times it.
    public init(averageSize: Int) throws {
        try self.init(minSize: averageSize / 4, averageSize: averageSize, maxSize: averageSize * 4)
    }

    public init(minSize: Int, averageSize: Int, maxSize: Int) throws {
        guard Self.averageSizeRange.contains(averageSize), averageSize.nonzeroBitCount == 1 else {
            throw CofferError.invalidParameter(
                "chunker average size \(averageSize) is not a power of two in \(Self.averageSizeRange)")
        }
        guard minSize >= 64, minSize < averageSize, averageSize < maxSize, maxSize <= Self.maxChunkSize else {
            throw CofferError.invalidParameter(
                "chunker sizes must satisfy 64 <= min < average < max <= \(Self.maxChunkSize) " +
                "(got \(minSize)/\(averageSize)/\(maxSize))")
        }
        self.minSize = minSize
        self.averageSize = averageSize
        self.maxSize = maxSize
    }

    /// log2(averageSize).
    var averageBits: Int { averageSize.trailingZeroBitCount }

    /// Mask with `bits` one-bits just below bit 63. Bit k of a Gear hash depends on the last k+1
    /// bytes, so bits 62-n…62 make every byte of a 63-byte window count; bit 63 is left out so the
    /// masks shifted left by one (for the two-bytes-per-step loop) stay 64-bit.
    static func mask(bits: Int) -> UInt64 { ((UInt64(1) << UInt64(bits)) - 1) << UInt64(63 - bits) }

    /// Harder mask before the average size (normalization level 2: two more bits).
    var smallMask: UInt64 { Self.mask(bits: averageBits + 2) }
    /// Easier mask after the average size (two fewer bits).
    var largeMask: UInt64 { Self.mask(bits: averageBits - 2) }

    public var description: String { "FastCDC min \(minSize) avg \(averageSize) max \(maxSize)" }
}

/// The Gear table: 256 pseudo-random 64-bit values, one per byte value.
///
/// In a repository the table is **keyed**: derived with HKDF-SHA256 from a repository secret (the
/// chunker key, which writers hold along with the chunk-id key). With a public table, the sizes of
/// the stored (encrypted, compressed) chunks reveal where a known file's cut points fall, so someone
/// who sees only the storage can confirm that a guessed file was backed up (chunk-size
/// fingerprinting, cf. restic's per-repository polynomial and borg's keyed buzhash seed). A keyed
/// table makes the cut points unpredictable without the key. The price: chunks do not deduplicate
/// across repositories with different keys, which is intended.
///
/// ``fixedForTesting`` is the table derived from an all-zero key: deterministic, for tests, vectors
/// and benchmarks only; never for a repository.
public struct GearTable: Sendable {
    /// 256 entries, then the same entries shifted left by one (for the two-bytes-per-step loop).
    let entries: [UInt64]

    /// HKDF info label, part of the format (changing it changes every cut point).
    static let label = Array("coffer-repository fastcdc gear table v1".utf8)

    /// Derives the table from the repository's chunker key (32 bytes).
    public init(key: SymmetricKey) {
        let material = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Self.label, outputByteCount: 256 * 8)
        var table = [UInt64](repeating: 0, count: 512)
        material.withUnsafeBytes { raw in
            for i in 0..<256 {
                var v: UInt64 = 0
                for j in 0..<8 { v |= UInt64(raw[i * 8 + j]) << UInt64(8 * j) }  // little-endian
                table[i] = v
                table[256 + i] = v << 1
            }
        }
        entries = table
    }

    /// The table of an all-zero key: tests, vectors and benchmarks only.
    public static let fixedForTesting = GearTable(key: SymmetricKey(data: [UInt8](repeating: 0, count: 32)))

    /// Entry `i` (for tests and documentation vectors).
    public subscript(i: UInt8) -> UInt64 { entries[Int(i)] }
}

/// Finds FastCDC cut points. Pure function of (bytes, parameters, gear table).
public struct FastCDC: Sendable {
    public let parameters: ChunkerParameters
    public let gear: GearTable

    public init(parameters: ChunkerParameters = .default, gear: GearTable) {
        self.parameters = parameters
        self.gear = gear
    }

    /// The length of the first chunk of `data`, or nil when more data is needed to decide (fewer than
    /// `maxSize` bytes and no cut found, and `isFinal` is false). With `isFinal`, the rest of the
    /// input is `data`: a chunk shorter than `minSize` is then possible (the last one).
    public func cutPoint(_ data: UnsafeRawBufferPointer, isFinal: Bool) -> Int? {
        let n = data.count
        let p = parameters
        if n <= p.minSize { return isFinal ? n : nil }
        let limit = Swift.min(n, p.maxSize)
        let normal = Swift.min(p.averageSize, limit)
        let found: Int? = gear.entries.withUnsafeBufferPointer { table in
            let bytes = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return Self.scan(bytes, from: p.minSize, normal: normal, limit: limit,
                             smallMask: p.smallMask, largeMask: p.largeMask, table: table.baseAddress!)
        }
        if let found { return found }
        if limit == p.maxSize { return p.maxSize }
        return isFinal ? n : nil
    }

    /// The hot loop, two bytes per step (FastCDC 2020's "rolling two bytes"): with G' = G << 1 and
    /// M' = M << 1, `fp << 2 + G'[a]` is the one-step hash after byte a shifted left by one, so testing
    /// it against M' is testing the one-step hash against M; adding G[b] gives the hash after b.
    @inline(__always)
    static func scan(_ bytes: UnsafePointer<UInt8>, from start: Int, normal: Int, limit: Int,
                     smallMask: UInt64, largeMask: UInt64, table: UnsafePointer<UInt64>) -> Int? {
        let shifted = table + 256
        var fp: UInt64 = 0
        var i = start
        let smallShifted = smallMask << 1, largeShifted = largeMask << 1
        // Before the normal size: the harder mask.
        while i + 1 < normal {
            fp = (fp << 2) &+ shifted[Int(bytes[i])]
            if fp & smallShifted == 0 { return i + 1 }
            fp = fp &+ table[Int(bytes[i + 1])]
            if fp & smallMask == 0 { return i + 2 }
            i += 2
        }
        if i < normal {
            fp = (fp << 1) &+ table[Int(bytes[i])]
            if fp & smallMask == 0 { return i + 1 }
            i += 1
        }
        // After it: the easier mask.
        while i + 1 < limit {
            fp = (fp << 2) &+ shifted[Int(bytes[i])]
            if fp & largeShifted == 0 { return i + 1 }
            fp = fp &+ table[Int(bytes[i + 1])]
            if fp & largeMask == 0 { return i + 2 }
            i += 2
        }
        if i < limit {
            fp = (fp << 1) &+ table[Int(bytes[i])]
            if fp & largeMask == 0 { return i + 1 }
        }
        return nil
    }
}

/// Where the chunker reads from: `read` fills as much of the buffer as it can and returns the byte
/// count, 0 only at the end of the input.
public protocol ChunkSource {
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

extension ByteSource: ChunkSource {
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try readFully(into: buffer)
    }
}

/// An in-memory input (tests, small inputs).
public struct BytesSource: ChunkSource {
    private let bytes: [UInt8]
    private var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = Swift.min(buffer.count, bytes.count - offset)
        if n > 0 {
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
        }
        offset += n
        return n
    }
}

/// Splits a stream into content-defined chunks with bounded memory: one buffer of at most
/// `maxSize + readSize` bytes, whatever the input size. Chunks are lent to the caller, not copied.
///
/// A chunk is cut as soon as the bytes read hold its cut point (FastCDC's cut depends only on the
/// bytes before it), so the buffer needs little room beyond one maximal chunk, and what is moved to
/// the buffer's front before a read is only the unfinished chunk.
public final class StreamChunker<Source: ChunkSource> {
    public let cdc: FastCDC
    private var source: Source
    private var buffer: UnsafeMutableRawBufferPointer
    /// The buffer's size once the input turns out to be longer than the first allocation.
    private let fullCapacity: Int
    private var start = 0, end = 0
    private var atEnd = false
    /// Offset in the stream of the next chunk.
    public private(set) var offset: UInt64 = 0

    /// `readSize`: the buffer's room beyond a maximal chunk (default 256 KiB; reads fill the whole
    /// free part of the buffer). `sizeHint`: the input's
    /// expected length (a file's size), so that a small input gets a buffer of its size rather than
    /// `maxSize + readSize` bytes (10,000 small files would otherwise map and unmap 3 MiB each); the
    /// buffer grows to the full size if the input turns out longer.
    public init(source: Source, cdc: FastCDC, readSize: Int = 256 << 10, sizeHint: Int? = nil) {
        precondition(readSize > 0)
        self.source = source
        self.cdc = cdc
        let full = cdc.parameters.maxSize + readSize
        fullCapacity = full
        let first = sizeHint.map { Swift.min(full, Swift.max(4096, $0 + 1)) } ?? full
        buffer = .allocate(byteCount: first, alignment: 64)
    }

    deinit { buffer.deallocate() }

    /// Whether every byte of the input has been lent out (the last chunk was the input's end).
    public var isFinished: Bool { atEnd && start == end }

    /// Lends the next chunk to `body` (valid only during the call); nil at the end of the input.
    public func next<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        while true {
            let available = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
            if available.isEmpty && atEnd { return nil }
            // nil: no cut point in the bytes read so far, and fewer than `maxSize` of them.
            if !available.isEmpty, let cut = cdc.cutPoint(available, isFinal: atEnd) {
                start += cut
                offset += UInt64(cut)
                return try body(UnsafeRawBufferPointer(rebasing: available[0..<cut]))
            }
            try fill()
        }
    }

    /// The next chunk as a copy; nil at the end of the input.
    public func nextChunk() throws -> [UInt8]? {
        try next { Array($0) }
    }

    /// Moves what is left to the front and reads until the buffer is full or the input ends.
    private func fill() throws {
        if start > 0 {
            let remaining = end - start
            if remaining > 0 {
                buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: remaining)
            }
            start = 0
            end = remaining
        }
        if end == buffer.count && buffer.count < fullCapacity {
            let larger = UnsafeMutableRawBufferPointer.allocate(byteCount: fullCapacity, alignment: 64)
            if end > 0 { larger.baseAddress!.copyMemory(from: buffer.baseAddress!, byteCount: end) }
            buffer.deallocate()
            buffer = larger
        }
        while end < buffer.count {
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[end...]))
            if n == 0 { atEnd = true; return }
            end += n
        }
    }
}

/// Chunk ids: HMAC-SHA256 of the chunk's plaintext under the repository's chunk-id key. Without that
/// key the storage (and anyone who reads it) cannot compute the id of a guessed chunk, so it cannot
/// confirm that a known file is in the repository.
public struct ChunkIDKey: Sendable {
    private let key: SymmetricKey

    /// `key` must be 32 bytes.
    public init(key: SymmetricKey) throws {
        guard key.bitCount == 256 else {
            throw RepositoryError.key("chunk-id key must be 256 bits, not \(key.bitCount)")
        }
        self.key = key
    }

    public func id(of chunk: UnsafeRawBufferPointer) -> ChunkID {
        ChunkID(bytes: Array(HMAC<SHA256>.authenticationCode(for: chunk, using: key)))
    }

    public func id(of chunk: [UInt8]) -> ChunkID {
        chunk.withUnsafeBytes { id(of: $0) }
    }
}

/// A 32-byte chunk id; its lowercase hex form is its name.
public struct ChunkID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        self.bytes = bytes
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }
}
