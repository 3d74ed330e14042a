import CofferKeys
import Crypto
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct Bech32Encoding {
    @Test("BIP-173 valid strings decode, and re-encode to themselves", arguments: [
        "A12UEL5L", "a12uel5l",
        "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w", "?1ezyfcl",
    ])
    func valid(_ text: String) throws {
        let (hrp, data) = try #require(Bech32.decode(text))
        let again = Bech32.encode(hrp: text == text.uppercased() ? hrp.uppercased() : hrp, data: data)
        #expect(again == text)
    }

    @Test("BIP-173 invalid strings are rejected", arguments: [
        "pzry9x8gf2tvdw0s3jn54khce6mua7l", "x1b4n0q5v", "li1dgmt3", "A1G7SGD8", "10a06t8", "1qzzfhee",
        "de1lg7wt\u{7F}", "A12UEl5l", "a12uel5m",
    ])
    func invalid(_ text: String) {
        #expect(Bech32.decode(text) == nil)
    }
}

@Suite struct AgeKeys {
    /// The identity of the CCTV age test vector `x25519`.
    static let vectorIdentity = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"

    @Test("an age identity parses and encodes back to the same text")
    func identityRoundTrip() throws {
        let key = try AgeKeyEncoding.parseIdentity(Self.vectorIdentity)
        #expect(AgeKeyEncoding.identity(privateKey: key) == Self.vectorIdentity)
        let recipient = AgeKeyEncoding.recipient(publicKey: key.publicKey)
        #expect(recipient.hasPrefix("age1") && recipient.count == 62)
        #expect(try AgeKeyEncoding.parseRecipient(recipient).rawRepresentation == key.publicKey.rawRepresentation)
    }

    @Test("wrong prefix, wrong case, wrong length and a bad checksum are refused")
    func refusals() throws {
        let recipient = AgeKeyEncoding.recipient(publicKey: try AgeKeyEncoding.parseIdentity(Self.vectorIdentity).publicKey)
        #expect(throws: (any Error).self) { try AgeKeyEncoding.parseIdentity(Self.vectorIdentity.lowercased()) }
        #expect(throws: (any Error).self) { try AgeKeyEncoding.parseRecipient(recipient.uppercased()) }
        #expect(throws: (any Error).self) { try AgeKeyEncoding.parseRecipient(Self.vectorIdentity) }
        #expect(throws: (any Error).self) { try AgeKeyEncoding.parseIdentity(recipient) }
        #expect(throws: (any Error).self) { try AgeKeyEncoding.parseRecipient(String(recipient.dropLast()) + "q") }
        #expect(throws: (any Error).self) {
            try AgeKeyEncoding.parseRecipient(Bech32.encode(hrp: "age", data: Array(repeating: 1, count: 31)))
        }
    }

    @Test("keys from the real age-keygen: our recipient for its identity is the one age-keygen -y prints")
    func interopWithAgeKeygen() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/age-keygen") else {
            Issue.record("age-keygen is not installed: scripts/test.sh installs the 'age' package")
            return
        }
        for _ in 0..<3 {
            let path = NSTemporaryDirectory() + "age-\(UUID().uuidString).key"
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(run(["/usr/bin/age-keygen", "-o", path]) != nil)
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let identityLine = try #require(text.split(separator: "\n").first { $0.hasPrefix("AGE-SECRET-KEY-1") })
            let key = try AgeKeyEncoding.parseIdentity(String(identityLine))
            let expected = try #require(run(["/usr/bin/age-keygen", "-y", path]))
            #expect(AgeKeyEncoding.recipient(publicKey: key.publicKey) == expected.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// Runs a command and returns its standard output when it succeeds (popen: the arguments here
    /// are fixed paths with no shell metacharacters).
    func run(_ argv: [String]) -> String? {
        guard let pipe = popen(argv.joined(separator: " ") + " 2>/dev/null", "r") else { return nil }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, pipe)
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        return pclose(pipe) == 0 ? String(decoding: output, as: UTF8.self) : nil
    }
}
