import CofferFormat
@testable import CofferRepository
import Crypto
import Testing

/// FastCDC one byte per step, written straight from the paper (normalized chunking level 2), as the
/// reference the two-bytes-per-step loop must agree with.
func referenceCut(_ data: ArraySlice<UInt8>, _ p: ChunkerParameters, _ gear: GearTable) -> Int {
    let n = data.count
    if n <= p.minSize { return n }
    let limit = min(n, p.maxSize), normal = min(p.averageSize, limit)
    var fp: UInt64 = 0
    var i = p.minSize
    let base = data.startIndex
    while i < limit {
        fp = (fp << 1) &+ gear[data[base + i]]
        if fp & (i < normal ? p.smallMask : p.largeMask) == 0 { return i + 1 }
        i += 1
    }
    return limit
}

func chunkLengths(_ data: [UInt8], _ cdc: FastCDC, readSize: Int = 1 << 20) throws -> [Int] {
    let chunker = StreamChunker(source: BytesSource(data), cdc: cdc, readSize: readSize)
    var lengths: [Int] = []
    while let n = try chunker.next({ $0.count }) { lengths.append(n) }
    return lengths
}

/// A source that hands out at most `step` bytes per read, to exercise the refill path.
struct TricklingSource: ChunkSource {
    var inner: BytesSource
    let step: Int
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<min(step, buffer.count)]))
    }
}

@Suite struct ChunkerTests {
    static let small = try! ChunkerParameters(averageSize: 16 << 10)  // 4 KiB / 16 KiB / 64 KiB

    @Test("parameters: power-of-two average, 64 <= min < avg < max <= 64 MiB")
    func parameterValidation() throws {
        #expect(throws: CofferError.self) { try ChunkerParameters(averageSize: 1_000_000) }
        #expect(throws: CofferError.self) { try ChunkerParameters(averageSize: 1 << 11) }
        #expect(throws: CofferError.self) { try ChunkerParameters(averageSize: 1 << 25) }
        #expect(throws: CofferError.self) { try ChunkerParameters(minSize: 1 << 20, averageSize: 1 << 20, maxSize: 1 << 22) }
        #expect(throws: CofferError.self) { try ChunkerParameters(minSize: 32, averageSize: 1 << 12, maxSize: 1 << 14) }
        #expect(throws: CofferError.self) { try ChunkerParameters(minSize: 1 << 18, averageSize: 1 << 20, maxSize: 1 << 27) }
        let d = ChunkerParameters.default
        #expect((d.minSize, d.averageSize, d.maxSize) == (128 << 10, 512 << 10, 2 << 20))
        #expect(d.smallMask.nonzeroBitCount == 21 && d.largeMask.nonzeroBitCount == 17)
        #expect(d.smallMask >> 63 == 0 && d.largeMask >> 63 == 0)
    }

    @Test("the two-bytes-per-step loop cuts exactly where one-byte-per-step FastCDC does")
    func matchesReference() throws {
        let data = deterministicBytes(3 << 20, seed: 5) + sqlLikeText(2 << 20)
        for params in [Self.small, try ChunkerParameters(minSize: 4097, averageSize: 1 << 14, maxSize: 50_001)] {
            let cdc = FastCDC(parameters: params, gear: .fixedForTesting)
            var offset = 0, cuts = 0
            try data.withUnsafeBytes { raw in
                while offset < data.count {
                    let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                    let cut = try #require(cdc.cutPoint(rest, isFinal: true))
                    let expected = referenceCut(data[offset...], params, .fixedForTesting)
                    #expect(cut == expected, "at offset \(offset)")
                    if cut != expected { return }
                    offset += cut
                    cuts += 1
                }
            }
            #expect(cuts > 100)
        }
    }

