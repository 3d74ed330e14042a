/// The two protocols every key type implements, in the style of age (age.go: `Recipient.Wrap`,
/// `Identity.Unwrap`). Coffer files and age files use the same ones: the file key is whatever
/// length its format has (Coffer's 32 bytes, age's 16), and a key type that exists in both formats
/// (X25519, post-quantum) is one type. The key types themselves live in CofferKeys, one file each.

/// Something that can wrap a file key into stanzas: a key file, a passphrase, a public key, a KMS key.
public protocol Recipient: Sendable {
    /// Wraps `fileKey` (of any length) into the stanzas that let this recipient's identity
    /// recover it; throws when this recipient cannot wrap a key of that length (the format it
    /// belongs to has no stanza for it).
    func wrap(fileKey: [UInt8]) throws -> [Stanza]
}

/// Something that can unwrap a file key from stanzas.
public protocol Identity: Sendable {
    /// Returns the file key when one of `stanzas` was made for this identity, nil when none is
    /// (other types, other keys), and throws when a stanza of this identity's type is malformed.
    func unwrap(stanzas: [Stanza]) throws -> [UInt8]?
    /// How a user would name this identity in a message ("key file 3f2a…").
    var label: String { get }
    /// Which key `stanza` needs, in words ("key file 3f2a…", "a passphrase"), for the message when
    /// no identity opens a header; nil when this identity does not know the stanza's type. Key
    /// types answer from one compile-time table of every stanza type (CofferKeys' `KeyTypes`), so
    /// any identity can name the stanzas of types the user gave no key for.
    func describe(_ stanza: Stanza) -> String?
}

extension Identity {
    public func describe(_ stanza: Stanza) -> String? { nil }
}

/// Unwraps the file key from a header with the first identity that opens one of its stanzas,
/// then checks the header MAC with it.
public enum HeaderOpener {
    public static func open(_ header: Header, with identities: [Identity]) throws -> FileKey {
        for identity in identities {
            guard let bytes = try identity.unwrap(stanzas: header.stanzas) else { continue }
            guard bytes.count == Limits.fileKeySize else {
                throw CofferError.malformedHeader(
                    "the stanza for \(identity.label) holds a \(bytes.count)-byte file key; Coffer's are \(Limits.fileKeySize) bytes")
            }
            let key = try FileKey(bytes: bytes)
            try header.verifyMAC(fileKey: key)
            return key
        }
        throw AccessError.noMatchingKey(needed: needed(header.stanzas, describedBy: identities),
                                        tried: identities.map(\.label))
    }

    /// What each stanza needs, without repeats, in the words of the first identity that knows its type.
    public static func needed(_ stanzas: [Stanza], describedBy identities: [Identity]) -> [String] {
        var needed: [String] = []
        for stanza in stanzas {
            let description = identities.lazy.compactMap { $0.describe(stanza) }.first ?? "a '\(stanza.type)' key"
            if !needed.contains(description) { needed.append(description) }
        }
        return needed
    }
}

/// A key to decrypt with, passed down before any header is read.
///
/// Most keys are given outright. Some are worth having only for a file that has a stanza they can
/// open, and cost something to make: a passphrase asked for on the terminal, or "every KMS key
/// whose credentials are found". Those are made (the prompt shown, say) only when the header read
/// has a stanza of one of their types, and are not named in "no key opens this file" otherwise.
public enum KeyCandidate {
    case given(Identity)
    case whenHeaderHas(stanzaTypes: Set<String>, make: () throws -> Identity)

    /// The identities that apply to `header`, in the order given; conditional ones are made here.
    public static func identities(_ candidates: [KeyCandidate], for header: Header) throws -> [Identity] {
        let present = Set(header.stanzas.map(\.type))
        var identities: [Identity] = []
        for candidate in candidates {
            switch candidate {
            case .given(let identity):
                identities.append(identity)
            case .whenHeaderHas(let types, let make):
                if !types.isDisjoint(with: present) { identities.append(try make()) }
            }
        }
        return identities
    }
}
