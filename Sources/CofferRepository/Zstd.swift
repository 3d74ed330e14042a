import CZstd

/// Errors of chunk compression and decompression.
public enum CompressionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input is not one well-formed zstd frame (bad magic, damaged block, trailing bytes, wrong size).
    case corrupt(String)
    /// The frame declares (or would produce) more bytes than the caller allows: refused before allocating.
    case tooLarge(declared: UInt64?, limit: Int)
    /// libzstd failed for a reason that is not the input's fault (e.g. out of memory).
    case library(String)

    public var description: String {
        switch self {
        case .corrupt(let why): return "compressed chunk is corrupt: \(why)"
        case .tooLarge(let declared, let limit):
            let size = declared.map { "\($0) bytes" } ?? "an unknown size"
            return "compressed chunk would decompress to \(size), more than the limit of \(limit) bytes"
        case .library(let why): return "zstd failed: \(why)"
        }
    }
}

/// The user's `--compression off|auto|fast|max` choice, mapped to zstd levels.
///
/// - `off`: chunks are stored raw.
/// - `fast`: zstd level 1 (the fastest standard level).
/// - `auto` (default): zstd level 2 (the "fast" match finder with a 64 Ki-entry table). Measured on
///   the benchmark's SQL dump in 512 KiB blocks (docs/PERFORMANCE.md, "Compression level"): 1.4x
///   the speed of level 3 for 3 % more bytes (2.80x against 2.88x); compression was 64 % of a
///   backup's CPU at level 3.
/// - `max`: zstd level 19, the highest non-"ultra" level (ultra levels 20–22 need a window larger than
///   a chunk, which gains nothing on chunks of a few MiB); slow, for archives written once.
public enum CompressionMode: String, CaseIterable, Sendable {
    case off, auto, fast, max

    /// The zstd level, or nil for `off`.
    public var zstdLevel: Int32? {
        switch self {
        case .off: return nil
        case .fast: return 1
        case .auto: return 2
        case .max: return 19
        }
    }
}

/// A zstd compression context (one per thread: not thread-safe, reused across chunks because creating
/// a context costs more than compressing a small chunk).
public final class ZstdCompressor {
    private let context: OpaquePointer
    public let level: Int32

    public init(level: Int32) throws {
        guard level >= ZSTD_minCLevel(), level <= ZSTD_maxCLevel() else {
            throw CompressionError.library("level \(level) outside \(ZSTD_minCLevel())...\(ZSTD_maxCLevel())")
        }
        guard let context = ZSTD_createCCtx() else { throw CompressionError.library("cannot create a context") }
        self.context = context
        self.level = level
        // One frame per chunk, content size always recorded (the decompressor requires it), no
        // frame checksum (every chunk is authenticated by its AEAD tag and keyed id anyway).
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level))
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1))
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0))
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `input` into one zstd frame, or returns nil when the frame would not be smaller than
    /// the input (the caller then stores the chunk raw). The output buffer is `input.count - 1` bytes,
    /// so an incompressible chunk costs no extra allocation: zstd stops with "destination too small".
    public func compressIfSmaller(_ input: UnsafeRawBufferPointer) throws -> [UInt8]? {
        guard input.count > 1 else { return nil }
        let capacity = input.count - 1
        var produced = 0
        var failure: size_t = 0
        let output = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            let r = ZSTD_compress2(context, buffer.baseAddress, capacity, input.baseAddress, input.count)
            if ZSTD_isError(r) != 0 { failure = r; count = 0 } else { produced = r; count = r }
        }
        if failure != 0 {
            if ZSTD_getErrorCode(failure) == ZSTD_error_dstSize_tooSmall { return nil }
            throw CompressionError.library(String(cString: ZSTD_getErrorName(failure)))
        }
        precondition(produced == output.count)
        return output
    }

    /// Compresses `input` into one zstd frame whatever its size.
    public func compress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let capacity = ZSTD_compressBound(input.count)
        var failure: size_t = 0
        let output = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            let r = ZSTD_compress2(context, buffer.baseAddress, capacity, input.baseAddress, input.count)
            if ZSTD_isError(r) != 0 { failure = r; count = 0 } else { count = r }
        }
        if failure != 0 { throw CompressionError.library(String(cString: ZSTD_getErrorName(failure))) }
        return output
    }

    public func compress(_ input: [UInt8]) throws -> [UInt8] {
        try input.withUnsafeBytes { try compress($0) }
    }
}

