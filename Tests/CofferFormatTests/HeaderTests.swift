@_spi(TestVectors) import CofferFormat
import CofferKeys
import Foundation
import Testing

@Suite struct Base64Strictness {
    @Test func roundTripsEveryLength() {
        for n in 0...70 {
            let bytes = deterministicBytes(n, seed: UInt64(n + 1))
            let text = RawBase64.encode(bytes)
            #expect(!text.contains("="))
            #expect(RawBase64.decode(text) == bytes)
        }
    }

    @Test("padding, foreign characters, line breaks and non-canonical trailing bits are rejected",
          arguments: ["AA==", "AAA=", "A", "AB", "AAB", "AA A", "AA\nAA", "AA-_", "AAAAA"])
    func rejects(_ text: String) {
        #expect(RawBase64.decode(text) == nil)
    }
}

@Suite struct HeaderGrammar {
    static func sampleHeader(objectName: String = "") throws -> Header {
        let key = try FileKey(bytes: Array(repeating: 7, count: 32))
        let stanzas = [Stanza(type: "keyfile", arguments: ["0011223344556677", "AAAAAAAAAAAAAAAAAAAAAA"],
                              body: Array(repeating: 1, count: 48)),
                       Stanza(type: "example.org/empty", arguments: [], body: []),
                       Stanza(type: "long", arguments: ["a"], body: Array(repeating: 2, count: 48 * 3)),
                       Stanza(type: "pad", arguments: [], body: [1, 1])]
        return try Header.sealed(parameters: HeaderParameters(cipher: .chacha20poly1305, chunkSize: 65536,
                                                              objectName: Array(objectName.utf8)),
                                 stanzas: stanzas, fileKey: key)
    }

    @Test("parse(encode(h)) gives back h, byte for byte")
    func roundTrip() throws {
        for name in ["", "db/ibdata1", "a name with spaces/ü"] {
            let header = try Self.sampleHeader(objectName: name)
            let parsed = try Header.parse(header.encoded())
            #expect(parsed.encoded() == header.encoded())
            #expect(parsed.parameters == header.parameters)
            #expect(parsed.stanzas == header.stanzas)
            try parsed.verifyMAC(fileKey: FileKey(bytes: Array(repeating: 7, count: 32)))
        }
    }

