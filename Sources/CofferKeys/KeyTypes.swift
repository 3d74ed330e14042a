import CofferFormat

/// What a key type tells about its stanzas without holding a key: how to name the key a stanza
/// needs, and the key id it carries. Each key type implements it once; ``KeyTypes/all`` lists them.
public protocol StanzaKind {
    /// The stanza types of this key type (`keyfile`; `aws-kms`; …).
    static var stanzaTypes: [String] { get }
    /// Which key `stanza` needs, in words ("key file 3f2a…", "passphrase (scrypt 2^18)").
    static func describe(_ stanza: Stanza) -> String
    /// The key id `stanza` names, shown by `inspect` and taken by `rewrap --remove`; nil for a
    /// stanza that names no key (passphrases, age's anonymous stanzas).
    static func keyID(of stanza: Stanza) -> String?
}

/// A recipient whose stanzas name its key by id.
public protocol NamedRecipient: Recipient {
    var keyID: String { get }
}

/// An identity whose public half can be encrypted to: the public key of a key pair, or a
/// symmetric key file itself (`encrypt -i NAME.key` encrypts to NAME's public key).
public protocol KeyPair: Identity {
    func publicRecipient() throws -> Recipient
}

/// Every key type of this build, in one compile-time table: how each stanza type is named in
/// messages ("no key given opens this file; it opens with: …"), and which key id it carries.
public enum KeyTypes {
    public static let all: [any StanzaKind.Type] = [
        SymmetricKeyFile.self, Passphrase.self, X25519Recipient.self, HybridRecipient.self, RSARecipient.self,
        AWSKMSStanza.self, VaultTransitStanza.self, SSHRecipient.self,
    ]

    /// The key type of a stanza, when this build knows it.
    public static func kind(of stanza: Stanza) -> (any StanzaKind.Type)? {
        all.first { $0.stanzaTypes.contains(stanza.type) }
    }

    /// Which key a stanza needs, in words; "a 'TYPE' key" for a type this build does not know.
    public static func describe(_ stanza: Stanza) -> String {
        kind(of: stanza)?.describe(stanza) ?? "a '\(stanza.type)' key"
    }

    /// The key id a stanza names (`keyfile`, `rsa-oaep`, KMS stanzas, and `X25519`/`mlkem768x25519`
    /// written by Coffer); nil for stanzas that name no key.
    public static func keyID(of stanza: Stanza) -> String? {
        kind(of: stanza)?.keyID(of: stanza)
    }

    /// The key id a recipient's stanzas carry, when it names one.
    public static func keyID(of recipient: Recipient) -> String? {
        (recipient as? any NamedRecipient)?.keyID
    }
}

extension Array where Element == Stanza {
    /// The file key of the first stanza (of those `where` picks) that `unwrap` opens, in header
    /// order; nil when none does. An error `unwrap` throws (a malformed stanza) ends the search.
    func firstFileKey(where pick: (Stanza) -> Bool = { _ in true }, _ unwrap: (Stanza) throws -> [UInt8]?) rethrows -> [UInt8]? {
        for stanza in self where pick(stanza) {
            if let fileKey = try unwrap(stanza) { return fileKey }
        }
        return nil
    }
}
