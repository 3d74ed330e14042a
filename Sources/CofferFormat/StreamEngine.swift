import Crypto
import Foundation

/// The parallel STREAM engine: seals or opens a payload chunk by chunk on `threads` threads,
/// writing output in order, with a fixed number of chunk buffers whatever the input size.
public struct StreamEngine: Sendable {
    public var threads: Int
    /// Called on the consuming thread after each chunk with the plaintext bytes done so far.
    public var progress: (@Sendable (UInt64) -> Void)?

    public init(threads: Int = StreamEngine.defaultThreads, progress: (@Sendable (UInt64) -> Void)? = nil) {
        self.threads = max(1, threads)
        self.progress = progress
    }

    public static var defaultThreads: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Chunks in flight: enough for every worker to have one while the reader fills the next and
    /// the writer drains the previous ones.
    func slotCount(chunkSize: Int, sizeHint: UInt64?) -> Int {
        if threads == 1 { return 1 }
        if let size = sizeHint, size <= UInt64(chunkSize) { return 1 }
        return 2 * threads + 2
    }

    // MARK: Encryption

    /// Seals everything `source` yields as the STREAM payload; returns the plaintext byte count.
    public func seal(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                     cipher: PayloadCipher, chunkSize: Int) throws -> UInt64 {
        let sizeHint = source.regularFileSize
        var counter: UInt64 = 0
        var carry: UInt8?
        var finished = false
        let pipeline = OrderedPipeline(
            slotCount: slotCount(chunkSize: chunkSize, sizeHint: sizeHint), workers: threads,
            inputCapacity: chunkSize, outputCapacity: chunkSize + Limits.tagSize,
            produce: { slot in
                if finished { return .end }
                var n = 0
                if let c = carry {
                    slot.input[0] = c
                    n = 1
                    carry = nil
                }
                n += try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[n..<chunkSize]))
                var isFinal = n < chunkSize
                if !isFinal {
                    // A full chunk is final only if the input ends right after it: look one byte ahead.
                    var next: UInt8 = 0
                    let got = try withUnsafeMutableBytes(of: &next) { try source.readFully(into: $0) }
                    if got == 0 { isFinal = true } else { carry = next }
                }
                slot.inputCount = n
                slot.counter = counter
                slot.isFinal = isFinal
                counter += 1
                finished = isFinal
                return .chunk
            },
            transform: { slot in
                try cipher.seal(slot.filledInput, into: slot.output, key: key, counter: slot.counter, isFinal: slot.isFinal)
                slot.outputCount = slot.inputCount + Limits.tagSize
            })
        var total: UInt64 = 0
        try pipeline.run(waitForReader: sizeHint != nil) { slot in
            try sink.write(slot.filledOutput)
            total += UInt64(slot.inputCount)
            progress?(total)
        }
        return total
    }

    // MARK: Decryption

    /// Opens `slot` (input = sealed chunk) into its output; on failure, names the likely cause.
    static func open(_ slot: ChunkSlot, cipher: PayloadCipher, key: SymmetricKey) throws {
        let sealed = slot.filledInput
        if let n = cipher.open(sealed, into: slot.output, key: key, counter: slot.counter, isFinal: slot.isFinal) {
            slot.outputCount = n
            return
        }
        // Authentication failed. Trying the other final-flag tells truncation and trailing
        // data apart from tampering; it costs nothing on the success path.
        let other = cipher.open(sealed, into: slot.output, key: key, counter: slot.counter, isFinal: !slot.isFinal)
        if other != nil {
            if slot.isFinal {
                throw CofferError.truncated("the file ends after chunk \(slot.counter), which is not the final chunk")
            }
            throw CofferError.trailingData(afterChunk: slot.counter)
        }
        throw CofferError.chunkAuthenticationFailed(
            chunk: slot.counter, reason: "altered, reordered, duplicated, truncated, or not made with this key")
    }

    /// Opens the STREAM payload read sequentially from `source`; writes only authenticated plaintext.
    public func open(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                     cipher: PayloadCipher, chunkSize: Int) throws -> UInt64 {
        let sealedSize = chunkSize + Limits.tagSize
        let sizeHint = source.regularFileSize
        var counter: UInt64 = 0
        var carry: UInt8?
        var finished = false
        let pipeline = OrderedPipeline(
            slotCount: slotCount(chunkSize: chunkSize, sizeHint: sizeHint.map { $0 - min($0, source.position) }),
            workers: threads, inputCapacity: sealedSize, outputCapacity: chunkSize,
            produce: { slot in
                if finished { return .end }
                var n = 0
                if let c = carry {
                    slot.input[0] = c
                    n = 1
                    carry = nil
                }
                n += try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[n..<sealedSize]))
                var isFinal = n < sealedSize
                if !isFinal {
                    var next: UInt8 = 0
                    let got = try withUnsafeMutableBytes(of: &next) { try source.readFully(into: $0) }
                    if got == 0 { isFinal = true } else { carry = next }
                }
                if n == 0 {
                    throw CofferError.truncated(counter == 0 ? "no payload after the header" : "missing final chunk")
                }
                if n < Limits.tagSize {
                    throw CofferError.truncated("chunk \(counter) is \(n) bytes, shorter than its 16-byte tag")
                }
                if n == Limits.tagSize && counter > 0 {
                    throw CofferError.chunkAuthenticationFailed(
                        chunk: counter, reason: "an empty final chunk may only follow an empty payload")
                }
                slot.inputCount = n
                slot.counter = counter
                slot.isFinal = isFinal
                counter += 1
                finished = isFinal
                return .chunk
            },
            transform: { slot in try Self.open(slot, cipher: cipher, key: key) })
        var total: UInt64 = 0
        try pipeline.run(waitForReader: sizeHint != nil) { slot in
            try sink.write(slot.filledOutput)
            total += UInt64(slot.outputCount)
            progress?(total)
        }
        return total
    }

    /// The layout of a payload whose sealed length is known (a regular file).
    public struct PayloadLayout: Sendable, Equatable {
        public let chunkSize: Int
        public let chunkCount: UInt64
        public let finalSealedSize: Int
        public let plaintextSize: UInt64

        /// Validates a sealed payload length (everything after the payload nonce).
        public init(sealedLength: UInt64, chunkSize: Int) throws {
            let sealed = UInt64(chunkSize + Limits.tagSize)
            self.chunkSize = chunkSize
            guard sealedLength > 0 else { throw CofferError.truncated("no payload after the header") }
            chunkCount = (sealedLength + sealed - 1) / sealed
            finalSealedSize = Int(sealedLength - (chunkCount - 1) * sealed)
            guard finalSealedSize >= Limits.tagSize else {
                throw CofferError.truncated(
                    "the payload length \(sealedLength) is impossible for \(chunkSize)-byte chunks (cut short or extended)")
            }
            guard !(finalSealedSize == Limits.tagSize && chunkCount > 1) else {
                throw CofferError.chunkAuthenticationFailed(
                    chunk: chunkCount - 1, reason: "an empty final chunk may only follow an empty payload")
            }
            plaintextSize = sealedLength - chunkCount * UInt64(Limits.tagSize)
        }
    }

    /// Decrypts plaintext bytes `offset ..< offset+length` (clamped to the end), reading only the
    /// chunks that hold them plus the final chunk, whose authentication proves the file's length.
    public func openRange(from source: ByteSource, payloadStart: UInt64, layout: PayloadLayout,
                          offset: UInt64, length: UInt64, to sink: ByteSink, key: SymmetricKey,
                          cipher: PayloadCipher) throws -> UInt64 {
        guard offset <= layout.plaintextSize else {
            throw CofferError.invalidParameter("offset \(offset) is beyond the end of the \(layout.plaintextSize)-byte payload")
        }
        let end = min(layout.plaintextSize, offset + min(length, UInt64.max - offset))
        let chunk = UInt64(layout.chunkSize)
        let sealedSize = layout.chunkSize + Limits.tagSize
        let lastIndex = layout.chunkCount - 1
        func sealedLength(_ k: UInt64) -> Int { k == lastIndex ? layout.finalSealedSize : sealedSize }
        func read(_ k: UInt64, into slot: ChunkSlot) throws {
            let want = sealedLength(k)
            let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<want]),
                                      at: payloadStart + k * UInt64(sealedSize))
            guard got == want else { throw CofferError.truncated("the file shrank while being read") }
            slot.inputCount = want
            slot.counter = k
            slot.isFinal = k == lastIndex
        }
        // The final chunk first: if the file was cut or extended, say so before any output.
        let first = offset / chunk
        let lastNeeded = end > offset ? (end - 1) / chunk : first
        if lastNeeded < lastIndex {
            let probe = ChunkSlot(inputCapacity: sealedSize, outputCapacity: layout.chunkSize)
            try read(lastIndex, into: probe)
            try Self.open(probe, cipher: cipher, key: key)
        }
        guard end > offset else { return 0 }
        var k = first
        let count = lastNeeded - first + 1
        let pipeline = OrderedPipeline(
            slotCount: count == 1 ? 1 : 2 * threads + 2, workers: count == 1 ? 1 : threads,
            inputCapacity: sealedSize, outputCapacity: layout.chunkSize,
            produce: { slot in
                guard k <= lastNeeded else { return .end }
                try read(k, into: slot)
                k += 1
                return .chunk
            },
            transform: { slot in try Self.open(slot, cipher: cipher, key: key) })
        var written: UInt64 = 0
        try pipeline.run { slot in
            let chunkStart = slot.counter * chunk
            let from = Int(max(offset, chunkStart) - chunkStart)
            let to = Int(min(end, chunkStart + UInt64(slot.outputCount)) - chunkStart)
            if to > from {
                try sink.write(UnsafeRawBufferPointer(rebasing: slot.output[from..<to]))
                written += UInt64(to - from)
                progress?(written)
            }
        }
        return written
    }
}
