import CofferFormat
@testable import CofferInterop
import Crypto
import _CryptoExtras
import Foundation
import Testing

/// .xbcrypt chunks built here (the format of ../shared/vectors/xbcrypt/README.md), with a bitwise
/// CRC-32 of their own, to test the two readers: positioned reads from a regular file, and one
/// reader from a pipe.
enum XbcryptBuilder {
    static let key = SymmetricKey(data: Array("xbcrypt-reader-test-key-32-bytes".utf8))

    static func littleEndian(_ value: Int, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static func bitwiseCRC32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    /// One chunk of version 1, 2 or 3 (v3: the IV is the first counter block and a SHA-256 follows
    /// the plaintext; v1/v2: the counter starts at zero).
    static func chunk(_ plaintext: [UInt8], version: UInt8 = 3, claimedPayload: Int? = nil) throws -> [UInt8] {
        let iv = (0..<16).map { UInt8(truncatingIfNeeded: $0 &* 17 &+ 3) }
        let body = version == 3 ? plaintext + Array(SHA256.hash(data: plaintext)) : plaintext
        let counter = version == 3 ? iv : [UInt8](repeating: 0, count: 16)
        let payload = Array(try AES._CTR.encrypt(body, using: key, nonce: AES._CTR.Nonce(nonceBytes: counter)))
        var out = Array("XBCRYP0".utf8) + [0x30 + version] + [UInt8](repeating: 0, count: 8)
        out += littleEndian(body.count, 8) + littleEndian(claimedPayload ?? payload.count, 8)
        out += littleEndian(Int(bitwiseCRC32(payload)), 4)
        if version != 1 { out += littleEndian(16, 8) + iv }
        return out + payload
    }

    static func plaintext(_ count: Int, seed: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ seed) } }

    enum Route: CaseIterable { case file, pipe }

    struct Outcome {
        var released: [UInt8]
        var error: Error?
        var summary: Xbcrypt.Summary?
        var largestReservation: Int
    }

    /// Decrypts `bytes` by `route`; records every chunk buffer size the reader asked for.
    static func decrypt(_ bytes: [UInt8], route: Route, threads: Int) throws -> Outcome {
        let sink = MemorySink()
        let largest = LockedTable<Int>()
        let reserving: (Int) -> Void = { size in largest.set(0, max(size, largest.take(0) ?? 0)) }
        var outcome = Outcome(released: [], largestReservation: 0)
        func run(_ source: ByteSource) {
            do {
                outcome.summary = try Xbcrypt.decrypt(from: source, to: sink, key: key, threads: threads, progress: nil,
                                                      reserving: reserving)
            } catch {
                outcome.error = error
            }
        }
        switch route {
        case .file:
            let path = NSTemporaryDirectory() + "xbcrypt-reader-\(UUID().uuidString)"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            run(source)
        case .pipe:
            let feeder = PipeFeeder(bytes)
            defer { feeder.finish() }
            run(feeder.source)
        }
        outcome.released = sink.bytes
        outcome.largestReservation = largest.take(0) ?? 0
        return outcome
    }
}

@Suite struct XbcryptReaders {
    typealias B = XbcryptBuilder

