import CofferFormat
import Crypto
import Foundation

/// age's payload (AGE-FORMAT.md §1.6): a 16-byte nonce, then STREAM chunks of 64 KiB plaintext,
/// ChaCha20-Poly1305 under HKDF-SHA-256(file key, salt: nonce, info: "payload"), chunk nonce =
/// 11-byte big-endian counter || final flag. The nonce layout is Coffer's own, so writing uses
/// Coffer's parallel ``StreamEngine`` with 64 KiB ChaCha20-Poly1305 chunks.
///
/// Reading follows the reference reader's rules exactly, because what is released before an error
/// is part of the format's test vectors: a full-size chunk is opened as a non-final chunk first and,
/// if that fails, as the final chunk; a short chunk must be final; a chunk's plaintext is released
/// once it authenticates, in order; then the error (a missing final chunk, data after the final
/// chunk). Chunks are opened in parallel; only their release is in order.
public enum AgeStream {
    public static let chunkSize = 64 * 1024
    static let tagSize = 16
    static let sealedChunkSize = chunkSize + tagSize

    public static func payloadKey(fileKey: [UInt8], nonce: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: fileKey), salt: nonce,
                               info: Array("payload".utf8), outputByteCount: 32)
    }

    /// Seals everything `source` yields; returns the plaintext byte count.
    public static func seal(from source: ByteSource, to sink: ByteSink, payloadKey: SymmetricKey,
                            engine: StreamEngine) throws -> UInt64 {
        try engine.seal(from: source, to: sink, key: payloadKey, cipher: .chacha20poly1305, chunkSize: chunkSize).plaintextLength
    }

    static func open(_ sealed: UnsafeRawBufferPointer, key: SymmetricKey, counter: UInt64, isFinal: Bool) -> Data? {
        // Shorter than a tag: nothing to authenticate (age's reader fails the same way).
        guard sealed.count >= tagSize else { return nil }
        return PayloadCipher.chacha20poly1305.open(sealed, key: key, counter: counter, isFinal: isFinal)
    }

    /// What a reader knew about a chunk when it handed it on.
    private enum Position {
        case short             // shorter than a full chunk: the input ended inside it
        case fullThenEnd       // full size, and the input ends right after it
        case fullThenMore      // full size, and more input follows
    }

    /// Opens the payload that follows the nonce in `input`; writes each chunk's plaintext to `sink`
    /// once it authenticated; returns the plaintext byte count.
    public static func open(from input: AgeInput, to sink: ByteSink, payloadKey key: SymmetricKey, threads: Int,
                            progress: (@Sendable (UInt64) -> Void)? = nil) throws -> UInt64 {
        var counter: UInt64 = 0
        var carry: UInt8?
        var finished = false
        // Errors that come after a chunk's plaintext is released, by chunk: set by the workers,
        // read by the consumer once that chunk was written.
        let afterRelease = LockedErrors()
        let pipeline = OrderedPipeline(
            slotCount: threads <= 1 ? 1 : 2 * threads + 2, workers: max(1, threads), inputCapacity: sealedChunkSize + 1,
            produce: { slot in
                if finished { return .end }
                var n = 0
                if let byte = carry {
                    slot.input[0] = byte
                    n = 1
                    carry = nil
                }
                // One byte more than a chunk: whether more follows a full chunk is known from the same read.
                n += try input.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[n..<(sealedChunkSize + 1)]))
                var position = Position.short
                if n > sealedChunkSize {
                    carry = slot.input[sealedChunkSize]
                    n = sealedChunkSize
                    position = .fullThenMore
                } else if n == sealedChunkSize {
                    position = .fullThenEnd
                }
                if n == 0 {
                    throw CofferError.truncated(counter == 0 ? "the payload has no chunk" : "the payload ends without its final chunk")
                }
                if position == .short && n == tagSize && counter > 0 {
                    throw CofferError.chunkAuthenticationFailed(chunk: counter, reason: "an empty final chunk may only follow an empty payload")
                }
                slot.counter = counter
                slot.inputCount = n
                // isFinal tells the pipeline to stop reading after this chunk (the input ended).
                slot.isFinal = position != .fullThenMore
                slot.output = []
                counter += 1
                finished = slot.isFinal
                return .chunk
            },
            transform: { slot in
                let sealed = slot.filledInput
                let k = slot.counter
                if sealed.count < sealedChunkSize {
                    guard let plain = open(sealed, key: key, counter: k, isFinal: true) else {
                        throw CofferError.chunkAuthenticationFailed(
                            chunk: k, reason: "the final chunk does not authenticate (altered, truncated, or not made with this key)")
                    }
                    slot.output = [plain]
                    return
                }
                if let plain = open(sealed, key: key, counter: k, isFinal: false) {
                    slot.output = [plain]
                    if slot.isFinal {
                        afterRelease.set(k, CofferError.truncated("the payload ends after chunk \(k), which is not the final chunk"))
                    }
                    return
                }
                guard let plain = open(sealed, key: key, counter: k, isFinal: true) else {
                    throw CofferError.chunkAuthenticationFailed(
                        chunk: k, reason: "altered, reordered, duplicated, or not made with this key")
                }
                slot.output = [plain]
                if !slot.isFinal { afterRelease.set(k, CofferError.trailingData(afterChunk: k)) }
            })
        var total: UInt64 = 0
        try pipeline.run(waitForReader: input.isRegularFile) { slot in
            for part in slot.output {
                try part.withUnsafeBytes { try sink.write($0) }
                total += UInt64(part.count)
            }
            progress?(total)
            if let error = afterRelease.take(slot.counter) { throw error }
        }
        return total
    }
}

/// Errors keyed by chunk number, shared between the pipeline's workers and its consumer.
final class LockedErrors: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [UInt64: Error] = [:]

    func set(_ chunk: UInt64, _ error: Error) { lock.withLock { errors[chunk] = error } }
    func take(_ chunk: UInt64) -> Error? { lock.withLock { errors.removeValue(forKey: chunk) } }
}
