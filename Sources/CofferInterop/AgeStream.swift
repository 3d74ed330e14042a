import CofferFormat
import Crypto
import Foundation

/// age's payload (AGE-FORMAT.md §1.6): a 16-byte nonce, then STREAM chunks of 64 KiB plaintext,
/// ChaCha20-Poly1305 under HKDF-SHA-256(file key, salt: nonce, info: "payload"), chunk nonce =
/// 11-byte big-endian counter || final flag.
///
/// Reading follows the reference reader's rules exactly, because what is released before an error
/// is part of the format's test vectors: a full-size chunk is opened as a non-final chunk first and,
/// if that fails, as the final chunk; a short chunk must be final; a chunk's plaintext is released
/// once it authenticates, in order; then the error (a missing final chunk, data after the final
/// chunk). Chunks are opened in parallel; only their release is in order.
///
/// Throughput (docs/PERFORMANCE.md, "age and xbcrypt throughput"): 64 KiB chunks are too small to
/// hand between threads one by one, so a worker takes a batch of ``batchChunks`` chunks at a time.
/// From a regular file each worker reads its own batch with positioned reads (chunk k of an age
/// payload is at a known offset), as Coffer's own engine does; from a pipe or an armored file one
/// reader fills the batches. Each sealed chunk is read into its slot right after a 12-byte gap that
/// receives its nonce, so that swift-crypto's `SealedBox(combined:)` takes it with one copy.
public enum AgeStream {
    public static let chunkSize = 64 * 1024
    static let tagSize = 16
    static let sealedChunkSize = chunkSize + tagSize
    static let nonceSize = 12
    /// Chunks handed to a worker at once: 1 MiB of plaintext, Coffer's own chunk size.
    static let batchChunks = 16
    /// Where chunk i of a batch sits in a slot being opened: its nonce at i · slotStride, the sealed chunk after it.
    static let slotStride = nonceSize + sealedChunkSize