    @Test("chunks cover the input exactly, lie within min...max, and average near the target")
    func boundsAndCoverage() throws {
        let data = deterministicBytes(8 << 20, seed: 2)
        let p = Self.small
        let lengths = try chunkLengths(data, FastCDC(parameters: p, gear: .fixedForTesting))
        #expect(lengths.reduce(0, +) == data.count)
        for n in lengths.dropLast() { #expect(n >= p.minSize && n <= p.maxSize) }
        #expect(lengths.last! <= p.maxSize)
        let mean = data.count / lengths.count
        // Normalized chunking puts the mean near the average (FastCDC: min + ~avg*0.8).
        #expect(mean > p.averageSize / 2 && mean < p.averageSize * 2, "mean \(mean)")
        // A run of zeros: the hash becomes constant, chunks still cover it and stay within max.
        let zeros = try chunkLengths([UInt8](repeating: 0, count: 5 * p.maxSize + 3), FastCDC(parameters: p, gear: .fixedForTesting))
        #expect(zeros.count >= 5 && zeros.dropLast().allSatisfy { $0 <= p.maxSize } && zeros.reduce(0, +) == 5 * p.maxSize + 3)
    }

    @Test("streaming gives the same chunks whatever the read sizes", arguments: [1, 7, 4096, 100_000])
    func streamingIndependentOfReads(step: Int) throws {
        let data = sqlLikeText(1 << 20, seed: 4) + deterministicBytes(700_001, seed: 4)
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        let whole = try chunkLengths(data, cdc)
        let chunker = StreamChunker(source: TricklingSource(inner: BytesSource(data), step: step), cdc: cdc, readSize: 5000)
        var lengths: [Int] = [], joined: [UInt8] = []
        while let chunk = try chunker.nextChunk() { lengths.append(chunk.count); joined += chunk }
        #expect(lengths == whole)
        #expect(joined == data)
        #expect(chunker.offset == UInt64(data.count))
    }

    @Test("a size hint (a file's size) changes no cut, whether the input is shorter, equal or longer",
          arguments: [0, 1, 5000, 1_000_000, 1_700_001, 1_700_002, 50_000_000])
    func sizeHintChangesNoCut(hint: Int) throws {
        let data = sqlLikeText(1 << 20, seed: 5) + deterministicBytes(651_425, seed: 5)  // 1,700,001 bytes
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        let whole = try chunkLengths(data, cdc)
        let chunker = StreamChunker(source: TricklingSource(inner: BytesSource(data), step: 70_000), cdc: cdc,
                                    readSize: 5000, sizeHint: hint)
        var lengths: [Int] = [], joined: [UInt8] = []
        while let chunk = try chunker.nextChunk() {
            lengths.append(chunk.count)
            joined += chunk
            #expect(chunker.isFinished == (joined.count == data.count))
        }
        #expect(lengths == whole)
        #expect(joined == data)
        #expect(chunker.isFinished)
    }

    @Test("isFinished: a one-chunk input is finished after its first chunk, an empty one at once")
    func finishedAfterTheOnlyChunk() throws {
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        let one = StreamChunker(source: BytesSource(deterministicBytes(3000, seed: 1)), cdc: cdc, sizeHint: 3000)
        #expect(!one.isFinished)
        #expect(try one.nextChunk()?.count == 3000)
        #expect(one.isFinished)
        #expect(try one.nextChunk() == nil)
        let empty = StreamChunker(source: BytesSource([]), cdc: cdc, sizeHint: 0)
        #expect(try empty.nextChunk() == nil)
        #expect(empty.isFinished)
    }

    @Test("empty and tiny inputs")
    func tinyInputs() throws {
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        #expect(try chunkLengths([], cdc) == [])
        #expect(try chunkLengths([7], cdc) == [1])
        #expect(try chunkLengths(deterministicBytes(Self.small.minSize), cdc) == [Self.small.minSize])
    }

    @Test("an insertion near the start changes only the chunks around it")
    func shiftResistance() throws {
        let data = sqlLikeText(4 << 20, seed: 8)
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        let key = try ChunkIDKey(key: SymmetricKey(size: .bits256))
        func ids(_ d: [UInt8]) throws -> [ChunkID] {
            let c = StreamChunker(source: BytesSource(d), cdc: cdc)
            var out: [ChunkID] = []
            while let id = try c.next({ key.id(of: $0) }) { out.append(id) }
            return out
        }
        let before = try ids(data)
        var edited = data
        edited.insert(contentsOf: Array("-- a comment inserted by the test\n".utf8), at: 100_000)
        let after = try ids(edited)
        let new = Set(after).subtracting(before)
        #expect(before.count > 100)
        #expect(new.count <= 3, "\(new.count) of \(after.count) chunks changed")
    }

    @Test("the gear table is keyed: other key, other cut points; same key, same cut points")
    func keyedGear() throws {
        let data = deterministicBytes(2 << 20, seed: 6)
        let k1 = SymmetricKey(data: [UInt8](repeating: 1, count: 32))
        let k2 = SymmetricKey(data: [UInt8](repeating: 2, count: 32))
        let a = try chunkLengths(data, FastCDC(parameters: Self.small, gear: GearTable(key: k1)))
        let a2 = try chunkLengths(data, FastCDC(parameters: Self.small, gear: GearTable(key: k1)))
        let b = try chunkLengths(data, FastCDC(parameters: Self.small, gear: GearTable(key: k2)))
        #expect(a == a2)
        #expect(a != b)
        // Cut offsets, not just the lengths, mostly differ.
        func offsets(_ l: [Int]) -> Set<Int> { var s = Set<Int>(), o = 0; for n in l { o += n; s.insert(o) }; return s }
        #expect(offsets(a).intersection(offsets(b)).count < a.count / 4)
    }

    @Test("gear table vector: HKDF-SHA256(zero key, label), little-endian words")
    func gearVector() throws {
        // Independent derivation of the first and last entries from the documented rule.
        let okm = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: [UInt8](repeating: 0, count: 32)),
                                         info: Array("coffer-repository fastcdc gear table v1".utf8),
                                         outputByteCount: 2048).withUnsafeBytes { Array($0) }
        func word(_ i: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(okm[i * 8 + $1]) << UInt64(8 * $1) } }
        let gear = GearTable.fixedForTesting
        for i in [0, 1, 128, 255] { #expect(gear[UInt8(i)] == word(i)) }
        #expect(Set((0...255).map { gear[UInt8($0)] }).count == 256)
    }

    @Test("chunk ids are HMAC-SHA256 under the chunk-id key; other key, other id")
    func chunkIDs() throws {
        let k = SymmetricKey(data: Array(0..<32))
        let key = try ChunkIDKey(key: k)
        let chunk = Array("hello chunk".utf8)
        let expected = Array(HMAC<SHA256>.authenticationCode(for: chunk, using: k))
        #expect(key.id(of: chunk).bytes == expected)
        #expect(key.id(of: chunk).hex.count == 64)
        #expect(key.id(of: chunk).hex == expected.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined())
        let other = try ChunkIDKey(key: SymmetricKey(data: Array(1..<33)))
        #expect(other.id(of: chunk) != key.id(of: chunk))
        #expect(throws: RepositoryError.self) { try ChunkIDKey(key: SymmetricKey(size: .bits128)) }
    }

    @Test("a file read through ByteSource chunks like the same bytes in memory")
    func fileSource() throws {
        let dir = TemporaryDirectory()
        let data = sqlLikeText(3 << 20, seed: 11)
        let path = dir.file("dump.sql")
        #expect(FileManagerLite.write(data, to: path))
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let cdc = FastCDC(parameters: Self.small, gear: .fixedForTesting)
        let chunker = StreamChunker(source: source, cdc: cdc, readSize: 65_536)
        var lengths: [Int] = []
        while let n = try chunker.next({ $0.count }) { lengths.append(n) }
        #expect(lengths == (try chunkLengths(data, cdc)))
    }
}
