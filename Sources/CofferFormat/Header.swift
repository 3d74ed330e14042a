import Crypto
import Foundation

/// The header's parameters: how the payload is sealed, and which object the file is.
public struct HeaderParameters: Equatable, Sendable {
    public var cipher: PayloadCipher
    public var chunkSize: Int
    /// The file's name within a run or backup set (e.g. its relative path); empty for a lone file.
    /// It is mixed into the key schedule, so a file moved to another name no longer opens there.
    public var objectName: [UInt8]
    /// Set when the file carries a producer signature trailer (version 2 only).
    public var signature: SignatureParameters?

    public init(cipher: PayloadCipher = .aes256gcm, chunkSize: Int = Limits.defaultChunkSize, objectName: [UInt8] = [],
                signature: SignatureParameters? = nil) {
        self.cipher = cipher
        self.chunkSize = chunkSize
        self.objectName = objectName
        self.signature = signature
    }

    /// The parameter lines (cipher, chunk size, object name, signature), each ending in a line feed:
    /// part of what the header MAC and a signature cover.
    public func headerLines() -> String {
        var text = "cipher \(cipher.rawValue)\nchunk-size \(chunkSize)\n"
        if !objectName.isEmpty { text += "object \(RawBase64.encode(objectName))\n" }
        if let signature { text += signature.headerLine + "\n" }
        return text
    }

    /// Bytes after the final chunk: the signature trailer, or none.
    public var trailerSize: Int { signature?.trailerSize ?? 0 }

    public func validate() throws {
        guard (Limits.minChunkSize...Limits.maxChunkSize).contains(chunkSize) else {
            throw CofferError.invalidParameter(
                "chunk size \(chunkSize) is outside \(Limits.minChunkSize)...\(Limits.maxChunkSize) bytes (4K to 16M)")
        }
        guard objectName.count <= Limits.maxObjectNameSize else {
            throw CofferError.invalidParameter("object name longer than \(Limits.maxObjectNameSize) bytes")
        }
    }

    /// The object name as text for messages and printers: control characters and bytes that are
    /// not UTF-8 escaped (``DisplayText``), since the name comes from an unauthenticated header.
    public var objectNameText: String { DisplayText.escape(objectName) }
}

/// Where a header sits in its file (docs/FORMAT.md, "Version 2: header slots").
public enum HeaderLayout: Equatable, Sendable {
    /// `coffer/v1`: one header, directly followed by the payload nonce.
    case single
    /// `coffer/v2 SIZE`: two header slots of SIZE bytes each; this header is in one of them and
    /// carries a generation number, so a rewrap can write the other slot and switch atomically.
    case slots(size: Int, generation: UInt64)

    public static let minSlotSize = 512
}

/// A parsed header (version 1, or one slot of version 2). See docs/FORMAT.md, "Header".
public struct Header: Sendable {
    /// The passphrase stanza type (Sources/CofferKeys/Passphrase.swift): at most one per header.
    public static let scryptStanzaType = "scrypt"

    public var parameters: HeaderParameters
    public var stanzas: [Stanza]
    public var mac: [UInt8]
    public var layout: HeaderLayout

    public init(parameters: HeaderParameters, stanzas: [Stanza], mac: [UInt8], layout: HeaderLayout = .single) {
        self.parameters = parameters
        self.stanzas = stanzas
        self.mac = mac
        self.layout = layout
    }

