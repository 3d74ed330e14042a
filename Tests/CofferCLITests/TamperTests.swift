import Foundation
import Testing

/// The tamper matrix: every way of damaging a file must fail with the right exit code and leave
/// no output file behind, through `decrypt -o`, `decrypt` from a pipe, and `verify`.
@Suite struct TamperMatrix {
    static let chunk = 4096
    static let plaintext = pseudoRandom(3 * 4096 + 100, seed: 99)  // 4 chunks, the last short

    struct Sample {
        let dir = Scratch()
        let key: String
        let bytes: [UInt8]
        let version: Int
        /// Bytes before the payload nonce (version 2: the lead line and both slots).
        let headerLength: Int
        /// End of the header text in use, just after its MAC line (version 1: the header's end).
        let macEnd: Int
        /// Version 2: the lead line's length and the slot size.
        let leadLength: Int, slotSize: Int
        var payloadStart: Int { headerLength + 16 }
        var sealedChunk: Int { TamperMatrix.chunk + 16 }

        init(version: Int) throws {
            self.version = version
            key = try dir.keygen()
            let input = try dir.write(TamperMatrix.plaintext, "plain")
            let pw = try dir.write(Array("pw".utf8), "pw")
            let enc = try coffer(["encrypt", "--key-file", key, "--passphrase-file", pw, "--work-factor", "10",
                                  "--chunk-size", "4K", "--file-version", "\(version)", "-o", dir.file("good.cof"), input])
            precondition(enc.status == 0, enc.stderr)
            let sealed = try dir.read("good.cof")
            let marker = Array("\n--- ".utf8)
            let at = (0...(sealed.count - marker.count)).first { sealed[$0..<($0 + marker.count)].elementsEqual(marker) }!
            bytes = sealed
            macEnd = at + marker.count + 43 + 1
            if version == 2 {
                let lead = String(decoding: sealed[..<sealed.firstIndex(of: 0x0A)!], as: UTF8.self)
                leadLength = lead.utf8.count + 1
                slotSize = Int(lead.split(separator: " ")[1])!
                headerLength = leadLength + 2 * slotSize
            } else {
                leadLength = 0
                slotSize = 0
                headerLength = macEnd
            }
        }

        /// Replaces the header text in use (version 2: slot 1's text, padded again).
        func withHeaderText(_ text: [UInt8]) -> [UInt8] {
            guard version == 2 else { return text + Array(bytes[headerLength...]) }
            let slotText = Array(text[leadLength...])
            return Array(bytes[..<leadLength]) + slotText + [UInt8](repeating: 0, count: max(0, slotSize - slotText.count))
                + Array(bytes[(leadLength + slotSize)...])
        }

        /// Decrypts `damaged` three ways; each must exit `expected` and leave no output file.
        func expectRejected(_ damaged: [UInt8], _ expected: Int32, _ what: String, message: String? = nil) throws {
            let path = try dir.write(damaged, "damaged.cof")
            let toFile = try coffer(["decrypt", "--key-file", key, "-o", dir.file("out"), path])
            #expect(toFile.status == expected, "\(what): decrypt -o exited \(toFile.status): \(toFile.stderr)")
            #expect(toFile.stderr.split(separator: "\n").count == 1, "\(what): not one line: \(toFile.stderr)")
            if let message { #expect(toFile.stderr.contains(message), "\(what): \(toFile.stderr)") }
            #expect(!dir.listing().contains { $0 == "out" || $0.contains("coffer-tmp") }, "\(what): output left behind")
            let fromPipe = try coffer(["decrypt", "--key-file", key, "-o", dir.file("out")], stdin: damaged)
            #expect(fromPipe.status == expected, "\(what): decrypt from a pipe exited \(fromPipe.status): \(fromPipe.stderr)")
            #expect(!dir.listing().contains { $0 == "out" || $0.contains("coffer-tmp") }, "\(what): output left behind")
            let verify = try coffer(["verify", "--key-file", key, path])
            #expect(verify.status == expected, "\(what): verify exited \(verify.status)")
        }
    }

    @Test("the untouched sample decrypts (the matrix below starts from a good file)", arguments: [1, 2])
    func control(version: Int) throws {
        let sample = try Sample(version: version)
        let result = try coffer(["decrypt", "--key-file", sample.key, sample.dir.file("good.cof")])
        #expect(result.status == Exit.ok)
        #expect(result.stdout == Self.plaintext)
        #expect(sample.bytes.count == sample.payloadStart + 4 * 16 + Self.plaintext.count)
    }