    @Test("a 48-byte body is one full 64-column line and an empty final line; an empty body is one empty line")
    func bodyWrapping() throws {
        let text = String(decoding: try Self.sampleHeader().encoded(), as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let keyfile = lines.firstIndex { $0.hasPrefix("-> keyfile") }!
        #expect(lines[keyfile + 1].count == 64)
        #expect(lines[keyfile + 2].isEmpty)
        let empty = lines.firstIndex { $0.hasPrefix("-> example.org/empty") }!
        #expect(lines[empty + 1].isEmpty)
    }

    @Test("the MAC detects any change to the header")
    func macCoversEverything() throws {
        let header = try Self.sampleHeader()
        let key = try FileKey(bytes: Array(repeating: 7, count: 32))
        var changed = header
        changed.parameters.chunkSize = 4096
        #expect(throws: CofferError.headerMACMismatch) { try changed.verifyMAC(fileKey: key) }
        changed = header
        changed.stanzas.removeLast()
        #expect(throws: CofferError.headerMACMismatch) { try changed.verifyMAC(fileKey: key) }
        changed = header
        changed.stanzas.swapAt(0, 1)
        #expect(throws: CofferError.headerMACMismatch) { try changed.verifyMAC(fileKey: key) }
        #expect(throws: CofferError.headerMACMismatch) { try header.verifyMAC(fileKey: FileKey(bytes: Array(repeating: 8, count: 32))) }
    }

    /// Each mutation of a valid header's text, and the error class a reader must give.
    static let mutations: [(String, @Sendable (String) -> String, CofferError.Category)] = [
        ("CRLF line endings", { $0.replacingOccurrences(of: "\n", with: "\r\n") }, .integrity),
        ("unknown cipher", { $0.replacingOccurrences(of: "cipher chacha20-poly1305", with: "cipher rot13") }, .integrity),
        ("chunk size with a leading zero", { $0.replacingOccurrences(of: "chunk-size 65536", with: "chunk-size 065536") }, .integrity),
        ("chunk size too small", { $0.replacingOccurrences(of: "chunk-size 65536", with: "chunk-size 4095") }, .integrity),
        ("chunk size too large", { $0.replacingOccurrences(of: "chunk-size 65536", with: "chunk-size 16777217") }, .integrity),
        ("parameters out of order", { $0.replacingOccurrences(of: "cipher chacha20-poly1305\nchunk-size 65536", with: "chunk-size 65536\ncipher chacha20-poly1305") }, .integrity),
        ("an unknown parameter line", { $0.replacingOccurrences(of: "chunk-size 65536\n", with: "chunk-size 65536\ncolour blue\n") }, .integrity),
        ("no stanza", { text in
            let start = text.range(of: "-> ")!.lowerBound
            let end = text.range(of: "---")!.lowerBound
            return String(text[..<start] + text[end...])
        }, .integrity),
        ("missing final body line", { $0.replacingOccurrences(of: "-> example.org/empty\n\n", with: "-> example.org/empty\n") }, .integrity),
        ("empty stanza argument", { $0.replacingOccurrences(of: "-> long a", with: "-> long  a") }, .integrity),
        ("body with padding", { $0.replacingOccurrences(of: "AQE\n", with: "AQE=\n") }, .integrity),
        ("MAC of the wrong length", { text in
            let macStart = text.range(of: "--- ")!.upperBound
            return String(text[..<macStart]) + "AAAA\n"
        }, .integrity),
        ("a later version", { $0.replacingOccurrences(of: "coffer/v1\n", with: "coffer/v2\n") }, .format),
        ("another format", { $0.replacingOccurrences(of: "coffer/v1\n", with: "age-encryption.org/v1\n") }, .format),
        ("text after the MAC line", { $0 + "extra\n" }, .integrity),
    ]

    @Test("strict parsing rejects every non-canonical or malformed header")
    func strictParsing() throws {
        let valid = String(decoding: try Self.sampleHeader().encoded(), as: UTF8.self)
        #expect(valid.contains("AQE\n"))  // the mutations below rely on these spellings
        for (name, mutate, category) in Self.mutations {
            let mutated = mutate(valid)
            #expect(mutated != valid, "mutation '\(name)' changed nothing")
            do {
                _ = try Header.parse(Array(mutated.utf8))
                Issue.record("'\(name)' was accepted")
            } catch let error as CofferError {
                #expect(error.category == category, "'\(name)': \(error)")
            }
        }
    }

    @Test("the header size and stanza count limits hold for writers and readers")
    func limits() throws {
        let key = FileKey.random()
        let many = Array(repeating: Stanza(type: "x", arguments: [], body: []), count: Limits.maxStanzas + 1)
        #expect(throws: CofferError.self) {
            _ = try Header.sealed(parameters: HeaderParameters(), stanzas: many, fileKey: key)
        }
        var text = "coffer/v1\ncipher aes-256-gcm\nchunk-size 4096\n"
        text += String(repeating: "-> x\n\n", count: Limits.maxStanzas + 1)
        text += "--- " + RawBase64.encode([UInt8](repeating: 0, count: 32)) + "\n"
        #expect(throws: CofferError.malformedHeader("more than \(Limits.maxStanzas) stanzas")) {
            _ = try Header.parse(Array(text.utf8))
        }
        let huge = Array(repeating: UInt8(ascii: "A"), count: Limits.maxHeaderSize + 1)
        #expect(throws: CofferError.self) { _ = try Header.parse(huge) }
        // A stream whose header never ends is refused once the limit is reached, not read forever.
        let endless = Array("coffer/v1\ncipher aes-256-gcm\nchunk-size 4096\n".utf8)
            + Array(repeating: UInt8(ascii: "A"), count: Limits.maxHeaderSize + 10)
        #expect(throws: CofferError.malformedHeader("no MAC line within \(Limits.maxHeaderSize) bytes")) {
            _ = try HeaderReading.read(from: pipeSource(endless))
        }
    }

    @Test("a valid header of exactly the size limit is written, read and opened; one byte more, still with a valid MAC, is refused by writer and reader")
    func validHeaderAtTheLimit() throws {
        let key = SymmetricKeyFile.generate()
        let fileKey = FileKey.random()
        let wrapped = try key.wrap(fileKey: fileKey.bytes)[0]
        let parameters = HeaderParameters(chunkSize: 4096)
        // A second stanza whose argument length sets the header's size byte by byte.
        func stanzas(_ argumentLength: Int) -> [Stanza] {
            [wrapped, Stanza(type: "example.org/filler", arguments: [String(repeating: "a", count: argumentLength)],
                             body: Array(repeating: 0x5A, count: 180_000))]
        }
        func unsealedSize(_ argumentLength: Int) -> Int {
            Header(parameters: parameters, stanzas: stanzas(argumentLength), mac: Array(repeating: 0, count: 32)).encoded().count
        }
        let atLimit = 1 + Limits.maxHeaderSize - unsealedSize(1)
        #expect(unsealedSize(atLimit) == Limits.maxHeaderSize)

        // At the limit: written, read back from a pipe (the reader's limit), opened and decrypted.
        let header = try Header.sealed(parameters: parameters, stanzas: stanzas(atLimit), fileKey: fileKey)
        #expect(header.encoded().count == Limits.maxHeaderSize)
        #expect(try Header.parse(header.encoded()).stanzas.count == 2)
        var encryptor = CofferEncryptor(fileKey: fileKey, stanzas: stanzas(atLimit))
        encryptor.version = .v1
        let plaintext = deterministicBytes(5000)
        let sink = MemorySink()
        _ = try encryptor.encrypt(from: pipeSource(plaintext), to: sink, parameters: parameters, engine: StreamEngine(threads: 1))
        // Same file key, stanzas and parameters: the file's header is exactly the sealed one.
        #expect(Array(sink.bytes.prefix(Limits.maxHeaderSize)) == header.encoded())
        let source = pipeSource(sink.bytes)
        let reading = try HeaderReading.read(from: source)
        #expect(reading.header.encoded().count == Limits.maxHeaderSize)
        let out = MemorySink()
        _ = try reading.open(with: [key]).decrypt(from: source, to: out, engine: StreamEngine(threads: 1))
        #expect(out.bytes == plaintext)

        // One byte more: the writer refuses; a header made by hand with a correct MAC is refused by
        // the parser and by the stream reader, although its MAC verifies.
        #expect(throws: CofferError.invalidParameter("header would exceed \(Limits.maxHeaderSize) bytes")) {
            _ = try Header.sealed(parameters: parameters, stanzas: stanzas(atLimit + 1), fileKey: fileKey)
        }
        var over = Header(parameters: parameters, stanzas: stanzas(atLimit + 1), mac: [])
        over.mac = KeySchedule.headerMAC(over.bytesCoveredByMAC(),
                                         objectKey: KeySchedule.objectKey(fileKey: fileKey, objectName: parameters.objectName))
        #expect(over.encoded().count == Limits.maxHeaderSize + 1)
        try over.verifyMAC(fileKey: fileKey)
        #expect(throws: CofferError.malformedHeader("header is larger than \(Limits.maxHeaderSize) bytes")) {
            _ = try Header.parse(over.encoded())
        }
        let overFile = over.encoded() + Array(sink.bytes[Limits.maxHeaderSize...])
        // The stream reader stops at the limit, inside the MAC line.
        #expect(throws: CofferError.truncated("the header's MAC line is cut short")) {
            _ = try HeaderReading.read(from: pipeSource(overFile))
        }
        let overPath = TemporaryDirectory()
        let overSource = try fileSource(overFile, in: overPath)
        defer { overSource.close() }
        #expect(throws: CofferError.self) { _ = try HeaderReading.read(from: overSource) }
    }

    @Test("the first line tells a Coffer file from other formats")
    func sniffing() throws {
        #expect(throws: CofferError.notCofferFile(hint: "it is an age file")) {
            _ = try HeaderReading.read(from: pipeSource(Array("age-encryption.org/v1\n-> X25519 abc\n".utf8)))
        }
        #expect(throws: CofferError.notCofferFile(hint: "it is an XtraBackup .xbcrypt file")) {
            _ = try HeaderReading.read(from: pipeSource(Array("XBCRYP03".utf8) + [0, 1, 2, 0x0A]))
        }
        #expect(throws: CofferError.notCofferFile(hint: "the input is empty")) {
            _ = try HeaderReading.read(from: pipeSource([]))
        }
        #expect(throws: CofferError.notCofferFile(hint: nil)) {
            _ = try HeaderReading.read(from: pipeSource(deterministicBytes(5000)))
        }
    }
}

