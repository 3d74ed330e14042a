import Crypto
import CofferFormat
import Foundation

/// Coffer-format version 2 objects held in memory (docs/FORMAT.md): the repository stores every
/// object that holds secrets or user data in this one format, bound to its "KIND/NAME" by the
/// header's object-name field. Objects are read whole, or (packs) header first and then only the
/// STREAM chunks that hold a blob.
enum CofferObject {
    /// Payload chunk size of pack objects: small enough that reading one blob reads little more
    /// than the blob, large enough that tags cost nothing (16 bytes per 64 KiB).
    static let packChunkSize = 64 * 1024
    /// Payload chunk size of every other object.
    static let defaultChunkSize = 64 * 1024

    /// Encrypts `plaintext` as a version-2 object named `objectName` ("KIND/NAME").
    /// With `signer`, the header carries `signed ALGORITHM chunk-sha256` and the payload is
    /// followed by a producer-signature trailer (docs/FORMAT.md, "Signatures"): the signature is over
    /// the header's parameter lines, the payload nonce, length, chunk count and the SHA-256 of every
    /// sealed chunk, so it binds every stored byte of the payload and the object's name.
    static func seal(_ plaintext: [UInt8], objectName: String, fileKey: FileKey, stanzas: [Stanza],
                     chunkSize: Int = defaultChunkSize, signer: PayloadSigner? = nil) throws -> [UInt8] {
        let plan = try SealPlan(plaintextCount: plaintext.count, objectName: objectName, fileKey: fileKey, stanzas: stanzas,
                                chunkSize: chunkSize, signer: signer)
        var out: [UInt8] = []
        out.reserveCapacity(plan.sealedCount)
        out += plaintext
        try sealInPlace(&out, plan)
        return out
    }

    /// What sealing an object of a known plaintext size needs before its payload is encrypted: the
    /// header (with a fresh payload nonce) and the payload key. Building it costs the key wrapping.
    struct SealPlan {
        /// Lead line, both header slots (the second empty) and the payload nonce: the object's first bytes.
        let prefix: [UInt8]
        let parameters: HeaderParameters
        let nonce: [UInt8]
        let payloadKey: SymmetricKey
        let plaintextCount: Int
        let chunkSize: Int
        let chunkCount: Int
        let signer: PayloadSigner?