    public static func payloadKey(fileKey: [UInt8], nonce: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: fileKey), salt: nonce,
                               info: Array("payload".utf8), outputByteCount: 32)
    }

    /// Writes the 12-byte STREAM nonce of chunk `counter` at `p`: 11-byte big-endian counter, then
    /// 0x01 for the final chunk, else 0x00.
    @inline(__always)
    static func writeNonce(_ p: UnsafeMutableRawPointer, counter: UInt64, isFinal: Bool) {
        p.storeBytes(of: 0, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 2, as: UInt8.self)
        var c = counter
        for i in stride(from: 10, through: 3, by: -1) {
            p.storeBytes(of: UInt8(truncatingIfNeeded: c), toByteOffset: i, as: UInt8.self)
            c >>= 8
        }
        p.storeBytes(of: isFinal ? 1 : 0, toByteOffset: 11, as: UInt8.self)
    }

    // MARK: Writing

    /// Seals everything `source` yields; returns the plaintext byte count.
    public static func seal(from source: ByteSource, to sink: ByteSink, payloadKey: SymmetricKey,
                            engine: StreamEngine) throws -> UInt64 {
        guard let (size, offset) = source.positionedReadStart else {
            // A pipe: Coffer's engine reads it sequentially (the nonce layout is the same).
            return try engine.seal(from: source, to: sink, key: payloadKey, cipher: .chacha20poly1305,
                                   chunkSize: chunkSize).plaintextLength
        }
        let length = size - min(size, offset)
        let chunk = UInt64(chunkSize)
        let chunkCount = max(1, (length + chunk - 1) / chunk)
        let batchCount = (chunkCount + UInt64(batchChunks) - 1) / UInt64(batchChunks)
        let batchBytes = UInt64(batchChunks) * chunk
        var batch: UInt64 = 0
        let pipeline = OrderedPipeline(
            slotCount: engine.threads <= 1 || batchCount == 1 ? 1 : 2 * engine.threads + 2,
            workers: engine.threads, inputCapacity: batchChunks * chunkSize,
            produce: { slot in
                guard batch < batchCount else { return .end }
                slot.counter = batch * UInt64(batchChunks)  // the batch's first chunk
                slot.inputCount = Int(min(batchBytes, length - batch * batchBytes))
                slot.isFinal = batch == batchCount - 1
                batch += 1
                return .chunk
            },
            transform: { slot in
                let start = slot.counter * chunk
                let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<slot.inputCount]),
                                          at: offset + start)
                guard got == slot.inputCount else {
                    throw CofferError.readFailed(path: source.path, reason: "the file shrank while being read")
                }
                slot.output = try sealBatch(slot, key: payloadKey)
            })
        var total: UInt64 = 0
        try pipeline.run(waitForReader: true) { slot in
            for part in slot.output { try part.withUnsafeBytes { try sink.write($0) } }
            total += UInt64(slot.inputCount)
            engine.progress?(total)
        }
        // The size was taken at the start: a file still being written would be cut silently.
        var probe: UInt8 = 0
        let more = try withUnsafeMutableBytes(of: &probe) { try source.read(into: $0, at: offset + length) }
        if more > 0 { throw CofferError.readFailed(path: source.path, reason: "the file grew while being encrypted") }
        return total
    }

    /// Seals the plaintext chunks of a batch (the slot's input, from chunk `slot.counter` on; the
    /// last one of the final batch is the final chunk, and an empty payload is one empty final
    /// chunk). Returns each chunk's ciphertext ‖ tag, as swift-crypto made it.
    static func sealBatch(_ slot: ChunkSlot, key: SymmetricKey) throws -> [Data] {
        let n = max(1, (slot.inputCount + chunkSize - 1) / chunkSize)
        var parts: [Data] = []
        parts.reserveCapacity(n)
        var nonce: (UInt32, UInt32, UInt32) = (0, 0, 0)  // 12 bytes
        for i in 0..<n {
            let lo = i * chunkSize
            let hi = min(lo + chunkSize, slot.inputCount)
            let box = try withUnsafeMutableBytes(of: &nonce) { nonceBytes in
                writeNonce(nonceBytes.baseAddress!, counter: slot.counter + UInt64(i), isFinal: slot.isFinal && i == n - 1)
                return try ChaChaPoly.seal(UnsafeRawBufferPointer(rebasing: slot.input[lo..<hi]), using: key,
                                           nonce: ChaChaPoly.Nonce(data: UnsafeRawBufferPointer(nonceBytes)))
            }
            // combined = nonce ‖ ciphertext ‖ tag; the file holds ciphertext ‖ tag (a slice: no copy).
            parts.append(box.combined.dropFirst(nonceSize))
        }
        return parts
    }

    // MARK: Reading

    /// What a reader knew about a chunk when it handed it on.
    enum Position {
        case short             // shorter than a full chunk: the input ended inside it
        case fullThenEnd       // full size, and the input ends right after it
        case fullThenMore      // full size, and more input follows
    }

    /// Opens the payload that follows the nonce in `input`; writes each chunk's plaintext to `sink`
    /// once it authenticated; returns the plaintext byte count.
    public static func open(from input: AgeInput, to sink: ByteSink, payloadKey key: SymmetricKey, threads: Int,
                            progress: (@Sendable (UInt64) -> Void)? = nil) throws -> UInt64 {
        let threads = max(1, threads)
        // Errors that come after a batch's authenticated plaintext is released, keyed by the
        // batch's first chunk: set by the workers, raised by the consumer once that batch was written.
        let afterRelease = LockedErrors()
        let pipeline: OrderedPipeline
        let waitForReader: Bool
        if let source = input as? ByteSource, let (size, payloadStart) = source.positionedReadStart {
            pipeline = try positionedPipeline(source: source, payloadStart: payloadStart, length: size - min(size, payloadStart),
                                              key: key, threads: threads, errors: afterRelease)
            waitForReader = true
        } else {
            pipeline = sequentialPipeline(input: input, key: key, threads: threads, errors: afterRelease)
            waitForReader = input.isRegularFile
        }
        var total: UInt64 = 0
        try pipeline.run(waitForReader: waitForReader) { slot in
            for part in slot.output {
                try part.withUnsafeBytes { try sink.write($0) }
                total += UInt64(part.count)
            }
            progress?(total)
            if let error = afterRelease.take(slot.counter) { throw error }
        }
        return total
    }

    /// Chunk k of a regular file's payload is at k · (64 KiB + 16): each worker reads its own batch.
    static func positionedPipeline(source: ByteSource, payloadStart: UInt64, length: UInt64, key: SymmetricKey,
                                   threads: Int, errors: LockedErrors) throws -> OrderedPipeline {
        guard length > 0 else { throw CofferError.truncated("the payload has no chunk") }
        let sealed = UInt64(sealedChunkSize)
        let chunkCount = (length + sealed - 1) / sealed
        let batchCount = (chunkCount + UInt64(batchChunks) - 1) / UInt64(batchChunks)
        var batch: UInt64 = 0
        return OrderedPipeline(
            slotCount: threads <= 1 || batchCount == 1 ? 1 : 2 * threads + 2, workers: threads,
            inputCapacity: batchChunks * slotStride,
            produce: { slot in
                guard batch < batchCount else { return .end }
                let first = batch * UInt64(batchChunks)
                slot.counter = first
                // Sealed bytes in the batch: every chunk is full but the file's last one.
                slot.inputCount = Int(min(length, (first + UInt64(batchChunks)) * sealed) - first * sealed)
                slot.isFinal = batch == batchCount - 1
                batch += 1
                return .chunk
            },
            transform: { slot in
                let count = chunksIn(slot)
                for i in 0..<count {
                    let size = sealedSize(ofChunk: i, count: count, in: slot)
                    let base = i * slotStride + nonceSize
                    let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[base..<(base + size)]),
                                              at: payloadStart + (slot.counter + UInt64(i)) * sealed)
                    guard got == size else {
                        throw CofferError.readFailed(path: source.path, reason: "the file shrank while being read")
                    }
                }
                openBatch(slot, key: key, errors: errors)
            })
    }

    /// One reader fills the batches, looking one byte past each full chunk to know whether more follows.
    static func sequentialPipeline(input: AgeInput, key: SymmetricKey, threads: Int,
                                   errors: LockedErrors) -> OrderedPipeline {
        var counter: UInt64 = 0
        var carry: UInt8?
        var finished = false
        let sealed = sealedChunkSize
        return OrderedPipeline(
            // One byte more than the batch: the look-ahead byte after its last chunk.
            slotCount: threads <= 1 ? 1 : 2 * threads + 2, workers: threads, inputCapacity: batchChunks * slotStride + 1,
            produce: { slot in
                if finished { return .end }
                var count = 0
                var bytes = 0
                var isFinal = false
                while count < batchChunks && !isFinal {
                    let base = count * slotStride + nonceSize
                    var n = 0
                    if let byte = carry {
                        slot.input[base] = byte
                        n = 1
                        carry = nil
                    }
                    // One byte more than a chunk: whether more follows a full chunk is known from the
                    // same read. That byte lands in the next chunk's nonce gap and is moved on.
                    n += try input.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[(base + n)..<(base + sealed + 1)]))
                    if n == 0 {
                        // Only possible before the first chunk: a full chunk is final when nothing follows it.
                        throw CofferError.truncated(counter == 0 ? "the payload has no chunk" : "the payload ends without its final chunk")
                    }
                    if n > sealed {
                        carry = slot.input[base + sealed]
                        n = sealed
                    } else {
                        isFinal = true
                    }
                    count += 1
                    bytes += n
                }
                slot.counter = counter
                slot.inputCount = bytes
                // isFinal tells the pipeline to stop reading after this batch (the input ended).
                slot.isFinal = isFinal
                counter += UInt64(count)
                finished = isFinal
                return .chunk
            },
            transform: { slot in openBatch(slot, key: key, errors: errors) })
    }

    /// The number of chunks in a batch: every one is full but the input's last one.
    @inline(__always)
    static func chunksIn(_ slot: ChunkSlot) -> Int { (slot.inputCount + sealedChunkSize - 1) / sealedChunkSize }

    @inline(__always)
    static func sealedSize(ofChunk i: Int, count: Int, in slot: ChunkSlot) -> Int {
        i < count - 1 ? sealedChunkSize : slot.inputCount - (count - 1) * sealedChunkSize
    }

    /// Opens the chunks of a batch (chunk i's sealed bytes at i · slotStride + 12); keeps the plaintext
    /// of every chunk before the first failure, and records the failure, to be raised once they are written.
    static func openBatch(_ slot: ChunkSlot, key: SymmetricKey, errors: LockedErrors) {
        let count = chunksIn(slot)
        var parts: [Data] = []
        parts.reserveCapacity(count)
        for i in 0..<count {
            let size = sealedSize(ofChunk: i, count: count, in: slot)
            let position: Position = size < sealedChunkSize ? .short
                : (i == count - 1 && slot.isFinal ? .fullThenEnd : .fullThenMore)
            let chunk = UnsafeMutableRawBufferPointer(rebasing: slot.input[(i * slotStride)..<(i * slotStride + nonceSize + size)])
            do {
                let (plaintext, after) = try openChunk(chunk, counter: slot.counter + UInt64(i), position: position, key: key)
                parts.append(plaintext)
                if let after {
                    errors.set(slot.counter, after)
                    break
                }
            } catch {
                errors.set(slot.counter, error)
                break
            }
        }
        slot.output = parts
    }

    /// Opens one chunk laid out as a 12-byte gap for its nonce, then the sealed chunk. Returns its
    /// plaintext and the error that follows its release, if any; throws when it does not authenticate.
    static func openChunk(_ chunk: UnsafeMutableRawBufferPointer, counter k: UInt64, position: Position,
                          key: SymmetricKey) throws -> (Data, Error?) {
        let sealedCount = chunk.count - nonceSize
        if position == .short {
            if sealedCount == tagSize && k > 0 {
                throw CofferError.chunkAuthenticationFailed(chunk: k, reason: "an empty final chunk may only follow an empty payload")
            }
            guard let plaintext = open(chunk, counter: k, isFinal: true, key: key) else {
                throw CofferError.chunkAuthenticationFailed(
                    chunk: k, reason: "the final chunk does not authenticate (altered, truncated, or not made with this key)")
            }
            return (plaintext, nil)
        }
        if let plaintext = open(chunk, counter: k, isFinal: false, key: key) {
            return (plaintext, position == .fullThenEnd
                    ? CofferError.truncated("the payload ends after chunk \(k), which is not the final chunk") : nil)
        }
        guard let plaintext = open(chunk, counter: k, isFinal: true, key: key) else {
            throw CofferError.chunkAuthenticationFailed(chunk: k, reason: "altered, reordered, duplicated, or not made with this key")
        }
        return (plaintext, position == .fullThenMore ? CofferError.trailingData(afterChunk: k) : nil)
    }

    /// Writes the nonce into the chunk's gap and opens it; nil when it does not authenticate.
    static func open(_ chunk: UnsafeMutableRawBufferPointer, counter: UInt64, isFinal: Bool, key: SymmetricKey) -> Data? {
        // Shorter than a tag: nothing to authenticate (age's reader fails the same way).
        guard chunk.count >= nonceSize + tagSize else { return nil }
        writeNonce(chunk.baseAddress!, counter: counter, isFinal: isFinal)
        guard let box = try? ChaChaPoly.SealedBox(combined: UnsafeRawBufferPointer(chunk)) else { return nil }
        return try? ChaChaPoly.open(box, using: key)
    }
}

/// Values keyed by chunk number, handed between a pipeline's threads: the errors a worker found for
/// the consumer to raise in order, or the offset the reader found for a worker to read at.
final class LockedTable<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [UInt64: Value] = [:]

    func set(_ chunk: UInt64, _ value: Value) { lock.withLock { values[chunk] = value } }
    func take(_ chunk: UInt64) -> Value? { lock.withLock { values.removeValue(forKey: chunk) } }
}

typealias LockedErrors = LockedTable<Error>
