import CofferFormat
@_spi(TestVectors) import CofferKeys
import Foundation
import Testing

/// Work bounds and display hygiene at the format level (issue 10, items 5 and 7).
@Suite struct Hardening {
    // MARK: scrypt work

    /// A passphrase stanza made at the lowest work factor (fast), by its own Passphrase instance.
    static func scryptStanza(_ fileKey: FileKey, salt: UInt8) throws -> Stanza {
        try Passphrase(Array("pw".utf8), workFactor: Passphrase.minWorkFactor)
            .wrap(fileKey: fileKey.bytes, salt: [UInt8](repeating: salt, count: 16))
    }

    @Test("a header with two scrypt stanzas is refused while parsing, before any scrypt work; writing one is refused too")
    func oneScryptStanza() throws {
        let fileKey = FileKey.random()
        let key = SymmetricKeyFile.generate()
        let stanzas = [try key.wrap(fileKey: fileKey.bytes)[0], try Self.scryptStanza(fileKey, salt: 1), try Self.scryptStanza(fileKey, salt: 2)]
        // What an attacker writes: the MAC does not matter, parsing refuses first.
        let header = Header(parameters: HeaderParameters(), stanzas: stanzas, mac: [UInt8](repeating: 0, count: 32))
        let bytes = header.encoded() + [UInt8](repeating: 0, count: Limits.payloadNonceSize) + [UInt8](repeating: 0, count: 16)
        #expect(throws: CofferError.malformedHeader("more than one scrypt (passphrase) stanza: a header holds at most one")) {
            _ = try Header.parse(header.encoded())
        }
        let passphrase = try Passphrase(Array("pw".utf8), workFactor: Passphrase.minWorkFactor)
        #expect(throws: CofferError.self) {
            let source = pipeSource(bytes)
            defer { source.close() }
            _ = try HeaderReading.read(from: source).open(with: [passphrase])
        }
        #expect(passphrase.derivations == 0)
        // Version 2 slots are parsed by the same code.
        #expect(throws: CofferError.malformedHeader("more than one scrypt (passphrase) stanza: a header holds at most one")) {
            let slot = Array("generation 1\n".utf8) + Array(header.encoded().dropFirst("coffer/v1\n".count))
            _ = try Header.parseSlot(slot + [UInt8](repeating: 0, count: 4096 - slot.count), size: 4096)
        }
        #expect(throws: CofferError.self) {
            _ = try Header.sealed(parameters: HeaderParameters(), stanzas: stanzas, fileKey: fileKey)
        }
        // One scrypt stanza beside other stanzas is fine, and opens.
        let single = try Header.sealed(parameters: HeaderParameters(), stanzas: Array(stanzas.prefix(2)), fileKey: fileKey)
        #expect(try Header.parse(single.encoded()).stanzas.count == 2)
    }

    @Test("a work factor above the documented maximum is refused before any derivation")
    func workFactorCap() throws {
        let fileKey = FileKey.random()
        var stanza = try Self.scryptStanza(fileKey, salt: 3)
        let passphrase = try Passphrase(Array("pw".utf8), workFactor: Passphrase.minWorkFactor)
        for factor in [Passphrase.maxWorkFactor + 1, 40, 99] {
            stanza.arguments[1] = String(factor)
            #expect(throws: KeyError.self) { _ = try passphrase.unwrap(stanzas: [stanza]) }
        }
        #expect(passphrase.derivations == 0)
        #expect(Passphrase.maxWorkFactor == 22)
    }

    // MARK: escaping

    @Test("DisplayText escapes C0, DEL, C1, separators and bidi controls, and invalid UTF-8 bytes; printable text is unchanged")
    func escaping() {
        #expect(DisplayText.escape("db/t1.ibd ü 日本") == "db/t1.ibd ü 日本")
        #expect(DisplayText.escape("a\u{1B}[2K\rOK\u{07}\u{00}\u{7F}\u{9B}31m\n") == "a\\u{1B}[2K\\u{0D}OK\\u{07}\\u{00}\\u{7F}\\u{9B}31m\\u{0A}")
        #expect(DisplayText.escape("x\u{202E}gnp.exe\u{2028}") == "x\\u{202E}gnp.exe\\u{2028}")
        let bytes: [UInt8] = [0x61, 0xFF, 0x1B, 0xC3, 0xA9, 0xC3, 0x28, 0xE2, 0x82, 0xC2, 0x9B, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80]
        #expect(DisplayText.escape(bytes) == "a\\xFF\\u{1B}é\\xC3(\\xE2\\x82\\u{9B}\\xED\\xA0\\x80\\xF4\\x90\\x80\\x80")
        // Escaped text has nothing left to escape.
        let once = DisplayText.escape(bytes)
        #expect(DisplayText.escape(once) == once)
        #expect(!once.unicodeScalars.contains(where: DisplayText.needsEscape))
        var parameters = HeaderParameters()
        parameters.objectName = [0x1B, 0x5B, 0x32, 0x4B, 0x0D, 0xFF]
        #expect(parameters.objectNameText == "\\u{1B}[2K\\u{0D}\\xFF")
    }
}