        init(plaintextCount: Int, objectName: String, fileKey: FileKey, stanzas: [Stanza],
             chunkSize: Int = CofferObject.defaultChunkSize, signer: PayloadSigner? = nil) throws {
            let signature = signer.map { SignatureParameters(algorithm: $0.algorithm, digest: .chunkSHA256) }
            parameters = HeaderParameters(cipher: .aes256gcm, chunkSize: chunkSize, objectName: Array(objectName.utf8),
                                          signature: signature)
            let probe = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey,
                                          layout: .slots(size: Limits.maxHeaderSize, generation: 1))
            let slotSize = Header.defaultSlotSize(forTextSize: probe.slotText().count)
            let header = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: fileKey,
                                           layout: .slots(size: slotSize, generation: 1))
            var nonce = [UInt8](repeating: 0, count: Limits.payloadNonceSize)
            SymmetricKey(size: .bits128).withUnsafeBytes { nonce = Array($0) }
            var prefix = Array("\(header.leadLine)\n".utf8)
            prefix += header.encodedSlot()
            prefix += [UInt8](repeating: 0, count: slotSize)
            prefix += nonce
            self.prefix = prefix
            self.nonce = nonce
            let objectKey = KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName)
            payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: nonce, cipher: .aes256gcm)
            self.plaintextCount = plaintextCount
            self.chunkSize = chunkSize
            chunkCount = max(1, (plaintextCount + chunkSize - 1) / chunkSize)
            self.signer = signer
        }

        /// The sealed object's size: header and nonce, payload chunks with their tags, signature trailer.
        var sealedCount: Int { prefix.count + plaintextCount + chunkCount * Limits.tagSize + parameters.trailerSize }
    }

    /// Seals an object in the buffer that holds its plaintext (`buffer.count == plan.plaintextCount`),
    /// with no second buffer of the object's size: the plaintext is moved up by the header's and the
    /// tags' size, then chunk k's ciphertext and tag are written at its final offset, which ends at or
    /// before plaintext chunk k+1 starts (chunk k's sealed bytes end `16·(k+1)` bytes after its
    /// plaintext would, and the plaintext was moved up by `16·chunkCount`). Each chunk is read before
    /// its output is written (swift-crypto returns the box). When `buffer`'s capacity is at least
    /// `plan.sealedCount` it is not reallocated: a pack is sealed in its own buffer.
    static func sealInPlace(_ buffer: inout [UInt8], _ plan: SealPlan) throws {
        let count = buffer.count
        precondition(count == plan.plaintextCount, "the buffer holds the plan's plaintext")
        let headerCount = plan.prefix.count
        let plainStart = headerCount + plan.chunkCount * Limits.tagSize
        buffer.reserveCapacity(plan.sealedCount)
        buffer.append(contentsOf: repeatElement(0, count: plainStart))
        var digester = SHA256()
        try buffer.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!
            if count > 0 { memmove(base + plainStart, base, count) }
            plan.prefix.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: headerCount) }
            var out = headerCount
            for k in 0..<plan.chunkCount {
                let start = plainStart + k * plan.chunkSize
                let end = min(plainStart + count, start + plan.chunkSize)
                let box = try AES.GCM.seal(UnsafeRawBufferPointer(rebasing: raw[start..<end]), using: plan.payloadKey,
                                           nonce: AES.GCM.Nonce(data: PayloadCipher.chunkNonce(counter: UInt64(k), isFinal: k == plan.chunkCount - 1)))
                let chunkStart = out
                func put(_ part: Data) {
                    part.withUnsafeBytes { bytes in
                        if let from = bytes.baseAddress { (base + out).copyMemory(from: from, byteCount: bytes.count) }
                        out += bytes.count
                    }
                }
                put(box.ciphertext)
                put(box.tag)
                precondition(out <= (k + 1 < plan.chunkCount ? start + plan.chunkSize : end),
                             "sealed chunk \(k) would overwrite plaintext not yet sealed")
                if plan.signer != nil {
                    var chunk = SHA256()
                    chunk.update(bufferPointer: UnsafeRawBufferPointer(rebasing: raw[chunkStart..<out]))
                    digester.update(data: Array(chunk.finalize()))
                }
            }
            precondition(out == plainStart + count, "every chunk sealed")
        }
        if let signer = plan.signer, let signature = plan.parameters.signature {
            let payload = SignedPayload(payloadNonce: plan.nonce, plaintextLength: UInt64(count),
                                        chunkCount: UInt64(plan.chunkCount), digest: Array(digester.finalize()))
            buffer += try payload.trailer(signedBy: signer, parameters: plan.parameters).encoded(signature)
        }
    }

    /// A signed object's signature trailer and what it covers, computed from the stored bytes alone
    /// (no key needed); nil when the object's header declares no signature. A trailer that holds no
    /// signature, or a slot with a zero key id or signature, is damage (docs/FORMAT.md, "Signatures").
    static func signature(of stored: [UInt8], _ parsed: ParsedHeader, object: String)
        throws -> (trailer: PayloadSignatureTrailer, payload: SignedPayload, parameters: HeaderParameters)? {
        let parameters = parsed.header.parameters
        guard let signature = parameters.signature else { return nil }
        guard signature.digest == .chunkSHA256 else {
            throw RepositoryError.damaged(object: object, reason: "repository objects are signed with chunk-sha256 digests, not \(signature.digest.rawValue)")
        }
        let layout: StreamEngine.PayloadLayout
        do {
            guard stored.count >= parsed.payloadStart else { throw RepositoryError.damaged(object: object, reason: "no payload after the header") }
            layout = try StreamEngine.PayloadLayout(sealedLength: UInt64(stored.count - parsed.payloadStart),
                                                    chunkSize: parameters.chunkSize, trailerSize: parameters.trailerSize)
        } catch let e as RepositoryError { throw e } catch {
            throw RepositoryError.damaged(object: object, reason: "\(error)")
        }
        let trailer = try PayloadSignatureTrailer.parse(Array(stored.suffix(parameters.trailerSize)), parameters: signature)
        if let damage = trailer.structuralDamage { throw RepositoryError.damaged(object: object, reason: damage) }
        var digester = SHA256()
        let sealed = parameters.chunkSize + Limits.tagSize
        stored.withUnsafeBytes { raw in
            for k in 0..<Int(layout.chunkCount) {
                let start = parsed.payloadStart + k * sealed
                let end = k == Int(layout.chunkCount) - 1 ? start + layout.finalSealedSize : start + sealed
                var chunk = SHA256()
                chunk.update(bufferPointer: UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                digester.update(data: Array(chunk.finalize()))
            }
        }
        let payload = SignedPayload(payloadNonce: parsed.nonce, plaintextLength: layout.plaintextSize,
                                    chunkCount: layout.chunkCount, digest: Array(digester.finalize()))
        return (trailer, payload, parameters)
    }

    /// How many leading bytes hold the header and payload nonce, from the lead line alone; nil when
    /// `prefix` does not yet hold the whole lead line.
    static func headerLength(prefix: [UInt8], object: String) throws -> Int? {
        guard let newline = prefix.prefix(128).firstIndex(of: 0x0A) else {
            if prefix.count >= 128 || !Array("coffer/v2 ".utf8).starts(with: prefix.prefix(10)) {
                throw RepositoryError.damaged(object: object, reason: "not a Coffer version-2 object")
            }
            return nil
        }
        let line = Substring(String(decoding: prefix[..<newline], as: UTF8.self))
        let size: Int?
        do { size = try Header.slotSize(leadLine: line) } catch {
            throw RepositoryError.damaged(object: object, reason: "\(error)")
        }
        guard let size else { throw RepositoryError.damaged(object: object, reason: "not a Coffer version-2 object") }
        return newline + 1 + 2 * size + Limits.payloadNonceSize
    }

    /// A parsed header: the newest valid slot, where the payload starts, and its nonce.
    struct ParsedHeader: Sendable {
        let header: Header
        let payloadStart: Int
        let nonce: [UInt8]
    }

    /// Parses the header of an object whose first `headerLength` bytes are in `bytes`.
    static func parseHeader(_ bytes: [UInt8], object: String) throws -> ParsedHeader {
        guard let length = try headerLength(prefix: bytes, object: object), bytes.count >= length else {
            throw RepositoryError.damaged(object: object, reason: "cut short inside its header")
        }
        let newline = bytes.firstIndex(of: 0x0A)!
        let size = (length - newline - 1 - Limits.payloadNonceSize) / 2
        var best: Header?
        var firstError: Error?
        for slot in 0..<2 {
            let start = newline + 1 + slot * size
            do {
                if let h = try Header.parseSlot(Array(bytes[start..<(start + size)]), size: size) {
                    if let b = best, b.generation == h.generation {
                        throw RepositoryError.damaged(object: object, reason: "both header slots have the same generation")
                    }
                    if best == nil || h.generation! > best!.generation! { best = h }
                }
            } catch let e as RepositoryError {
                throw e
            } catch {
                firstError = firstError ?? error
            }
        }
        guard let header = best else {
            throw RepositoryError.damaged(object: object, reason: firstError.map { "\($0)" } ?? "both header slots are empty")
        }
        return ParsedHeader(header: header, payloadStart: length, nonce: Array(bytes[(length - Limits.payloadNonceSize)..<length]))
    }

    /// An object whose header authenticated under its file key and names the expected object.
    struct Opened: Sendable {
        let parsed: ParsedHeader
        let payloadKey: SymmetricKey
        let object: String
        var chunkSize: Int { parsed.header.parameters.chunkSize }
        var cipher: PayloadCipher { parsed.header.parameters.cipher }
        var trailerSize: Int { parsed.header.parameters.trailerSize }
    }

    /// Checks the header MAC under `fileKey` and that the header names `object`.
    static func open(_ parsed: ParsedHeader, fileKey: FileKey, object: String) throws -> Opened {
        let objectKey: SymmetricKey
        do { objectKey = try parsed.header.verifyMAC(fileKey: fileKey) } catch {
            throw RepositoryError.damaged(object: object, reason: "header authentication failed")
        }
        guard parsed.header.parameters.objectName == Array(object.utf8) else {
            throw RepositoryError.damaged(object: object,
                                          reason: "it is object '\(parsed.header.parameters.objectNameText)' stored under another name")
        }
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: parsed.nonce, cipher: parsed.header.parameters.cipher)
        return Opened(parsed: parsed, payloadKey: payloadKey, object: object)
    }

    /// The payload layout of an object of `size` bytes.
    static func layout(_ opened: Opened, size: Int) throws -> StreamEngine.PayloadLayout {
        guard size >= opened.parsed.payloadStart else {
            throw RepositoryError.damaged(object: opened.object, reason: "no payload after the header")
        }
        do {
            return try StreamEngine.PayloadLayout(sealedLength: UInt64(size - opened.parsed.payloadStart),
                                                  chunkSize: opened.chunkSize, trailerSize: opened.trailerSize)
        } catch {
            throw RepositoryError.damaged(object: opened.object, reason: "\(error)")
        }
    }

    /// Decrypts a whole object's payload (every chunk authenticated, the final one last).
    static func decryptAll(_ bytes: [UInt8], _ opened: Opened) throws -> [UInt8] {
        let layout = try layout(opened, size: bytes.count)
        var out: [UInt8] = []
        out.reserveCapacity(Int(layout.plaintextSize))
        let sealed = opened.chunkSize + Limits.tagSize
        try bytes.withUnsafeBytes { raw in
            for k in 0..<Int(layout.chunkCount) {
                let start = opened.parsed.payloadStart + k * sealed
                let isFinal = k == Int(layout.chunkCount) - 1
                let end = isFinal ? start + layout.finalSealedSize : start + sealed
                guard let plain = opened.cipher.open(UnsafeRawBufferPointer(rebasing: raw[start..<end]), key: opened.payloadKey,
                                                     counter: UInt64(k), isFinal: isFinal) else {
                    throw RepositoryError.damaged(object: opened.object, reason: "payload chunk \(k) failed authentication")
                }
                out += plain
            }
        }
        return out
    }

    /// The byte range of sealed chunks holding plaintext `offset ..< offset+length`, as object offsets.
    static func sealedRange(_ opened: Opened, layout: StreamEngine.PayloadLayout, offset: Int, length: Int) throws -> (chunks: ClosedRange<Int>, range: Range<Int64>) {
        guard length > 0, offset >= 0, UInt64(offset + length) <= layout.plaintextSize else {
            throw RepositoryError.damaged(object: opened.object, reason: "a blob lies outside the pack's \(layout.plaintextSize) plaintext bytes")
        }
        let first = offset / opened.chunkSize
        let last = (offset + length - 1) / opened.chunkSize
        let sealed = opened.chunkSize + Limits.tagSize
        let start = opened.parsed.payloadStart + first * sealed
        let end = last == Int(layout.chunkCount) - 1 ? opened.parsed.payloadStart + last * sealed + layout.finalSealedSize
                                                   : opened.parsed.payloadStart + (last + 1) * sealed
        return (first...last, Int64(start)..<Int64(end))
    }

    /// Decrypts the chunks `chunks` read as `sealed` and returns plaintext `offset ..< offset+length`.
    static func decryptRange(_ sealedBytes: [UInt8], chunks: ClosedRange<Int>, layout: StreamEngine.PayloadLayout,
                             _ opened: Opened, offset: Int, length: Int) throws -> [UInt8] {
        let sealed = opened.chunkSize + Limits.tagSize
        var plain: [UInt8] = []
        plain.reserveCapacity(chunks.count * opened.chunkSize)
        try sealedBytes.withUnsafeBytes { raw in
            var pos = 0
            for k in chunks {
                let isFinal = k == Int(layout.chunkCount) - 1
                let n = isFinal ? layout.finalSealedSize : sealed
                guard pos + n <= raw.count,
                      let p = opened.cipher.open(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + n)]), key: opened.payloadKey,
                                                 counter: UInt64(k), isFinal: isFinal) else {
                    throw RepositoryError.damaged(object: opened.object, reason: "payload chunk \(k) failed authentication")
                }
                plain += p
                pos += n
            }
        }
        let skip = offset - chunks.lowerBound * opened.chunkSize
        return Array(plain[skip..<(skip + length)])
    }
}

/// 32 random bytes.
func randomBytes(_ n: Int = 32) -> [UInt8] {
    var out: [UInt8] = []
    while out.count < n { SymmetricKey(size: .bits256).withUnsafeBytes { out += $0 } }
    return Array(out.prefix(n))
}

/// A fresh random object name: 64 lowercase hex digits.
func randomObjectName() -> String { Hex.encode(randomBytes(32)) }
