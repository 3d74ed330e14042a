import CofferFormat
import Crypto
import Foundation
import Testing

@Suite struct HeaderSyntaxTests {
    static let mac = [UInt8](repeating: 0xA5, count: 32)

    @Test("a MAC line is '--- ' and 43 characters of canonical base64 of 32 bytes, nothing else")
    func macLine() {
        let encoded = RawBase64.encode(Self.mac)
        #expect(HeaderSyntax.mac(ofLine: Substring("--- \(encoded)")) == Self.mac)
        #expect(HeaderSyntax.mac(ofLine: Substring("---  \(encoded)")) == nil)            // two spaces
        #expect(HeaderSyntax.mac(ofLine: Substring("---\(encoded)")) == nil)              // no space
        #expect(HeaderSyntax.mac(ofLine: Substring("--- \(encoded)=")) == nil)            // padded
        #expect(HeaderSyntax.mac(ofLine: Substring("--- \(encoded.dropLast())")) == nil)  // 31 bytes and a bit
        #expect(HeaderSyntax.mac(ofLine: Substring("--- \(RawBase64.encode(Self.mac + [1]))")) == nil)  // 33 bytes
        // The last character carries 2 spare bits, which must be zero (canonical base64).
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var text = Array(encoded.utf8)
        text[text.count - 1] = alphabet[alphabet.firstIndex(of: text[text.count - 1])! ^ 1]
        #expect(HeaderSyntax.mac(ofLine: Substring("--- " + String(decoding: text, as: UTF8.self))) == nil)
    }

    @Test("reading lines up to the MAC line: complete, too long, cut short, ended early")
    func readLines() throws {
        let macLine = "--- \(RawBase64.encode(Self.mac))\n"
        let header = Array("first\n-> X a\nAAAA\n\(macLine)".utf8)
        let complete = try HeaderSyntax.readLines(from: pipeSource(header + Array("payload".utf8)), limit: 1000)
        #expect(complete == .complete(header))
        // The first line never counts as the MAC line, whatever it starts with.
        let dashes = Array("---\n-> X\n\n\(macLine)".utf8)
        #expect(try HeaderSyntax.readLines(from: pipeSource(dashes), limit: 1000) == .complete(dashes))
        #expect(try HeaderSyntax.readLines(from: pipeSource(header), limit: 8) == .tooLong)  // inside the stanza line
        // At the limit inside the MAC line: that line is cut short (Coffer: "truncated").
        #expect(try HeaderSyntax.readLines(from: pipeSource(header), limit: header.count - 1) == .unterminatedLine(isMACLine: true))
        #expect(try HeaderSyntax.readLines(from: pipeSource(Array(header.dropLast())), limit: 1000)
                == .unterminatedLine(isMACLine: true))
        #expect(try HeaderSyntax.readLines(from: pipeSource(Array("first\n-> X".utf8)), limit: 1000)
                == .unterminatedLine(isMACLine: false))
        #expect(try HeaderSyntax.readLines(from: pipeSource(Array("first\n-> X\n".utf8)), limit: 1000)
                == .endsBeforeMACLine(empty: false))
        #expect(try HeaderSyntax.readLines(from: pipeSource([]), limit: 1000) == .endsBeforeMACLine(empty: true))
        // A line check stops the reading at once.
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            _ = try HeaderSyntax.readLines(from: pipeSource(header), limit: 1000) { _, index in
                if index == 1 { throw Refused() }
            }
        }
    }

    @Test("stanzas up to the MAC line: each one checked as parsed, a stray line refused")
    func stanzas() throws {
        let lines: [Substring] = ["v", "-> A x", "AAAA", "-> B", "", "--- mac"]
        var seen: [String] = []
        let stanzas = try HeaderSyntax.parseStanzas(lines, from: 1, to: 5) { stanza, count in
            seen.append("\(count):\(stanza.type)")
        }
        #expect(stanzas.map(\.type) == ["A", "B"])
        #expect(seen == ["1:A", "2:B"])
        #expect(throws: CofferError.self) {
            _ = try HeaderSyntax.parseStanzas(["v", "-> A", "", "stray", "--- mac"], from: 1, to: 4)
        }
        // A body that runs into the MAC line has no final short line.
        #expect(throws: CofferError.self) {
            _ = try HeaderSyntax.parseStanzas(["v", "-> A", String(repeating: "A", count: 64)[...], "--- mac"], from: 1, to: 3)
        }
    }

    @Test("Coffer and age headers share the MAC line rule")
    func sharedMACRule() throws {
        let fileKey = FileKey.random()
        let stanza = Stanza(type: "X", arguments: ["a"], body: [1, 2, 3])
        let header = try Header.sealed(parameters: HeaderParameters(), stanzas: [stanza], fileKey: fileKey)
        let bytes = header.encoded()
        let lines = String(decoding: bytes.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(HeaderSyntax.mac(ofLine: lines.last!) == header.mac)
        #expect(HeaderSyntax.bytesCoveredByMAC(bytes, macLine: lines.last!) == header.bytesCoveredByMAC())
    }
}

@Suite struct FormatDetection {
    @Test("every format is told by its first bytes")
    func formats() {
        #expect(FormatDetector.detect(firstBytes: Array("coffer/v1\n".utf8)) == .coffer)
        #expect(FormatDetector.detect(firstBytes: Array("coffer/v2 4096\n".utf8)) == .coffer)
        #expect(FormatDetector.detect(firstBytes: Array("coffer/v9\n".utf8)) == .coffer)  // the header reader names the version
        #expect(FormatDetector.detect(firstBytes: Array("age-encryption.org/v1\n".utf8)) == .age(armored: false))
        #expect(FormatDetector.detect(firstBytes: Array("-----BEGIN AGE ENCRYPTED FILE-----\n".utf8)) == .age(armored: true))
        #expect(FormatDetector.detect(firstBytes: Array(" \r\n\t-----BEGIN AGE ENCRYPTED FILE-----\n".utf8)) == .age(armored: true))
        for version in ["1", "2", "3"] {
            #expect(FormatDetector.detect(firstBytes: Array("XBCRYP0\(version)".utf8) + [0, 0]) == .xbcrypt)
        }
        #expect(FormatDetector.detect(firstBytes: Array("XBCRYP04".utf8)) == .other(hint: nil))
        #expect(FormatDetector.detect(firstBytes: []) == .other(hint: "the input is empty"))
        #expect(FormatDetector.detect(firstBytes: deterministicBytes(2000)) == .other(hint: nil))
    }

    @Test("compressed and other encrypted formats get a hint in 'not a Coffer file'")
    func hints() throws {
        #expect(FormatDetector.hint(firstBytes: [0x1F, 0x8B, 8, 0]) == "it looks like a gzip file")
        #expect(FormatDetector.hint(firstBytes: [0x28, 0xB5, 0x2F, 0xFD, 0]) == "it looks like a zstd file")
        #expect(FormatDetector.hint(firstBytes: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) == "it looks like an xz file")
        #expect(FormatDetector.hint(firstBytes: Array("-----BEGIN PGP MESSAGE-----\n".utf8)) == "it looks like an OpenPGP (gpg) message")
        #expect(FormatDetector.hint(firstBytes: Array("Salted__12345678".utf8)) == "it looks like an 'openssl enc' file")
        #expect(throws: CofferError.notCofferFile(hint: "it looks like a zstd file")) {
            _ = try HeaderReading.read(from: pipeSource([0x28, 0xB5, 0x2F, 0xFD] + deterministicBytes(100)))
        }
    }
}