    @Test("every xbcrypt vector decrypts through a pipe as from a file", arguments: XbcryptVectors.rows)
    func vectorThroughPipe(_ row: XbcryptVectors.Row) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(XbcryptVectors.directory)/\(row.file)")))
        for threads in [1, 3] {
            let feeder = PipeFeeder(bytes)
            defer { feeder.finish() }
            let sink = MemorySink()
            let summary = try Xbcrypt.decrypt(from: feeder.source, to: sink, key: Xbcrypt.key(Array(row.key.utf8), source: "test"),
                                              threads: threads)
            #expect(hex(SHA256.hash(data: sink.bytes)) == row.plaintextSHA256)
            #expect(summary.plaintextBytes == UInt64(row.plaintextLength))
        }
    }

    @Test("chunks of v1, v2 and v3, one larger than the first buffer: the same plaintext and summary by both readers")
    func mixedAndLarge() throws {
        let parts = [B.plaintext(65536, seed: 1), B.plaintext((1 << 20) + 5, seed: 2), B.plaintext(0, seed: 3),
                     B.plaintext(1000, seed: 4), B.plaintext(70000, seed: 5)]
        let versions: [UInt8] = [3, 3, 3, 2, 1]
        var file: [UInt8] = []
        for (part, version) in zip(parts, versions) { file += try B.chunk(part, version: version) }
        for route in B.Route.allCases {
            for threads in [1, 2, 3] {
                let outcome = try B.decrypt(file, route: route, threads: threads)
                #expect(outcome.error == nil, "\(route), threads \(threads): \(String(describing: outcome.error))")
                #expect(outcome.released == parts.flatMap { $0 }, "\(route), threads \(threads)")
                #expect(outcome.summary?.chunks == 5)
                #expect(outcome.summary?.oldestVersion == .v1)
                #expect(outcome.summary?.everyChunkHashed == false)
                // The 1 MiB chunk needed a larger buffer, and no more than twice its size.
                #expect(outcome.largestReservation >= (1 << 20) + 5 + 32 + 60)
                #expect(outcome.largestReservation <= 2 * ((1 << 20) + 5 + 32 + 60))
            }
        }
    }

    @Test("a chunk's claimed size sets nothing aside beyond what the file holds (file) or what arrived (pipe)")
    func claimedSizeBound() throws {
        let good = try B.chunk(B.plaintext(5000, seed: 7))
        // A header that claims 256 MiB (the most accepted), followed by 3 MiB of bytes only.
        let liar = try B.chunk(B.plaintext(100, seed: 8), claimedPayload: Xbcrypt.maxChunkSize)
        let file = good + liar + [UInt8](repeating: 0x5A, count: 3 << 20)
        for threads in [1, 3] {
            let fromFile = try B.decrypt(file, route: .file, threads: threads)
            if case .truncated? = fromFile.error as? CofferError {} else { Issue.record("file: \(String(describing: fromFile.error))") }
            #expect(fromFile.released == B.plaintext(5000, seed: 7), "the chunk before is released")
            #expect(fromFile.largestReservation == 0, "file: asked for \(fromFile.largestReservation) bytes")
            let fromPipe = try B.decrypt(file, route: .pipe, threads: threads)
            if case .truncated? = fromPipe.error as? CofferError {} else { Issue.record("pipe: \(String(describing: fromPipe.error))") }
            #expect(fromPipe.released == B.plaintext(5000, seed: 7))
            #expect(fromPipe.largestReservation <= 8 << 20, "pipe: asked for \(fromPipe.largestReservation) bytes")
        }
        // More than the limit is refused outright, by both readers.
        let tooLarge = try B.chunk(B.plaintext(10, seed: 9), claimedPayload: Xbcrypt.maxChunkSize + 1)
        for route in B.Route.allCases {
            let outcome = try B.decrypt(tooLarge, route: route, threads: 2)
            if case .malformedHeader? = outcome.error as? CofferError {} else { Issue.record("\(route): \(String(describing: outcome.error))") }
            #expect(outcome.largestReservation == 0)
        }
    }

    @Test("truncated files: cut inside a header, inside the IV length, inside a payload; earlier chunks are released")
    func truncated() throws {
        let first = B.plaintext(3000, seed: 11)
        let second = B.plaintext(4000, seed: 12)
        let head = try B.chunk(first) + B.chunk(second)
        let last = try B.chunk(B.plaintext(5000, seed: 13))
        for keep in [1, 20, 36, 40, 44, 59, 60, 61, last.count - 1] {
            let file = head + last.prefix(keep)
            for route in B.Route.allCases {
                for threads in [1, 3] {
                    let outcome = try B.decrypt(file, route: route, threads: threads)
                    if case .truncated? = outcome.error as? CofferError {} else {
                        Issue.record("\(keep) bytes of the last chunk, \(route), threads \(threads): \(String(describing: outcome.error))")
                    }
                    #expect(outcome.released == first + second, "\(keep) bytes, \(route), threads \(threads)")
                }
            }
        }
    }

    @Test("a damaged payload fails its CRC, after the chunks before it are released")
    func damage() throws {
        let parts = (0..<6).map { B.plaintext(20000, seed: $0) }
        var file = try parts.flatMap { try B.chunk($0) }
        let chunkLength = file.count / 6
        file[4 * chunkLength + 100] ^= 0x01
        for route in B.Route.allCases {
            for threads in [1, 3] {
                let outcome = try B.decrypt(file, route: route, threads: threads)
                #expect((outcome.error as? CofferError)?.category == .integrity, "\(route): \(String(describing: outcome.error))")
                #expect(outcome.released == parts.prefix(4).flatMap { $0 })
            }
        }
    }
}
