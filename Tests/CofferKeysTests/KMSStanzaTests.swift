import CofferFormat
@testable import CofferKeys
import CofferCloud
import Foundation
import Testing

/// KMS stanzas without a server: grammar, key ids, URIs, descriptions.
@Suite("KMS stanzas")
struct KMSStanzaTests {
    static let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    static let wrapID = String(repeating: "ab", count: 16)
    static let aws = Stanza(type: "aws-kms", arguments: ["eu-west-1", arn, wrapID], body: [1, 2, 3])
    static let vault = Stanza(type: "vault-transit", arguments: ["https://vault.example:8200", "transit", "kek", "3", wrapID],
                              body: [4, 5, 6])

    @Test("URIs, key ids and descriptions; a rotated Vault key keeps its key id")
    func naming() {
        #expect(KMSStanza.uri(of: Self.aws) == "aws-kms:///\(Self.arn)?REGION=eu-west-1")
        #expect(KMSStanza.uri(of: Self.vault) == "vault:///kek?ADDR=https://vault.example:8200&MOUNT=transit")
        #expect(KeyTypes.describe(Self.aws) == "AWS KMS key \(Self.arn) (eu-west-1)")
        #expect(KeyTypes.describe(Self.vault) == "Vault Transit key transit/kek v3 at https://vault.example:8200")
        let id = KeyTypes.keyID(of: Self.vault)
        #expect(id?.count == 16)
        var rotated = Self.vault
        rotated.arguments[3] = "4"
        rotated.body = [9]
        #expect(KeyTypes.keyID(of: rotated) == id)
        #expect(KeyTypes.keyID(of: Self.aws) != id)
        // The URI a stanza gives parses back.
        #expect((try? KMSRecipient(parsing: KMSStanza.uri(of: Self.aws)!)) != nil)
    }

    @Test("malformed stanzas are refused", arguments: [
        Stanza(type: "aws-kms", arguments: ["eu-west-1", arn], body: [1]),
        Stanza(type: "aws-kms", arguments: ["eu-west-1", "alias/x", wrapID], body: [1]),
        Stanza(type: "aws-kms", arguments: ["eu-west-1", arn, "xyz"], body: [1]),
        Stanza(type: "aws-kms", arguments: ["eu-west-1", arn, wrapID], body: []),
        Stanza(type: "vault-transit", arguments: ["https://v", "transit", "kek", "0", wrapID], body: [1]),
        Stanza(type: "vault-transit", arguments: ["https://v", "transit", "kek", "03", wrapID], body: [1]),
        Stanza(type: "vault-transit", arguments: ["https://v", "transit", "kek", wrapID], body: [1]),
    ])
    func malformed(stanza: Stanza) {
        #expect(throws: CofferError.self) { try KMSIdentity(uris: [], environment: [:]).unwrap(stanzas: [stanza]) }
    }

    @Test("an identity given URIs of other keys leaves the stanza alone, without a call")
    func otherKeys() throws {
        let identity = KMSIdentity(uris: [try KMSKeyURI.parse("aws:///alias/x?REGION=us-east-1"),
                                          try KMSKeyURI.parse("vault:///other?ADDR=http://127.0.0.1:1")],
                                   environment: [:])
        #expect(try identity.unwrap(stanzas: [Self.aws]) == nil)
        #expect(try identity.unwrap(stanzas: [Self.vault]) == nil)
        #expect(identity.attempts.isEmpty)
        #expect(try identity.unwrap(stanzas: [Stanza(type: "X25519", arguments: ["x"], body: [])]) == nil)
    }

    @Test("without credentials the attempt is recorded, once per stanza")
    func noCredentials() throws {
        let identity = KMSIdentity(uris: [], environment: ["HOME": "/nonexistent"])
        #expect(try identity.unwrap(stanzas: [Self.aws]) == nil)
        #expect(try identity.unwrap(stanzas: [Self.aws]) == nil)
        #expect(identity.attempts.count == 1)
        #expect(identity.attempts[0].contains("no AWS credentials"))
        #expect(identity.label.contains("no AWS credentials"))
    }

    @Test("a malformed --kms value is a usage error naming the part")
    func badURI() {
        do {
            _ = try KMSRecipient(parsing: "vault:///k?ADDR=http://x&TOKEN=s3cret")
            Issue.record("accepted")
        } catch let error as CofferError {
            #expect(error.category == .usage)
            #expect("\(error)".contains("parameter TOKEN"))
        } catch {
            Issue.record("\(error)")
        }
    }
}