    @Test("a bit flip in every header line", arguments: [1, 2])
    func headerLines(version: Int) throws {
        let sample = try Sample(version: version)
        var lineStart = 0
        var lineNumber = 0
        while lineStart < sample.macEnd {
            let lineEnd = sample.bytes[lineStart...].firstIndex(of: 0x0A)!
            let line = String(decoding: sample.bytes[lineStart..<lineEnd], as: UTF8.self)
            lineNumber += 1
            defer { lineStart = lineEnd + 1 }
            guard lineEnd > lineStart else { continue }  // an empty final body line has no byte to flip
            // The last character of the line: for the keyfile arg line that is in its salt.
            var damaged = sample.bytes
            damaged[lineEnd - 1] ^= 0x01
            // Version 1's version line becomes another version (format); version 2's lead line
            // changes the slot size, which the MAC covers (integrity).
            let expected: Int32 = lineNumber == 1 && version == 1 ? Exit.format : Exit.integrity
            try sample.expectRejected(damaged, expected, "flip in header line \(lineNumber) '\(line)'")
        }
        #expect(lineNumber >= 9)
        // Flipping the key id itself makes the stanza name a key nobody has: a key error naming that id.
        let text = String(decoding: sample.bytes[0..<sample.macEnd], as: UTF8.self)
        let idStart = text.range(of: "-> keyfile ")!.upperBound
        let offset = text.utf8.distance(from: text.startIndex, to: idStart)
        var damaged = sample.bytes
        damaged[offset] = damaged[offset] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
        try sample.expectRejected(damaged, Exit.key, "key id changed", message: "opens with: key file")
    }

