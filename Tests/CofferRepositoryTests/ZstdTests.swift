import CZstd
@testable import CofferRepository
import Testing

@Suite struct ZstdTests {
    @Test("round trip at every --compression level and several sizes", arguments: CompressionMode.allCases)
    func roundTrip(mode: CompressionMode) throws {
        let compressor = try ChunkCompressor(mode: mode)
        let decompressor = try ZstdDecompressor()
        for size in [0, 1, 100, 65_536, 1 << 20] {
            let chunk = sqlLikeText(size, seed: UInt64(size))
            let stored = try compressor.store(chunk)
            switch stored {
            case .raw(let bytes):
                #expect(bytes == chunk)
                // Raw only when off, or when zstd could not make it smaller (tiny inputs).
                #expect(mode == .off || size < 100, "size \(size) stored raw")
            case .zstd(let frame):
                #expect(mode != .off)
                #expect(frame.count < chunk.count)
                #expect(try decompressor.decompress(frame, maxOutputSize: size) == chunk)
            }
        }
    }

    @Test("levels: off none, fast 1, auto 3, max 19")
    func levels() {
        #expect(CompressionMode.off.zstdLevel == nil)
        #expect(CompressionMode.fast.zstdLevel == 1)
        #expect(CompressionMode.auto.zstdLevel == 2)
        #expect(CompressionMode.max.zstdLevel == 19)
        #expect(CompressionMode(rawValue: "auto") == .auto)
        #expect(CompressionMode(rawValue: "best") == nil)
    }

    @Test("incompressible chunks are stored raw, compressible ones compressed")
    func incompressibleStoredRaw() throws {
        let compressor = try ChunkCompressor(mode: .auto)
        let random = deterministicBytes(1 << 20, seed: 9)
        #expect(try compressor.store(random) == .raw(random))
        let text = sqlLikeText(1 << 20)
        guard case .zstd(let frame) = try compressor.store(text) else {
            Issue.record("compressible text stored raw"); return
        }
        #expect(frame.count < text.count / 2)
    }

    @Test("corrupt frames are refused: bad magic, truncation, trailing bytes, garbage, empty")
    func corruptRefused() throws {
        let text = sqlLikeText(200_000)
        let frame = try ZstdCompressor(level: 3).compress(text)
        let d = try ZstdDecompressor()
        var badMagic = frame
        badMagic[0] ^= 0x01
        var cases: [(String, [UInt8])] = [
            ("bad magic", badMagic), ("trailing byte", frame + [0]), ("two frames", frame + frame),
            ("garbage", deterministicBytes(5000, seed: 3)), ("empty", []),
        ]
        for cut in [1, 5, 12, frame.count / 2, frame.count - 1] {
            cases.append(("truncated to \(cut)", Array(frame[..<cut])))
        }
        for (what, input) in cases {
            do {
                _ = try d.decompress(input, maxOutputSize: 1 << 20)
                Issue.record("\(what): decompressed")
            } catch let error as CompressionError {
                guard case .corrupt = error else { Issue.record("\(what): \(error)"); continue }
            }
        }
        // The intact frame still decompresses with the same context; so does a frame of nothing.
        #expect(try d.decompress(frame, maxOutputSize: text.count) == text)
        #expect(try d.decompress(try ZstdCompressor(level: 3).compress([]), maxOutputSize: 0) == [])
    }

    @Test("a decompression bomb is refused before allocating: 256 MiB of zeros with a 4 MiB limit")
    func bombRefused() throws {
        // Compress 256 MiB of zeros in a streaming fashion, pledging the size, without holding it.
        let total: UInt64 = 256 << 20
        let cctx = ZSTD_createCCtx()!
        defer { ZSTD_freeCCtx(cctx) }
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1)
        _ = ZSTD_CCtx_setPledgedSrcSize(cctx, total)
        var frame: [UInt8] = []
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        var out = [UInt8](repeating: 0, count: 1 << 16)
        for i in 0..<256 {
            let mode = i == 255 ? ZSTD_e_end : ZSTD_e_continue
            zeros.withUnsafeBytes { z in
                out.withUnsafeMutableBytes { o in
                    var input = ZSTD_inBuffer(src: z.baseAddress, size: z.count, pos: 0)
                    while true {
                        var output = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                        let left = ZSTD_compressStream2(cctx, &output, &input, mode)
                        precondition(ZSTD_isError(left) == 0)
                        frame += o[0..<output.pos]
                        if mode == ZSTD_e_end ? left == 0 : input.pos == input.size { break }
                    }
                }
            }
        }
        #expect(frame.count < 1 << 20, "the bomb is small: \(frame.count) bytes")
        do {
            let out = try ZstdDecompressor().decompress(frame, maxOutputSize: 4 << 20)
            Issue.record("the bomb decompressed to \(out.count) bytes")  // not the bytes: 256 MiB of output
        } catch {
            #expect(error as? CompressionError == .tooLarge(declared: total, limit: 4 << 20))
        }
    }

    @Test("a frame without a declared content size is refused")
    func unknownSizeRefused() throws {
        let cctx = ZSTD_createCCtx()!
        defer { ZSTD_freeCCtx(cctx) }
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)
        let input = sqlLikeText(10_000)
        var frame = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = frame.withUnsafeMutableBytes { o in
            input.withUnsafeBytes { ZSTD_compress2(cctx, o.baseAddress, o.count, $0.baseAddress, $0.count) }
        }
        #expect(ZSTD_isError(n) == 0)
        frame.removeLast(frame.count - n)
        #expect(throws: CompressionError.corrupt("frame does not declare its content size")) {
            try ZstdDecompressor().decompress(frame, maxOutputSize: 1 << 20)
        }
    }

    @Test("a frame that declares fewer bytes than it holds is refused, not decompressed past its size")
    func lyingSizeRefused() throws {
        let text = sqlLikeText(1 << 20)
        var frame = try ZstdCompressor(level: 3).compress(text)
        // Frame header (RFC 8878 3.1.1.1): magic, descriptor; window descriptor unless single-segment;
        // dictionary id (none here); then the content size field, 4 bytes for 1 MiB.
        let descriptor = frame[4]
        #expect(descriptor >> 6 == 2, "4-byte content size field")
        #expect(descriptor & 3 == 0, "no dictionary id")
        let fcs = (descriptor & 0x20) != 0 ? 5 : 6
        #expect(Array(frame[fcs..<fcs + 4]) == [0, 0, 0x10, 0])  // 1 MiB little-endian
        frame[fcs + 1] = 0x10
        frame[fcs + 2] = 0  // now declares 0x1000 = 4096 bytes
        do {
            _ = try ZstdDecompressor().decompress(frame, maxOutputSize: 1 << 20)
            Issue.record("a frame larger than its declared size decompressed")
        } catch let error as CompressionError {
            guard case .corrupt = error else { Issue.record("\(error)"); return }
        }
    }
}
