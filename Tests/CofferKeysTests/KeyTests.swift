@_spi(TestVectors) import CofferFormat
import CofferKeys
import Foundation
import Testing

@Suite struct KeyFiles {
    let key = try! SymmetricKeyFile(keyBytes: Array(0..<32))

    @Test("the text form parses back to the same key, with LF or CRLF line endings and trailing spaces")
    func textForm() throws {
        let text = key.textEncoding()
        #expect(text.contains("# key id: \(key.keyID)"))
        #expect(try SymmetricKeyFile.parse(Array(text.utf8), source: "k") == key)
        let crlf = text.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(try SymmetricKeyFile.parse(Array(crlf.utf8), source: "k") == key)
        let bare = "\(SymmetricKeyFile.textPrefix)\(Hex.encode(key.keyBytes))  \n\n"
        #expect(try SymmetricKeyFile.parse(Array(bare.utf8), source: "k") == key)
        let upper = "\(SymmetricKeyFile.textPrefix)\(Hex.encode(key.keyBytes).uppercased())"
        #expect(try SymmetricKeyFile.parse(Array(upper.utf8), source: "k") == key)
    }

    @Test("32 raw bytes are a key; a raw key with a trailing LF or CRLF is refused with a message naming it")
    func rawForm() throws {
        #expect(try SymmetricKeyFile.parse(key.keyBytes, source: "k") == key)
        #expect(throws: KeyError.self) { try SymmetricKeyFile.parse(key.keyBytes + [0x0A], source: "k") }
        do {
            _ = try SymmetricKeyFile.parse(key.keyBytes + [0x0A], source: "k")
        } catch {
            #expect("\(error)".contains("followed by a line feed"))
        }
        do {
            _ = try SymmetricKeyFile.parse(key.keyBytes + [0x0D, 0x0A], source: "k")
            Issue.record("CRLF raw key accepted")
        } catch {
            #expect("\(error)".contains("CRLF"))
        }
    }

    @Test("a wrong length says what was expected and what was found", arguments: [0, 16, 31, 35, 64])
    func wrongLength(length: Int) {
        do {
            _ = try SymmetricKeyFile.parse(Array(repeating: 0x80, count: length), source: "k")
            Issue.record("accepted \(length) bytes")
        } catch {
            #expect("\(error)".contains("is \(length) bytes"))
            #expect("\(error)".contains("exactly 32 raw bytes"))
        }
    }

    @Test("64 bare hex digits get a hint; a text key with a short hex part is refused")
    func hexHintsAndBadText() {
        do {
            _ = try SymmetricKeyFile.parse(Array((Hex.encode(key.keyBytes) + "\n").utf8), source: "k")
            Issue.record("bare hex accepted")
        } catch {
            #expect("\(error)".contains("looks like 64 hex digits"))
        }
        #expect(throws: KeyError.self) {
            try SymmetricKeyFile.parse(Array("\(SymmetricKeyFile.textPrefix)abcd\n".utf8), source: "k")
        }
        let twoKeys = key.textEncoding() + key.textEncoding()
        #expect(throws: KeyError.self) { try SymmetricKeyFile.parse(Array(twoKeys.utf8), source: "k") }
    }

    @Test("the key id is stable, 16 hex digits, and differs between keys")
    func keyIDs() throws {
        #expect(key.keyID == (try SymmetricKeyFile(keyBytes: Array(0..<32))).keyID)
        #expect(key.keyID.count == 16)
        #expect(key.keyID != SymmetricKeyFile.generate().keyID)
    }

    @Test("wrap then unwrap; another key passes the stanza by; an altered stanza is an error")
    func wrapping() throws {
        let fileKey = FileKey.random()
        let stanza = try key.wrap(fileKey: fileKey.bytes)[0]
        #expect(stanza.type == "keyfile")
        #expect(stanza.arguments[0] == key.keyID)
        #expect(try key.unwrap(stanzas: [stanza]) == fileKey.bytes)
        #expect(try SymmetricKeyFile.generate().unwrap(stanzas: [stanza]) == nil)
        var altered = stanza
        altered.body[3] ^= 1
        #expect(throws: CofferError.self) { _ = try key.unwrap(stanzas: [altered]) }
        var badSalt = stanza
        badSalt.arguments[1] = "short"
        #expect(throws: CofferError.self) { _ = try key.unwrap(stanzas: [badSalt]) }
        #expect(try key.unwrap(stanzas: [Stanza(type: "scrypt", arguments: [], body: [])]) == nil)
    }

    @Test("the wrong key's message names the key the file needs")
    func wrongKeyMessage() throws {
        let header = try Header.sealed(parameters: HeaderParameters(), stanzas: [try key.wrap(fileKey: FileKey.random().bytes)[0]],
                                       fileKey: FileKey.random())
        let other = SymmetricKeyFile.generate()
        #expect(throws: AccessError.noMatchingKey(needed: ["key file \(key.keyID)"], tried: ["key file \(other.keyID)"])) {
            _ = try HeaderOpener.open(header, with: [other])
        }
    }
}

