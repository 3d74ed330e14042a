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

    /// Writes a slot's output parts to `sink`; returns their total size.
    static func write(_ slot: ChunkSlot, to sink: ByteSink) throws -> Int {
        var total = 0
        for part in slot.output {
            try part.withUnsafeBytes { try sink.write($0) }
            total += part.count
        }
        return total
    }

    /// Reads a slot's input at its file offset (the transform stage of positioned pipelines).
    static func readPositioned(_ slot: ChunkSlot, from source: ByteSource) throws {
        guard let offset = slot.readOffset else { return }
        let got = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[0..<slot.inputCount]), at: offset)
        guard got == slot.inputCount else {
            throw CofferError.readFailed(path: source.path, reason: "the file shrank while being read")
        }
    }

    /// Fills a slot from a sequential source, looking one byte ahead so that a full chunk is known
    /// to be final exactly when the input ends right after it. `carry` holds the looked-ahead byte.
    static func readSequential(_ slot: ChunkSlot, capacity: Int, from source: ByteSource, carry: inout UInt8?) throws -> Bool {
        var n = 0
        if let c = carry {
            slot.input[0] = c
            n = 1
            carry = nil
        }
        n += try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: slot.input[n..<capacity]))
        var isFinal = n < capacity
        if !isFinal {
            var next: UInt8 = 0
            let got = try withUnsafeMutableBytes(of: &next) { try source.readFully(into: $0) }
            if got == 0 { isFinal = true } else { carry = next }
        }
        slot.inputCount = n
        return isFinal
    }

    // MARK: Encryption

    /// What a pass over a payload found: its length, chunk count and, when asked for, its digest.
    public struct PayloadSummary: Sendable, Equatable {
        public var plaintextLength: UInt64
        public var chunkCount: UInt64
        /// The payload digest a signature covers (nil unless a digest kind was given).
        public var digest: [UInt8]?
    }

    /// Seals everything `source` yields as the STREAM payload. With `digest`, also computes the
    /// payload digest for a signature, chunk by chunk on the workers.
    public func seal(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                     cipher: PayloadCipher, chunkSize: Int,
                     digest: SignatureParameters.PayloadDigest? = nil) throws -> PayloadSummary {
        var counter: UInt64 = 0
        var finished = false
        let produce: (ChunkSlot) throws -> OrderedPipeline.Produced
        var positioned: (size: UInt64, offset: UInt64, length: UInt64)?
        if let (size, offset) = source.positionedReadStart {
            // A regular file: chunk k is at a known offset, and each worker reads its own chunks.
            let length = size - min(size, offset)
            let count = max(1, (length + UInt64(chunkSize) - 1) / UInt64(chunkSize))
            positioned = (size, offset, length)
            produce = { slot in
                guard counter < count else { return .end }
                slot.counter = counter
                slot.isFinal = counter == count - 1
                slot.readOffset = offset + counter * UInt64(chunkSize)
                slot.inputCount = Int(min(UInt64(chunkSize), length - counter * UInt64(chunkSize)))
                counter += 1
                return .chunk
            }
        } else {
            var carry: UInt8?
            produce = { slot in
                if finished { return .end }
                slot.isFinal = try Self.readSequential(slot, capacity: chunkSize, from: source, carry: &carry)
                slot.counter = counter
                counter += 1
                finished = slot.isFinal
                return .chunk
            }
        }
        let pipeline = OrderedPipeline(
            slotCount: slotCount(chunkSize: chunkSize, sizeHint: positioned?.length), workers: threads,
            inputCapacity: chunkSize, produce: produce,
            transform: { slot in
                try Self.readPositioned(slot, from: source)
                slot.output = try cipher.seal(slot.filledInput, key: key, counter: slot.counter, isFinal: slot.isFinal)
                if let digest { slot.digest = Self.chunkDigest(digest, of: slot.output) }
            })
        var total: UInt64 = 0
        var digester = digest.map { PayloadDigester(kind: $0) }
        try pipeline.run(waitForReader: positioned != nil || source.regularFileSize != nil) { slot in
            _ = try Self.write(slot, to: sink)
            digester?.add(slot.digest)
            total += UInt64(slot.inputCount)
            progress?(total)
        }
        if let positioned {
            // The size was taken at the start: a file still being written would be cut silently.
            var probe: UInt8 = 0
            let more = try withUnsafeMutableBytes(of: &probe) { try source.read(into: $0, at: positioned.offset + positioned.length) }
            if more > 0 { throw CofferError.readFailed(path: source.path, reason: "the file grew while being encrypted") }
        }
        return PayloadSummary(plaintextLength: total, chunkCount: counter, digest: digester?.finalize())
    }

    static func chunkDigest(_ kind: SignatureParameters.PayloadDigest, of parts: [Data]) -> [UInt8] {
        switch parts.count {
        case 1: return parts[0].withUnsafeBytes { PayloadDigester.chunkDigest(kind: kind, sealed: [$0]) }
        default:
            return parts[0].withUnsafeBytes { a in
                parts[1].withUnsafeBytes { b in PayloadDigester.chunkDigest(kind: kind, sealed: [a, b]) }
            }
        }
    }

    // MARK: Decryption

    /// Opens `slot` (input = sealed chunk); on failure, names the likely cause.
    static func open(_ slot: ChunkSlot, cipher: PayloadCipher, key: SymmetricKey) throws {
        let sealed = slot.filledInput
        if let plaintext = cipher.open(sealed, key: key, counter: slot.counter, isFinal: slot.isFinal) {
            slot.output = [plaintext]
            return
        }
        // Authentication failed. Trying the other final-flag tells truncation and trailing
        // data apart from tampering; it costs nothing on the success path.
        if cipher.open(sealed, key: key, counter: slot.counter, isFinal: !slot.isFinal) != nil {
            if slot.isFinal {
                throw CofferError.truncated("the file ends after chunk \(slot.counter), which is not the final chunk")
            }
            throw CofferError.trailingData(afterChunk: slot.counter)
        }
        throw CofferError.chunkAuthenticationFailed(
            chunk: slot.counter, reason: "altered, reordered, duplicated, truncated, or not made with this key")
    }

    /// Opens the STREAM payload that follows in `source`; writes only authenticated plaintext.
    /// A regular file's length is checked before any output, and its chunks are read in parallel.
    /// `trailerSize` bytes after the final chunk are not payload (a signature trailer); with
    /// `digest`, the payload digest a signature covers is computed on the way.
    public func open(from source: ByteSource, to sink: ByteSink, key: SymmetricKey,
                     cipher: PayloadCipher, chunkSize: Int, trailerSize: Int = 0,
                     digest: SignatureParameters.PayloadDigest? = nil) throws -> PayloadSummary {
        var digester = digest.map { PayloadDigester(kind: $0) }
        if let (size, offset) = source.positionedReadStart {
            let layout = try PayloadLayout(sealedLength: size - min(size, offset), chunkSize: chunkSize,
                                           trailerSize: trailerSize)
            let total = try openChunks(from: source, payloadStart: offset, layout: layout,
                                       chunks: 0...(layout.chunkCount - 1), key: key, cipher: cipher,
                                       digest: digest) { slot in
                digester?.add(slot.digest)
                return UInt64(try Self.write(slot, to: sink))
            }
            return PayloadSummary(plaintextLength: total, chunkCount: layout.chunkCount, digest: digester?.finalize())
        }
        if trailerSize > 0 { source.withholdTail(trailerSize) }
        let sealedSize = chunkSize + Limits.tagSize
        var counter: UInt64 = 0
        var carry: UInt8?
        var finished = false
        let pipeline = OrderedPipeline(
            slotCount: slotCount(chunkSize: chunkSize, sizeHint: nil), workers: threads, inputCapacity: sealedSize,
            produce: { slot in
                if finished { return .end }
                let isFinal = try Self.readSequential(slot, capacity: sealedSize, from: source, carry: &carry)
                let n = slot.inputCount
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
                slot.counter = counter
                slot.isFinal = isFinal
                counter += 1
                finished = isFinal
                return .chunk
            },
            transform: { slot in
                if let digest { slot.digest = PayloadDigester.chunkDigest(kind: digest, sealed: [UnsafeRawBufferPointer(slot.filledInput)]) }
                try Self.open(slot, cipher: cipher, key: key)
            })
        var total: UInt64 = 0
        try pipeline.run(waitForReader: false) { slot in
            digester?.add(slot.digest)
            total += UInt64(try Self.write(slot, to: sink))
            progress?(total)
        }
        if trailerSize > 0, source.withheldTail().count < trailerSize {
            throw CofferError.truncated("the signature trailer after the final chunk is cut short")
        }
        return PayloadSummary(plaintextLength: total, chunkCount: counter, digest: digester?.finalize())
    }

    /// The layout of a payload whose sealed length is known (a regular file).
    public struct PayloadLayout: Sendable, Equatable {
        public let chunkSize: Int
        public let chunkCount: UInt64
        public let finalSealedSize: Int
        public let plaintextSize: UInt64

        /// Validates a sealed payload length: everything after the payload nonce, less the
        /// `trailerSize` bytes of a signature trailer.
        public init(sealedLength withTrailer: UInt64, chunkSize: Int, trailerSize: Int = 0) throws {
            let sealed = UInt64(chunkSize + Limits.tagSize)
            self.chunkSize = chunkSize
            guard withTrailer > UInt64(trailerSize) else {
                throw CofferError.truncated(trailerSize > 0 ? "no payload and signature trailer after the header"
                                                             : "no payload after the header")
            }
            let sealedLength = withTrailer - UInt64(trailerSize)
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

    /// Opens chunks `chunks` of a regular file in parallel, each worker reading its own chunks;
    /// `consume` sees them in order and returns the plaintext bytes it used (for progress).
    func openChunks(from source: ByteSource, payloadStart: UInt64, layout: PayloadLayout, chunks: ClosedRange<UInt64>,
                    key: SymmetricKey?, cipher: PayloadCipher, digest: SignatureParameters.PayloadDigest? = nil,
                    consume: (ChunkSlot) throws -> UInt64) throws -> UInt64 {
        let sealedSize = layout.chunkSize + Limits.tagSize
        let lastIndex = layout.chunkCount - 1
        var k = chunks.lowerBound
        let single = chunks.count == 1
        let pipeline = OrderedPipeline(
            slotCount: single ? 1 : 2 * threads + 2, workers: single ? 1 : threads, inputCapacity: sealedSize,
            produce: { slot in
                guard k <= chunks.upperBound else { return .end }
                slot.counter = k
                slot.isFinal = k == lastIndex
                slot.inputCount = k == lastIndex ? layout.finalSealedSize : sealedSize
                slot.readOffset = payloadStart + k * UInt64(sealedSize)
                k += 1
                return .chunk
            },
            transform: { slot in
                try Self.readPositioned(slot, from: source)
                if let digest { slot.digest = PayloadDigester.chunkDigest(kind: digest, sealed: [UnsafeRawBufferPointer(slot.filledInput)]) }
                if let key { try Self.open(slot, cipher: cipher, key: key) }
            })
        var total: UInt64 = 0
        try pipeline.run { slot in
            total += try consume(slot)
            progress?(total)
        }
        return total
    }

    /// Authenticates only the final chunk of a regular file's payload: proof that the file ends
    /// where its writer ended it (neither cut short nor extended), at the cost of one chunk.
    public func authenticateFinalChunk(from source: ByteSource, payloadStart: UInt64, layout: PayloadLayout,
                                       key: SymmetricKey, cipher: PayloadCipher) throws {
        let last = layout.chunkCount - 1
        _ = try openChunks(from: source, payloadStart: payloadStart, layout: layout, chunks: last...last,
                           key: key, cipher: cipher) { _ in 0 }
    }

    /// The payload digest of a regular file's sealed payload, without decrypting it: a signature
    /// can be checked by someone who holds no decryption key.
    public func digestPayload(from source: ByteSource, payloadStart: UInt64, layout: PayloadLayout,
                              kind: SignatureParameters.PayloadDigest) throws -> PayloadSummary {
        var digester = PayloadDigester(kind: kind)
        _ = try openChunks(from: source, payloadStart: payloadStart, layout: layout, chunks: 0...(layout.chunkCount - 1),
                           key: nil, cipher: .aes256gcm, digest: kind) { slot in
            digester.add(slot.digest)
            return UInt64(slot.inputCount - Limits.tagSize)
        }
        return PayloadSummary(plaintextLength: layout.plaintextSize, chunkCount: layout.chunkCount,
                              digest: digester.finalize())
    }

    /// Decrypts plaintext bytes `offset ..< offset+length` (clamped to the end), reading only the
    /// chunks that hold them plus the final chunk, whose authentication proves the file's length.
    public func openRange(from source: ByteSource, payloadStart: UInt64, layout: PayloadLayout,
                          offset: UInt64, length: UInt64, to sink: ByteSink, key: SymmetricKey,
                          cipher: PayloadCipher) throws -> UInt64 {
        guard offset <= layout.plaintextSize else {
            throw CofferError.invalidParameter("offset \(offset) is beyond the end of the \(layout.plaintextSize)-byte payload")
        }
        let end = offset + min(length, layout.plaintextSize - offset)
        let chunk = UInt64(layout.chunkSize)
        let lastIndex = layout.chunkCount - 1
        let first = offset / chunk
        let lastNeeded = end > offset ? (end - 1) / chunk : first
        if lastNeeded < lastIndex {
            // The final chunk first: if the file was cut or extended, say so before any output.
            _ = try openChunks(from: source, payloadStart: payloadStart, layout: layout, chunks: lastIndex...lastIndex,
                               key: key, cipher: cipher) { _ in 0 }
        }
        guard end > offset else { return 0 }
        return try openChunks(from: source, payloadStart: payloadStart, layout: layout, chunks: first...lastNeeded,
                              key: key, cipher: cipher) { slot in
            let plaintext = slot.output[0]
            let chunkStart = slot.counter * chunk
            let from = Int(max(offset, chunkStart) - chunkStart)
            let to = Int(min(end, chunkStart + UInt64(plaintext.count)) - chunkStart)
            guard to > from else { return 0 }
            try plaintext.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[from..<to])) }
            return UInt64(to - from)
        }
    }
}
