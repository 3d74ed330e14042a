@testable import CofferS3
import NIOCore
import Testing

/// A request body goes to the connection in slices made as they are asked for, never as one copy
/// of the whole object (docs/S3.md, "Memory").
@Suite struct SlicedBodyTests {
    func slices(_ bytes: [UInt8]) async -> [[UInt8]] {
        var out: [[UInt8]] = []
        for await buffer in SlicedBody(bytes) { out.append(Array(buffer.readableBytesView)) }
        return out
    }

    @Test("slices of 256 KiB, the last one shorter, that add up to the body byte for byte")
    func slicesAddUp() async {
        let size = 3 * SlicedBody.sliceSize + 12_345
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        let parts = await slices(body)
        #expect(parts.map(\.count) == [SlicedBody.sliceSize, SlicedBody.sliceSize, SlicedBody.sliceSize, 12_345])
        #expect(Array(parts.joined()) == body)
    }

    @Test("a body of exactly one slice is one slice; an empty body is none; each iteration starts over (a retried request)")
    func edges() async {
        let one = [UInt8](repeating: 0x5a, count: SlicedBody.sliceSize)
        #expect(await slices(one).map(\.count) == [SlicedBody.sliceSize])
        #expect(await slices([]).isEmpty)
        let body = SlicedBody([1, 2, 3])
        for _ in 0..<2 {
            var seen: [UInt8] = []
            for await buffer in body { seen += Array(buffer.readableBytesView) }
            #expect(seen == [1, 2, 3])
        }
    }
}