@Suite struct Passphrases {
    @Test("right passphrase opens, wrong one does not; the work factor is recorded in the stanza")
    func wrapping() throws {
        let fileKey = FileKey.random()
        let stanza = try Passphrase(Array("hunter2".utf8), workFactor: 10).wrap(fileKey: fileKey.bytes)[0]
        #expect(stanza.type == "scrypt")
        #expect(stanza.arguments[1] == "10")
        #expect(try Passphrase(Array("hunter2".utf8), workFactor: 10).unwrap(stanzas: [stanza]) == fileKey.bytes)
        #expect(try Passphrase(Array("hunter3".utf8), workFactor: 10).unwrap(stanzas: [stanza]) == nil)
    }

    @Test("work factors above the maximum are refused before any scrypt work")
    func maximumWorkFactor() throws {
        let stanza = Stanza(type: "scrypt", arguments: [RawBase64.encode([UInt8](repeating: 0, count: 16)), "23"],
                            body: [UInt8](repeating: 0, count: 48))
        #expect(throws: KeyError.self) { _ = try Passphrase(Array("x".utf8)).unwrap(stanzas: [stanza]) }
        for bad in ["010", "+9", "0x10", "", "1 0"] {
            var s = stanza
            s.arguments[1] = bad
            #expect(throws: CofferError.self, "work factor '\(bad)'") { _ = try Passphrase(Array("x".utf8)).unwrap(stanzas: [s]) }
        }
        #expect(throws: CofferError.self) { _ = try Passphrase(Array("x".utf8), workFactor: 9) }
        #expect(throws: CofferError.self) { _ = try Passphrase(Array("x".utf8), workFactor: 23) }
        #expect(throws: KeyError.self) { _ = try Passphrase([], workFactor: 10) }
    }

    @Test("one passphrase object derives scrypt once for many files with the same stanza")
    func derivesOnce() throws {
        let writer = try Passphrase(Array("pw".utf8), workFactor: 10)
        let fileKey = FileKey.random()
        let stanza = try writer.wrap(fileKey: fileKey.bytes)[0]
        let reader = try Passphrase(Array("pw".utf8), workFactor: 10)
        for _ in 0..<20 { #expect(try reader.unwrap(stanzas: [stanza]) == fileKey.bytes) }
        #expect(reader.derivations == 1)
        #expect(writer.derivations == 1)
    }

    @Test("a passphrase file's one trailing LF or CRLF is not part of the passphrase; more lines are refused")
    func passphraseFiles() throws {
        #expect(try KeySources.passphrase(fromFileContent: Array("secret\n".utf8), source: "f") == Array("secret".utf8))
        #expect(try KeySources.passphrase(fromFileContent: Array("secret\r\n".utf8), source: "f") == Array("secret".utf8))
        #expect(try KeySources.passphrase(fromFileContent: Array("secret".utf8), source: "f") == Array("secret".utf8))
        #expect(throws: KeyError.self) { _ = try KeySources.passphrase(fromFileContent: Array("a\nb\n".utf8), source: "f") }
        #expect(throws: KeyError.self) { _ = try KeySources.passphrase(fromFileContent: Array("\n".utf8), source: "f") }
    }
}

@Suite struct X25519LowOrder {
    @Test("an X25519 stanza whose share is a low-order point (all-zero shared secret) is refused")
    func lowOrderShare() throws {
        let identity = X25519Identity(privateKey: .init())
        // u = 0 and u = 1 are points of order 4 and 1: X25519 with any key gives all zeros.
        for point in [[UInt8](repeating: 0, count: 32), [1] + [UInt8](repeating: 0, count: 31)] {
            let stanza = Stanza(type: X25519Recipient.stanzaType, arguments: [RawBase64.encode(point)],
                                body: [UInt8](repeating: 0, count: 48))
            #expect(throws: CofferError.self) { try identity.unwrap(stanzas: [stanza]) }
        }
    }
}