/// A zstd decompression context with a hard output limit.
///
/// Only single frames that declare their content size are accepted (Coffer's compressor always
/// writes it): the declared size is checked against the limit *before* anything is allocated, and
/// the frame must then produce exactly that many bytes and be followed by nothing. A decompression
/// bomb therefore costs at most `maxOutputSize` bytes of memory and is refused without allocating
/// when it says what it is.
public final class ZstdDecompressor {
    private let context: OpaquePointer

    public init() throws {
        guard let context = ZSTD_createDCtx() else { throw CompressionError.library("cannot create a context") }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    public func decompress(_ input: UnsafeRawBufferPointer, maxOutputSize: Int) throws -> [UInt8] {
        precondition(maxOutputSize >= 0)
        guard let base = input.baseAddress, input.count > 0 else { throw CompressionError.corrupt("empty input") }
        let declared = ZSTD_getFrameContentSize(base, input.count)
        if declared == coffer_zstd_contentsize_error { throw CompressionError.corrupt("not a zstd frame") }
        if declared == coffer_zstd_contentsize_unknown {
            throw CompressionError.corrupt("frame does not declare its content size")
        }
        guard declared <= UInt64(maxOutputSize) else {
            throw CompressionError.tooLarge(declared: declared, limit: maxOutputSize)
        }
        let frameSize = ZSTD_findFrameCompressedSize(base, input.count)
        if ZSTD_isError(frameSize) != 0 {
            throw CompressionError.corrupt(String(cString: ZSTD_getErrorName(frameSize)))
        }
        guard frameSize == input.count else {
            throw CompressionError.corrupt("\(input.count - frameSize) bytes after the frame")
        }
        let size = Int(declared)
        var failure: size_t = 0
        var produced = 0
        let output = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            // dstCapacity == declared size: zstd cannot write past it whatever the blocks say.
            let r = ZSTD_decompressDCtx(context, buffer.baseAddress, size, base, input.count)
            if ZSTD_isError(r) != 0 { failure = r; count = 0 } else { produced = r; count = r }
        }
        if failure != 0 { throw CompressionError.corrupt(String(cString: ZSTD_getErrorName(failure))) }
        guard produced == size else {
            throw CompressionError.corrupt("frame declared \(size) bytes but produced \(produced)")
        }
        return output
    }

    public func decompress(_ input: [UInt8], maxOutputSize: Int) throws -> [UInt8] {
        try input.withUnsafeBytes { try decompress($0, maxOutputSize: maxOutputSize) }
    }
}

/// How a chunk's bytes are stored: compressed with zstd, or raw when compression would not make it
/// smaller (already-compressed or encrypted input) or is off.
public enum StoredChunk: Equatable, Sendable {
    case raw([UInt8])
    case zstd([UInt8])

    public var bytes: [UInt8] {
        switch self { case .raw(let b), .zstd(let b): return b }
    }
}

/// Chunk compression as the repository uses it: `--compression` mode in, ``StoredChunk`` out.
public struct ChunkCompressor {
    public let mode: CompressionMode
    private let compressor: ZstdCompressor?

    public init(mode: CompressionMode) throws {
        self.mode = mode
        compressor = try mode.zstdLevel.map { try ZstdCompressor(level: $0) }
    }

    /// The chunk compressed, or raw when off or when the zstd frame would not be smaller.
    public func store(_ chunk: UnsafeRawBufferPointer) throws -> StoredChunk {
        if let compressor, let compressed = try compressor.compressIfSmaller(chunk) {
            return .zstd(compressed)
        }
        return .raw(Array(chunk))
    }

    public func store(_ chunk: [UInt8]) throws -> StoredChunk {
        try chunk.withUnsafeBytes { try store($0) }
    }

    /// The zstd frame of `chunk`, or nil when the chunk is to be stored raw (off, or the frame would
    /// not be smaller): unlike ``store(_:)``, a raw chunk is not copied.
    public func compressed(_ chunk: [UInt8]) throws -> [UInt8]? {
        guard let compressor else { return nil }
        return try chunk.withUnsafeBytes { try compressor.compressIfSmaller($0) }
    }
}

@inline(__always)
private func check(_ r: size_t) throws {
    if ZSTD_isError(r) != 0 { throw CompressionError.library(String(cString: ZSTD_getErrorName(r))) }
}
