import Crypto
import Foundation

/// A Coffer file whose header was read, and whose payload is about to be.
public struct HeaderReading: Sendable {
    /// The header to use: version 1's only header, or version 2's valid slot with the highest generation.
    public let header: Header
    /// Version 2: the other slot's header when it is valid too (an older generation, present only
    /// when a rewrap was interrupted after writing its new slot). Tried when `header` does not open.
    public let alternate: Header?
    /// Version 2: slots that could not be parsed, with the reason (an interrupted rewrap, or damage).
    public let damagedSlots: [(slot: Int, reason: String)]
    /// Version 2: the slot `header` was read from.
    public let activeSlot: Int?
    /// Offset of the first payload chunk (after the header and the payload nonce).
    public let payloadStart: UInt64
    public let payloadNonce: [UInt8]

    /// Bytes before the payload nonce: the header, or the lead line and both slots.
    public var headerLength: UInt64 { payloadStart - UInt64(Limits.payloadNonceSize) }

    /// Version 2: the file offset of slot `index` (0 or 1).
    public func slotOffset(_ index: Int) -> UInt64? {
        guard case .slots(let size, _) = header.layout else { return nil }
        return UInt64(header.leadLine.utf8.count + 1 + index * size)
    }

    /// Reads and parses the header and the payload nonce from the start of `source`.
    public static func read(from source: ByteSource) throws -> HeaderReading {
        guard let first = try source.readLine(limit: 128) else {
            throw CofferError.notCofferFile(hint: "the input is empty")
        }
        guard first.last == 0x0A else {
            if first.starts(with: Array("coffer/".utf8)) {
                throw CofferError.malformedHeader("the version line does not end")
            }
            throw CofferError.notCofferFile(hint: FormatDetector.hint(firstBytes: first))
        }
        let firstLine = Substring(String(decoding: first.dropLast(), as: UTF8.self))
        if let size = try Header.slotSize(leadLine: firstLine) {
            return try readSlots(from: source, leadLength: first.count, size: size)
        }
        try Header.checkVersionLine(firstLine)
        let bytes: [UInt8]
        switch try HeaderSyntax.readLines(from: source, first: first, limit: Limits.maxHeaderSize) {
        case .complete(let lines): bytes = lines
        case .tooLong: throw CofferError.malformedHeader("no MAC line within \(Limits.maxHeaderSize) bytes")
        case .unterminatedLine(isMACLine: true): throw CofferError.truncated("the header's MAC line is cut short")
        case .endsBeforeMACLine, .unterminatedLine(isMACLine: false):
            throw CofferError.truncated("the header ends before its MAC line")
        }
        let header = try Header.parse(bytes)
        let nonce = try readNonce(from: source)
        return HeaderReading(header: header, alternate: nil, damagedSlots: [], activeSlot: nil,
                             payloadStart: UInt64(bytes.count + nonce.count), payloadNonce: nonce)
    }

    static func readNonce(from source: ByteSource) throws -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: Limits.payloadNonceSize)
        let got = try nonce.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard got == Limits.payloadNonceSize else {
            throw CofferError.truncated("the payload nonce after the header is missing or short")
        }
        return nonce
    }

    /// Version 2: both slots, then the nonce. A slot that does not parse is set aside as long as
    /// the other one does (a rewrap interrupted while writing it leaves exactly that).
    static func readSlots(from source: ByteSource, leadLength: Int, size: Int) throws -> HeaderReading {
        var valid: [(slot: Int, header: Header)] = []
        var damaged: [(slot: Int, reason: String)] = []
        var firstError: Error?
        for index in 0..<2 {
            var slot = [UInt8](repeating: 0, count: size)
            let got = try slot.withUnsafeMutableBytes { try source.readFully(into: $0) }
            guard got == size else { throw CofferError.truncated("header slot \(index + 1) is cut short") }
            do {
                if let header = try Header.parseSlot(slot, size: size) { valid.append((index, header)) }
            } catch {
                firstError = firstError ?? error
                damaged.append((index, "\(error)"))
            }
        }
        guard let newest = valid.max(by: { $0.header.generation! < $1.header.generation! }) else {
            throw firstError ?? CofferError.malformedHeader("both header slots are empty")
        }
        if valid.count == 2 && valid[0].header.generation == valid[1].header.generation {
            throw CofferError.malformedHeader("both header slots have generation \(newest.header.generation!)")
        }
        let older = valid.first { $0.slot != newest.slot }
        let nonce = try readNonce(from: source)
        return HeaderReading(header: newest.header, alternate: older?.header, damagedSlots: damaged,
                             activeSlot: newest.slot,
                             payloadStart: UInt64(leadLength + 2 * size + nonce.count), payloadNonce: nonce)
    }

    /// Unwraps the file key with the first identity that opens a stanza and checks the MAC.
    /// When `expectedObjectName` is given (a directory run), the file must have been encrypted
    /// under that name: a file moved or swapped within the run is refused.
    public func open(with identities: [Identity], expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        var firstError: Error?
        for candidate in [header] + (alternate.map { [$0] } ?? []) {
            do {
                let fileKey = try HeaderOpener.open(candidate, with: identities)
                return try open(fileKey: fileKey, header: candidate, expectedObjectName: expectedObjectName)
            } catch {
                firstError = firstError ?? error
            }
        }
        throw firstError!
    }

    /// Opens with a file key already known (e.g. unwrapped once for a whole run).
    public func open(fileKey: FileKey, expectedObjectName: [UInt8]? = nil) throws -> OpenedFile {
        do {
            return try open(fileKey: fileKey, header: header, expectedObjectName: expectedObjectName)
        } catch CofferError.headerMACMismatch where alternate != nil {
            return try open(fileKey: fileKey, header: alternate!, expectedObjectName: expectedObjectName)
        }
    }

    func open(fileKey: FileKey, header: Header, expectedObjectName: [UInt8]?) throws -> OpenedFile {
        let objectKey = try header.verifyMAC(fileKey: fileKey)
        if let expected = expectedObjectName, expected != header.parameters.objectName {
            throw CofferError.objectMismatch(expected: String(decoding: expected, as: UTF8.self),
                                             found: header.parameters.objectNameText)
        }
        let payloadKey = KeySchedule.payloadKey(objectKey: objectKey, nonce: payloadNonce,
                                                cipher: header.parameters.cipher)
        return OpenedFile(reading: self, header: header, fileKey: fileKey, payloadKey: payloadKey)
    }
}

extension HeaderReading {
    /// The payload layout of a regular file of `fileSize` bytes (the signature trailer excluded).
    public func layout(fileSize: UInt64) throws -> StreamEngine.PayloadLayout {
        guard fileSize >= payloadStart else { throw CofferError.truncated("no payload after the header") }
        return try StreamEngine.PayloadLayout(sealedLength: fileSize - payloadStart,
                                              chunkSize: header.parameters.chunkSize,
                                              trailerSize: header.parameters.trailerSize)
    }
}