    /// Builds a header and computes its MAC under `fileKey`.
    public static func sealed(parameters: HeaderParameters, stanzas: [Stanza], fileKey: FileKey,
                              layout: HeaderLayout = .single) throws -> Header {
        try parameters.validate()
        guard !stanzas.isEmpty else { throw AccessError.noRecipient("a header needs at least one stanza") }
        guard stanzas.count <= Limits.maxStanzas else {
            throw CofferError.invalidParameter("at most \(Limits.maxStanzas) stanzas fit in one header")
        }
        guard stanzas.filter({ $0.type == Header.scryptStanzaType }).count <= 1 else {
            throw CofferError.invalidParameter(
                "a header holds at most one passphrase (scrypt) stanza; remove the old one first")
        }
        if parameters.signature != nil, layout == .single {
            throw CofferError.invalidParameter("signatures need file version 2")
        }
        var header = Header(parameters: parameters, stanzas: stanzas, mac: [], layout: layout)
        let objectKey = KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName)
        header.mac = KeySchedule.headerMAC(header.bytesCoveredByMAC(), objectKey: objectKey)
        switch layout {
        case .single:
            guard header.encoded().count <= Limits.maxHeaderSize else {
                throw CofferError.invalidParameter("header would exceed \(Limits.maxHeaderSize) bytes")
            }
        case .slots(let size, _):
            guard (HeaderLayout.minSlotSize...Limits.maxHeaderSize).contains(size) else {
                throw CofferError.invalidParameter("header slot size must be \(HeaderLayout.minSlotSize)...\(Limits.maxHeaderSize) bytes")
            }
            let needed = header.slotText().count
            guard needed <= size else { throw CofferError.headerSpaceExhausted(needed: needed, available: size) }
        }
        return header
    }

    /// The slot size a new version-2 file gets for this header: room for the header twice over
    /// plus 1 KiB, in whole KiB, so that rewraps can add a few recipients in place.
    public static func defaultSlotSize(forTextSize size: Int) -> Int {
        min(Limits.maxHeaderSize, (2 * size + 1024 + 1023) / 1024 * 1024)
    }

    /// The first line of the file: `coffer/v1`, or `coffer/v2 SIZE`.
    public var leadLine: String {
        switch layout {
        case .single: return Limits.versionLine
        case .slots(let size, _): return "\(Limits.versionLineV2) \(size)"
        }
    }

    /// Header bytes from the version line through the "---" that starts the MAC line. In version 2
    /// the file's lead line comes first, then the slot's text, so the MAC binds the slot size too.
    public func bytesCoveredByMAC() -> [UInt8] {
        var out = Array("\(leadLine)\n".utf8)
        if case .slots(_, let generation) = layout { out += Array("generation \(generation)\n".utf8) }
        out += Array(parameters.headerLines().utf8)
        for stanza in stanzas { out += stanza.encoded() }
        out += Array(HeaderSyntax.macLineStart.utf8)
        return out
    }

    /// A version-1 header as it is written (for version 2, see ``slotText()`` and ``encodedSlot()``).
    public func encoded() -> [UInt8] {
        bytesCoveredByMAC() + Array(" \(RawBase64.encode(mac))\n".utf8)
    }

    /// Version 2: the slot's text, from "generation" through the MAC line's line feed.
    public func slotText() -> [UInt8] {
        Array(encoded().dropFirst(leadLine.utf8.count + 1))
    }

    /// Version 2: the slot as written, its text padded with zero bytes to the slot size.
    public func encodedSlot() -> [UInt8] {
        guard case .slots(let size, _) = layout else { preconditionFailure("not a slotted header") }
        let text = slotText()
        return text + [UInt8](repeating: 0, count: size - text.count)
    }

    public var generation: UInt64? {
        if case .slots(_, let generation) = layout { return generation }
        return nil
    }

    /// Checks the MAC under `fileKey`; throws ``CofferError/headerMACMismatch`` when it differs.
    /// Returns the object key, from which the payload key is derived.
    @discardableResult
    public func verifyMAC(fileKey: FileKey) throws -> SymmetricKey {
        let objectKey = KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName)
        let expected = HMAC<SHA256>.authenticationCode(
            for: bytesCoveredByMAC(), using: KeySchedule.headerMACKey(objectKey: objectKey))
        // Constant-time comparison through swift-crypto's MAC type.
        guard expected == Data(mac) else { throw CofferError.headerMACMismatch }
        return objectKey
    }

    /// Parses a complete header (version line through the MAC line's line feed), strictly:
    /// anything not in canonical form is rejected, so parsing and re-encoding give the same bytes.
    public static func parse(_ bytes: [UInt8]) throws -> Header {
        guard bytes.count <= Limits.maxHeaderSize else {
            throw CofferError.malformedHeader("header is larger than \(Limits.maxHeaderSize) bytes")
        }
        guard bytes.last == 0x0A else { throw CofferError.malformedHeader("header does not end with a line feed") }
        try checkCharacters(bytes)
        let text = String(decoding: bytes.dropLast(), as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        try checkVersionLine(lines[0])
        return try parseLines(lines, from: 1, layout: .single)
    }

    /// Parses one version-2 slot of `size` bytes read after the lead line. Returns nil for an empty
    /// slot (all zero bytes). The text must be followed by zero bytes only.
    public static func parseSlot(_ slot: [UInt8], size: Int) throws -> Header? {
        let end = slot.firstIndex(of: 0) ?? slot.count
        if end == 0 {
            guard slot.allSatisfy({ $0 == 0 }) else { throw CofferError.malformedHeader("the slot starts with a zero byte but is not empty") }
            return nil
        }
        guard slot[end...].allSatisfy({ $0 == 0 }) else {
            throw CofferError.malformedHeader("the slot's text is followed by bytes other than zero padding")
        }
        let bytes = Array(slot[..<end])
        guard bytes.last == 0x0A else { throw CofferError.malformedHeader("the slot's text does not end with a line feed") }
        try checkCharacters(bytes)
        let lines = String(decoding: bytes.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let first = lines[0]
        guard first.hasPrefix("generation "), let generation = canonicalDecimal(first.dropFirst(11)), generation >= 1 else {
            throw CofferError.malformedHeader("a slot's first line must be 'generation N' with N ≥ 1 in canonical decimal")
        }
        return try parseLines(lines, from: 1, layout: .slots(size: size, generation: UInt64(generation)))
    }

    /// The lines after the version line (v1) or the generation line (v2 slot).
    static func parseLines(_ lines: [Substring], from start: Int, layout: HeaderLayout) throws -> Header {
        var index = start
        func next(_ what: String) throws -> Substring {
            guard index < lines.count else { throw CofferError.malformedHeader("header ends before \(what)") }
            defer { index += 1 }
            return lines[index]
        }
        var parameters = HeaderParameters()
        let cipherLine = try next("the cipher line")
        guard cipherLine.hasPrefix("cipher "), let cipher = PayloadCipher(rawValue: String(cipherLine.dropFirst(7))) else {
            throw CofferError.malformedHeader("line 2 must be 'cipher aes-256-gcm' or 'cipher chacha20-poly1305'")
        }
        parameters.cipher = cipher
        let chunkLine = try next("the chunk-size line")
        let digits = chunkLine.dropFirst(11)
        guard chunkLine.hasPrefix("chunk-size "), let size = canonicalDecimal(digits) else {
            throw CofferError.malformedHeader("line 3 must be 'chunk-size N' with N in canonical decimal")
        }
        parameters.chunkSize = size
        if index < lines.count, lines[index].hasPrefix("object ") {
            let encoded = lines[index].dropFirst(7)
            guard let name = RawBase64.decode(encoded), !name.isEmpty else {
                throw CofferError.malformedHeader("object name is not canonical unpadded base64 of a non-empty name")
            }
            parameters.objectName = name
            index += 1
        }
        if index < lines.count, lines[index].hasPrefix("signed") {
            guard layout != .single else { throw CofferError.malformedHeader("a coffer/v1 header cannot declare a signature") }
            parameters.signature = try SignatureParameters.parse(headerLine: lines[index])
            index += 1
        }
        do { try parameters.validate() } catch let CofferError.invalidParameter(reason) {
            throw CofferError.malformedHeader(reason)
        }

        guard index < lines.count - 1 else { throw CofferError.malformedHeader("no stanza: the file cannot be opened by any key") }
        var scryptStanzas = 0
        let stanzas = try HeaderSyntax.parseStanzas(lines, from: index, to: lines.count - 1) { stanza, count in
            guard count <= Limits.maxStanzas else {
                throw CofferError.malformedHeader("more than \(Limits.maxStanzas) stanzas")
            }
            // Refused here, before any key is tried: each scrypt stanza can cost a reader seconds of
            // CPU and gigabytes of memory, so a header may make it pay at most once (as in age).
            if stanza.type == Header.scryptStanzaType {
                scryptStanzas += 1
                guard scryptStanzas <= 1 else {
                    throw CofferError.malformedHeader("more than one scrypt (passphrase) stanza: a header holds at most one")
                }
            }
        }
        guard let mac = HeaderSyntax.mac(ofLine: lines[lines.count - 1]) else {
            throw CofferError.malformedHeader("the last line must be '--- ' and the 32-byte MAC in unpadded base64")
        }
        return Header(parameters: parameters, stanzas: stanzas, mac: mac, layout: layout)
    }

    /// Classifies a first line: ours, a later version of ours, or something else (with a hint).
    static func checkVersionLine(_ line: Substring) throws {
        if line == Limits.versionLine { return }
        if line.hasPrefix(Limits.versionLineV2 + " ") {
            throw CofferError.malformedHeader("a coffer/v2 file is read slot by slot, not as one header")
        }
        if line.hasPrefix("coffer/") { throw CofferError.unsupportedVersion(DisplayText.escape(String(line))) }
        throw CofferError.notCofferFile(hint: FormatDetector.hint(firstBytes: Array(line.utf8)))
    }

    /// Decimal without sign, leading zeros or other characters.
    /// Every header byte other than LF is printable ASCII (age headers too).
    public static func checkCharacters(_ bytes: [UInt8]) throws {
        for b in bytes where b != 0x0A && (b < 0x20 || b > 0x7E) {
            throw CofferError.malformedHeader(b == 0x0D
                ? "carriage return in header (lines end with LF only)"
                : String(format: "byte 0x%02x is not allowed in the header", b))
        }
    }

    /// The slot size of a `coffer/v2 SIZE` lead line, or nil when `line` is not one.
    public static func slotSize(leadLine line: Substring) throws -> Int? {
        guard line.hasPrefix(Limits.versionLineV2) else { return nil }
        guard line.hasPrefix(Limits.versionLineV2 + " "), let size = canonicalDecimal(line.dropFirst(Limits.versionLineV2.count + 1)),
              (HeaderLayout.minSlotSize...Limits.maxHeaderSize).contains(size) else {
            throw CofferError.malformedHeader("the first line must be 'coffer/v2 SIZE' with SIZE \(HeaderLayout.minSlotSize)...\(Limits.maxHeaderSize)")
        }
        return size
    }

    static func canonicalDecimal(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.count <= 12, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        guard s == "0" || !s.hasPrefix("0") else { return nil }
        return Int(s)
    }
}