@Suite struct HeaderFuzz {
    @Test("random byte damage anywhere in a header never crashes the reader and never passes the MAC",
          arguments: [1, 2])
    func randomDamage(version: Int) throws {
        let key = SymmetricKeyFile.generate()
        let sealed = try encryptToBytes(Array("payload".utf8), key: key,
                                        parameters: HeaderParameters(chunkSize: 4096, objectName: Array("a/b".utf8)),
                                        threads: 1, version: version == 1 ? .v1 : .v2(slotSize: nil))
        let reading = try HeaderReading.read(from: pipeSource(sealed))
        let headerLength = Int(reading.payloadStart) - Limits.payloadNonceSize
        // Version 2: damage past the active slot's text (its zero padding, the empty slot) may be
        // set aside by the reader; damage up to the end of that text never may.
        let protectedEnd = version == 1 ? headerLength
            : reading.header.leadLine.utf8.count + 1 + reading.header.slotText().count
        var state: UInt64 = 0x1234_5678
        func next() -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(truncatingIfNeeded: state & 0x7FFF_FFFF)
        }
        for round in 0..<3000 {
            var damaged = sealed
            var firstDamage = Int.max
            for _ in 0...(round % 3) {
                let at = next() % headerLength
                firstDamage = min(firstDamage, at)
                switch next() % 4 {
                case 0: damaged[at] ^= UInt8(1 << (next() % 8))
                case 1: damaged[at] = UInt8(next() % 256)
                case 2: damaged.remove(at: at)
                default: damaged.insert(UInt8(next() % 128), at: at)
                }
            }
            if damaged == sealed { continue }
            do {
                let source = pipeSource(damaged)
                let opened = try HeaderReading.read(from: source).open(with: [key])
                let sink = MemorySink()
                _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: 1))
                // Accepted is right only when the text in use and everything from the nonce on are
                // exactly as written, i.e. the damage stayed within padding and the empty slot.
                let intact = damaged.count == sealed.count && damaged[..<protectedEnd] == sealed[..<protectedEnd]
                    && damaged[headerLength...] == sealed[headerLength...]
                if !intact || sink.bytes != Array("payload".utf8) {
                    Issue.record("round \(round): a damaged header was accepted (first damage at \(firstDamage), text ends at \(protectedEnd))")
                }
            } catch is CofferError {
                // Expected: every damage is a Coffer error, never a crash or another error type.
            } catch is AccessError {
                // Or, for a damaged stanza, no key opens the file.
            }
        }
    }
}