    @Test("a removed, duplicated or reordered stanza", arguments: [1, 2])
    func stanzas(version: Int) throws {
        let sample = try Sample(version: version)
        let text = String(decoding: sample.bytes[0..<sample.macEnd], as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let keyfile = lines.firstIndex { $0.hasPrefix("-> keyfile") }!
        let scrypt = lines.firstIndex { $0.hasPrefix("-> scrypt") }!
        let mac = lines.firstIndex { $0.hasPrefix("---") }!
        let keyStanza = Array(lines[keyfile..<scrypt])
        let pwStanza = Array(lines[scrypt..<mac])
        func rebuild(_ stanzas: [String]) -> [UInt8] {
            sample.withHeaderText(Array((Array(lines[..<keyfile]) + stanzas + [lines[mac]]).joined(separator: "\n").utf8) + [0x0A])
        }
        try sample.expectRejected(rebuild(keyStanza), Exit.integrity, "passphrase stanza removed")
        try sample.expectRejected(rebuild(pwStanza + keyStanza), Exit.integrity, "stanzas reordered")
        try sample.expectRejected(rebuild(keyStanza + pwStanza + pwStanza), Exit.integrity, "stanza duplicated")
    }

    @Test("a bit flip in the MAC, the payload nonce, and each chunk", arguments: [1, 2])
    func payloadFlips(version: Int) throws {
        let sample = try Sample(version: version)
        var damaged = sample.bytes
        // A different but valid base64 letter in the middle of the MAC: it parses, and must not verify.
        let at = sample.macEnd - 20
        damaged[at] = damaged[at] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        try sample.expectRejected(damaged, Exit.integrity, "MAC changed", message: "header authentication failed")
        damaged = sample.bytes
        damaged[sample.macEnd - 2] ^= 0x02
        try sample.expectRejected(damaged, Exit.integrity, "MAC bit flipped")
        damaged = sample.bytes
        damaged[sample.headerLength + 3] ^= 0x01
        try sample.expectRejected(damaged, Exit.integrity, "payload nonce flipped")
        for k in 0..<4 {
            for position in [0, 100, min(4095, sample.bytes.count - sample.payloadStart - k * sample.sealedChunk - 17),
                             -1] {  // -1: the chunk's tag
                damaged = sample.bytes
                let chunkEnd = min(sample.payloadStart + (k + 1) * sample.sealedChunk, sample.bytes.count)
                let at = position < 0 ? chunkEnd - 1 : sample.payloadStart + k * sample.sealedChunk + position
                damaged[at] ^= 0x80
                try sample.expectRejected(damaged, Exit.integrity, "chunk \(k) byte \(position) flipped",
                                          message: "chunk \(k) failed authentication")
            }
        }
    }

    @Test("truncation at every chunk boundary and mid-chunk, inside the header and the nonce", arguments: [1, 2])
    func truncation(version: Int) throws {
        let sample = try Sample(version: version)
        for k in 0..<4 {
            let boundary = sample.payloadStart + k * sample.sealedChunk
            try sample.expectRejected(Array(sample.bytes[..<boundary]), Exit.integrity, "cut at chunk boundary \(k)",
                                      message: "truncated")
            try sample.expectRejected(Array(sample.bytes[..<(boundary + 9)]), Exit.integrity, "cut 9 bytes into chunk \(k)")
            try sample.expectRejected(Array(sample.bytes[..<min(boundary + 2000, sample.bytes.count - 50)]), Exit.integrity, "cut mid-chunk \(k)")
        }
        try sample.expectRejected(Array(sample.bytes.dropLast()), Exit.integrity, "last byte removed")
        try sample.expectRejected(Array(sample.bytes[..<(sample.headerLength + 5)]), Exit.integrity, "cut in the nonce")
        try sample.expectRejected(Array(sample.bytes[..<sample.headerLength]), Exit.integrity, "header only, no nonce")
        try sample.expectRejected(Array(sample.bytes[..<sample.payloadStart]), Exit.integrity, "header and nonce, no payload",
                                  message: "no payload")
        try sample.expectRejected(Array(sample.bytes[..<40]), Exit.integrity, "cut inside the header")
    }

    @Test("swapped and duplicated chunks, appended bytes", arguments: [1, 2])
    func reordering(version: Int) throws {
        let sample = try Sample(version: version)
        func chunk(_ k: Int) -> ArraySlice<UInt8> {
            sample.bytes[(sample.payloadStart + k * sample.sealedChunk)..<min(sample.bytes.count, sample.payloadStart + (k + 1) * sample.sealedChunk)]
        }
        let head = Array(sample.bytes[..<sample.payloadStart])
        try sample.expectRejected(head + chunk(1) + chunk(0) + chunk(2) + chunk(3), Exit.integrity, "chunks 0 and 1 swapped")
        try sample.expectRejected(head + chunk(0) + chunk(2) + chunk(1) + chunk(3), Exit.integrity, "chunks 1 and 2 swapped")
        try sample.expectRejected(head + chunk(0) + chunk(0) + chunk(1) + chunk(2) + chunk(3), Exit.integrity, "chunk 0 duplicated")
        try sample.expectRejected(head + chunk(0) + chunk(1) + chunk(2) + chunk(2) + chunk(3), Exit.integrity, "chunk 2 duplicated")
        try sample.expectRejected(head + chunk(0) + chunk(1) + chunk(2), Exit.integrity, "final chunk dropped")
        try sample.expectRejected(sample.bytes + [0], Exit.integrity, "one byte appended")
        try sample.expectRejected(sample.bytes + pseudoRandom(16), Exit.integrity, "16 bytes appended")
        try sample.expectRejected(sample.bytes + Array(chunk(0)), Exit.integrity, "a whole chunk appended")
    }

    @Test("version 2: damage in the empty slot or the padding is set aside by decrypt (warning) and fails verify")
    func slotDamage() throws {
        let sample = try Sample(version: 2)
        for (what, at) in [("padding of the slot in use", sample.macEnd + 5), ("the empty slot", sample.leadLength + sample.slotSize + 7)] {
            var damaged = sample.bytes
            damaged[at] ^= 0x41
            let path = try sample.dir.write(damaged, "slot.cof")
            let decrypted = try coffer(["decrypt", "--key-file", sample.key, path])
            if at < sample.leadLength + sample.slotSize {
                // Bytes after the text in the slot in use: that slot no longer parses, and the
                // other is empty, so nothing opens.
                #expect(decrypted.status == Exit.integrity, "\(what): \(decrypted.stderr)")
            } else {
                #expect(decrypted.status == Exit.ok, "\(what): \(decrypted.stderr)")
                #expect(decrypted.stdout == Self.plaintext)
                #expect(decrypted.stderr.contains("header slot 2 is damaged"))
            }
            let verify = try coffer(["verify", "--key-file", sample.key, path])
            #expect(verify.status == Exit.integrity, "\(what): verify \(verify.stderr)")
        }
        // A lead line whose size does not match where the slots are: refused.
        var damaged = sample.bytes
        damaged[sample.leadLength - 2] = damaged[sample.leadLength - 2] == UInt8(ascii: "4") ? UInt8(ascii: "0") : UInt8(ascii: "4")
        try sample.expectRejected(damaged, Exit.integrity, "slot size changed")
    }

    @Test("a file whose payload is an exact number of chunks detects a cut final chunk and appended data")
    func exactMultiple() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let input = try dir.write(pseudoRandom(2 * 4096), "in")
        #expect(try coffer(["encrypt", "--key-file", key, "--chunk-size", "4K", "-o", dir.file("f.cof"), input]).status == 0)
        let bytes = try dir.read("f.cof")
        let oneChunk = Array(bytes.dropLast(4096 + 16))
        for damaged in [oneChunk, bytes + Array(bytes.suffix(4096 + 16))] {
            let path = try dir.write(damaged, "d.cof")
            let result = try coffer(["decrypt", "--key-file", key, "-o", dir.file("out"), path])
            #expect(result.status == Exit.integrity, "\(result.stderr)")
            #expect(dir.absent("out"))
            let piped = try coffer(["decrypt", "--key-file", key], stdin: damaged)
            #expect(piped.status == Exit.integrity, "\(piped.stderr)")
        }
        #expect(try coffer(["decrypt", "--key-file", key], stdin: oneChunk).stderr.contains("not the final chunk"))
        #expect(try coffer(["decrypt", "--key-file", key], stdin: bytes + Array(bytes.suffix(4096 + 16)))
            .stderr.contains("after the final chunk"))
    }
}
