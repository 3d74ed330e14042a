import CofferFormat
import CofferKeys
@testable import CofferInterop
import Crypto
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Feeds bytes to a reader through a pipe, from another thread (the sequential readers' path).
final class PipeFeeder: @unchecked Sendable {
    let source: ByteSource
    private let done = DispatchSemaphore(value: 0)

    init(_ bytes: [UInt8]) {
        signal(SIGPIPE, SIG_IGN)  // a reader that stops early closes its end: the writer then gets EPIPE
        var fds: [Int32] = [0, 0]
        precondition(closeOnExecPipe(&fds, O_CLOEXEC) == 0)  // no child of another test keeps an end
        let writeEnd = fds[1]
        source = ByteSource(fd: fds[0], path: "pipe")
        let done = self.done
        Thread.detachNewThread {
            bytes.withUnsafeBytes { buffer in
                var at = 0
                while at < buffer.count {
                    let n = write(writeEnd, buffer.baseAddress! + at, buffer.count - at)
                    if n <= 0 { break }
                    at += n
                }
            }
            close(writeEnd)
            done.signal()
        }
    }

    /// Reads what is left to the end, waits for the writer, then closes the reading end. (A reader
    /// thread of a pipeline that stopped early may still be in a `read` of this descriptor: it gets
    /// the end of the input, not a descriptor number that another test reuses.)
    func finish() {
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        while scratch.withUnsafeMutableBytes({ read(source.fd, $0.baseAddress!, $0.count) }) > 0 {}
        done.wait()
        source.close()
    }
}

/// The age payload reader and writer on their own: batches of chunks read by the workers from a
/// regular file, or by one reader from a pipe, must release exactly what age's reference reader
/// releases (everything up to the first chunk that fails, then the error).
@Suite struct AgeStreamBatches {
    static let chunk = AgeStream.chunkSize
    static let sealed = AgeStream.chunkSize + 16
    static let key = SymmetricKey(size: .bits256)

    /// One sealed chunk, built here with swift-crypto directly (not with AgeStream's nonce code).
    static func sealChunk(_ plaintext: ArraySlice<UInt8>, counter: UInt64, final: Bool) throws -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { nonce[10 - i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        nonce[11] = final ? 1 : 0
        let box = try ChaChaPoly.seal(Array(plaintext), using: key, nonce: ChaChaPoly.Nonce(data: nonce))
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// A payload of `plaintext` split into 64 KiB chunks; `finalAt` marks which chunk carries the final flag.
    static func payload(_ plaintext: [UInt8], finalAt: Int? = nil) throws -> [UInt8] {
        let count = max(1, (plaintext.count + chunk - 1) / chunk)
        var out: [UInt8] = []
        for k in 0..<count {
            let part = plaintext[(k * chunk)..<min(plaintext.count, (k + 1) * chunk)]
            out += try sealChunk(part, counter: UInt64(k), final: k == (finalAt ?? count - 1))
        }
        return out
    }

    static func plaintext(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ $0 >> 16) } }

    enum Route: CaseIterable { case file, pipe }

    /// Opens a bare payload (what follows the nonce) by `route`; returns what was released and the error.
    static func open(_ payload: [UInt8], route: Route, threads: Int) throws -> (released: [UInt8], error: Error?) {
        let sink = MemorySink()
        switch route {
        case .file:
            let path = try AgeVectors.temporaryFile(payload)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            #expect(source.positionedReadStart != nil)
            do { _ = try AgeStream.open(from: source, to: sink, payloadKey: key, threads: threads) } catch { return (sink.bytes, error) }
        case .pipe:
            let feeder = PipeFeeder(payload)
            defer { feeder.finish() }
            #expect(feeder.source.positionedReadStart == nil)
            do { _ = try AgeStream.open(from: feeder.source, to: sink, payloadKey: key, threads: threads) } catch { return (sink.bytes, error) }
        }
        return (sink.bytes, nil)
    }

    /// Seals `plaintext` by `route` (from a regular file: batches read by the workers; from a pipe: Coffer's engine).
    static func seal(_ plaintext: [UInt8], route: Route, threads: Int) throws -> [UInt8] {
        let sink = MemorySink()
        let total: UInt64
        switch route {
        case .file:
            let path = try AgeVectors.temporaryFile(plaintext)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            total = try AgeStream.seal(from: source, to: sink, payloadKey: key, engine: StreamEngine(threads: threads))
        case .pipe:
            let feeder = PipeFeeder(plaintext)
            defer { feeder.finish() }
            total = try AgeStream.seal(from: feeder.source, to: sink, payloadKey: key, engine: StreamEngine(threads: threads))
        }
        #expect(total == UInt64(plaintext.count))
        return sink.bytes
    }

    static let batch = AgeStream.batchChunks
    static let sizes = [0, 1, chunk, 2 * chunk - 1, batch * chunk - 1, batch * chunk, batch * chunk + 1,
                        2 * batch * chunk, 2 * batch * chunk + 3 * chunk + 5]

    @Test("sealing from a file (batched) gives the bytes of an independent sealer, and of the pipe path", arguments: sizes)
    func sealMatches(_ size: Int) throws {
        let plaintext = Self.plaintext(size)
        let expected = try Self.payload(plaintext)
        for threads in [1, 2, 3] {
            #expect(try Self.seal(plaintext, route: .file, threads: threads) == expected, "file, threads \(threads)")
        }
        #expect(try Self.seal(plaintext, route: .pipe, threads: 2) == expected, "pipe")
    }

    @Test("opening from a file and from a pipe releases the plaintext, at batch boundaries too", arguments: sizes)
    func openRoundTrip(_ size: Int) throws {
        let plaintext = Self.plaintext(size)
        let payload = try Self.payload(plaintext)
        for route in Route.allCases {
            for threads in [1, 2, 3] {
                let (released, error) = try Self.open(payload, route: route, threads: threads)
                #expect(error == nil, "\(route), threads \(threads): \(String(describing: error))")
                #expect(released == plaintext, "\(route), threads \(threads)")
            }
        }
    }

    /// Checks that `payload` releases exactly `releasedChunks` chunks of `plaintext` and then fails
    /// with `failure` (an age vector failure class), by every route and thread count.
    func expectFailure(_ payload: [UInt8], plaintext: [UInt8], releasedChunks: Int, failure: String,
                       _ what: String) throws {
        for route in Route.allCases {
            for threads in [1, 2, 3] {
                let (released, error) = try Self.open(payload, route: route, threads: threads)
                #expect(error.map(AgeVectors.failureClass) == failure, "\(what), \(route), threads \(threads): \(String(describing: error))")
                #expect(released == Array(plaintext.prefix(releasedChunks * Self.chunk)),
                        "\(what), \(route), threads \(threads): released \(released.count) bytes")
            }
        }
    }

    @Test("a payload cut at a chunk boundary: the chunks before it are released, then 'not the final chunk'")
    func cutAtChunkBoundary() throws {
        let plaintext = Self.plaintext(40 * Self.chunk)
        let payload = try Self.payload(plaintext)
        for chunks in [1, 10, Self.batch, Self.batch + 1, 2 * Self.batch] {
            let cut = Array(payload.prefix(chunks * Self.sealed))
            try expectFailure(cut, plaintext: plaintext, releasedChunks: chunks, failure: "payload failure", "cut after \(chunks) chunks")
            let (_, error) = try Self.open(cut, route: .file, threads: 2)
            #expect("\(error.map { "\($0)" } ?? "")".contains("not the final chunk"))
        }
    }

    @Test("a payload cut inside a chunk, or to less than a tag: the chunks before it, then a payload failure")
    func cutInsideChunk() throws {
        let plaintext = Self.plaintext(20 * Self.chunk)
        let payload = try Self.payload(plaintext)
        for (chunks, extra) in [(0, 100), (3, 100), (Self.batch - 1, Self.sealed - 1), (Self.batch, 15), (Self.batch, 1), (17, 16)] {
            let cut = Array(payload.prefix(chunks * Self.sealed + extra))
            try expectFailure(cut, plaintext: plaintext, releasedChunks: chunks, failure: "payload failure",
                              "cut \(extra) bytes into chunk \(chunks)")
        }
    }

    @Test("an empty payload is one empty final chunk; no chunk at all, or an empty final chunk after full ones, fails")
    func emptyPayloads() throws {
        let empty = try Self.payload([])
        #expect(empty.count == 16)
        for route in Route.allCases {
            for threads in [1, 3] {
                let (released, error) = try Self.open(empty, route: route, threads: threads)
                #expect(error == nil, "\(route), threads \(threads): \(String(describing: error))")
                #expect(released.isEmpty)
            }
        }
        try expectFailure([], plaintext: [], releasedChunks: 0, failure: "payload failure", "no chunk after the nonce")
        for full in [1, Self.batch] {
            let plaintext = Self.plaintext(full * Self.chunk)
            let payload = try Self.payload(plaintext, finalAt: -1) + Self.sealChunk([], counter: UInt64(full), final: true)
            try expectFailure(payload, plaintext: plaintext, releasedChunks: full, failure: "payload failure",
                              "an empty final chunk after \(full) full ones")
        }
    }

    @Test("the final flag: a final chunk followed by more data, and a last chunk without it")
    func finalFlag() throws {
        let plaintext = Self.plaintext(20 * Self.chunk)
        // Chunk 5 (inside the first batch) and chunk 15 (the batch's last) carry the final flag, and more follows.
        for finalAt in [5, Self.batch - 1, Self.batch] {
            let payload = try Self.payload(plaintext, finalAt: finalAt)
            try expectFailure(payload, plaintext: plaintext, releasedChunks: finalAt + 1, failure: "payload failure",
                              "final flag on chunk \(finalAt) of 20")
            let (_, error) = try Self.open(payload, route: .file, threads: 3)
            #expect(error as? CofferError == .trailingData(afterChunk: UInt64(finalAt)))
        }
        // No chunk carries it: everything is released, then the payload is found to be cut.
        let unfinished = try Self.payload(plaintext, finalAt: -1)
        try expectFailure(unfinished, plaintext: plaintext, releasedChunks: 20, failure: "payload failure", "no final chunk")
    }

    @Test("a damaged chunk in a later batch: every chunk before it is released, in every batch before it")
    func damageInLaterBatch() throws {
        let plaintext = Self.plaintext(3 * Self.batch * Self.chunk)
        var payload = try Self.payload(plaintext)
        let bad = 2 * Self.batch + 3
        payload[bad * Self.sealed + 7] ^= 0x80
        try expectFailure(payload, plaintext: plaintext, releasedChunks: bad, failure: "payload failure", "chunk \(bad) altered")
    }

    @Test("every binary age vector gives the same result through a pipe as from a file", arguments: AgeVectors.all.vectors.filter { !$0.armored })
    func vectorThroughPipe(_ vector: AgeVectors.Vector) throws {
        let identities = try AgeVectors.identities(of: vector)
        for threads in [1, 3] {
            let feeder = PipeFeeder(vector.file)
            defer { feeder.finish() }
            let sink = MemorySink()
            var failure: Error?
            do {
                _ = try AgeFile.decrypt(from: feeder.source, kind: .binary, identities: identities, to: sink, threads: threads)
            } catch {
                failure = error
            }
            let got = failure.map(AgeVectors.failureClass) ?? "success"
            #expect(got == vector.expect, "threads \(threads): \(failure.map { "\($0)" } ?? "no error")")
            if let payload = vector.payload {
                #expect(hex(SHA256.hash(data: sink.bytes)) == payload, "threads \(threads): released \(sink.bytes.count) bytes")
            } else if vector.expect != "success" {
                #expect(sink.bytes.isEmpty, "threads \(threads): released \(sink.bytes.count) bytes")
            }
        }
    }
}

/// pipe2(2) is behind _GNU_SOURCE in Glibc's headers, so Swift does not import it.
@_silgen_name("pipe2")
func closeOnExecPipe(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
