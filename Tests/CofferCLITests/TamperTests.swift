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
        let headerLength: Int
        var payloadStart: Int { headerLength + 16 }
        var sealedChunk: Int { TamperMatrix.chunk + 16 }

        init() throws {
            key = try dir.keygen()
            let input = try dir.write(TamperMatrix.plaintext, "plain")
            let pw = try dir.write(Array("pw".utf8), "pw")
            let enc = try coffer(["encrypt", "--key-file", key, "--passphrase-file", pw, "--work-factor", "10",
                                  "--chunk-size", "4K", "-o", dir.file("good.cof"), input])
            precondition(enc.status == 0, enc.stderr)
            let sealed = try dir.read("good.cof")
            let marker = Array("\n--- ".utf8)
            let at = (0...(sealed.count - marker.count)).first { sealed[$0..<($0 + marker.count)].elementsEqual(marker) }!
            bytes = sealed
            headerLength = at + marker.count + 43 + 1
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

    @Test("the untouched sample decrypts (the matrix below starts from a good file)")
    func control() throws {
        let sample = try Sample()
        let result = try coffer(["decrypt", "--key-file", sample.key, sample.dir.file("good.cof")])
        #expect(result.status == Exit.ok)
        #expect(result.stdout == Self.plaintext)
        #expect(sample.bytes.count == sample.payloadStart + 4 * 16 + Self.plaintext.count)
    }

    @Test("a bit flip in every header line")
    func headerLines() throws {
        let sample = try Sample()
        var lineStart = 0
        var lineNumber = 0
        while lineStart < sample.headerLength {
            let lineEnd = sample.bytes[lineStart...].firstIndex(of: 0x0A)!
            let line = String(decoding: sample.bytes[lineStart..<lineEnd], as: UTF8.self)
            lineNumber += 1
            defer { lineStart = lineEnd + 1 }
            guard lineEnd > lineStart else { continue }  // an empty final body line has no byte to flip
            // The last character of the line: for the keyfile arg line that is in its salt.
            var damaged = sample.bytes
            damaged[lineEnd - 1] ^= 0x01
            let expected: Int32 = lineNumber == 1 ? Exit.format : Exit.integrity
            try sample.expectRejected(damaged, expected, "flip in header line \(lineNumber) '\(line)'")
        }
        #expect(lineNumber >= 9)
        // Flipping the key id itself makes the stanza name a key nobody has: a key error naming that id.
        let text = String(decoding: sample.bytes[0..<sample.headerLength], as: UTF8.self)
        let idStart = text.range(of: "-> keyfile ")!.upperBound
        let offset = text.utf8.distance(from: text.startIndex, to: idStart)
        var damaged = sample.bytes
        damaged[offset] = damaged[offset] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
        try sample.expectRejected(damaged, Exit.key, "key id changed", message: "opens with: key file")
    }

    @Test("a removed, duplicated or reordered stanza")
    func stanzas() throws {
        let sample = try Sample()
        let text = String(decoding: sample.bytes[0..<sample.headerLength], as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let keyfile = lines.firstIndex { $0.hasPrefix("-> keyfile") }!
        let scrypt = lines.firstIndex { $0.hasPrefix("-> scrypt") }!
        let mac = lines.firstIndex { $0.hasPrefix("---") }!
        let keyStanza = Array(lines[keyfile..<scrypt])
        let pwStanza = Array(lines[scrypt..<mac])
        let rest = Array(sample.bytes[sample.headerLength...])
        func rebuild(_ stanzas: [String]) -> [UInt8] {
            Array((Array(lines[..<keyfile]) + stanzas + [lines[mac]]).joined(separator: "\n").utf8) + [0x0A] + rest
        }
        try sample.expectRejected(rebuild(keyStanza), Exit.integrity, "passphrase stanza removed")
        try sample.expectRejected(rebuild(pwStanza + keyStanza), Exit.integrity, "stanzas reordered")
        try sample.expectRejected(rebuild(keyStanza + pwStanza + pwStanza), Exit.integrity, "stanza duplicated")
    }

    @Test("a bit flip in the MAC, the payload nonce, and each chunk")
    func payloadFlips() throws {
        let sample = try Sample()
        var damaged = sample.bytes
        // A different but valid base64 letter in the middle of the MAC: it parses, and must not verify.
        let at = sample.headerLength - 20
        damaged[at] = damaged[at] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        try sample.expectRejected(damaged, Exit.integrity, "MAC changed", message: "header authentication failed")
        damaged = sample.bytes
        damaged[sample.headerLength - 2] ^= 0x02
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

    @Test("truncation at every chunk boundary and mid-chunk, inside the header and the nonce")
    func truncation() throws {
        let sample = try Sample()
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

    @Test("swapped and duplicated chunks, appended bytes")
    func reordering() throws {
        let sample = try Sample()
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
            #expect(!dir.exists("out"))
            let piped = try coffer(["decrypt", "--key-file", key], stdin: damaged)
            #expect(piped.status == Exit.integrity, "\(piped.stderr)")
        }
        #expect(try coffer(["decrypt", "--key-file", key], stdin: oneChunk).stderr.contains("not the final chunk"))
        #expect(try coffer(["decrypt", "--key-file", key], stdin: bytes + Array(bytes.suffix(4096 + 16)))
            .stderr.contains("after the final chunk"))
    }
}
