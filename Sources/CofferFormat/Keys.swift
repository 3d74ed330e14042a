import Foundation

/// Something that can wrap a file key into a stanza: a key file, a passphrase, a public key, a KMS key.
public protocol Recipient: Sendable {
    func wrap(_ fileKey: FileKey) throws -> Stanza
}

/// Something that can unwrap a file key from a stanza.
public protocol Identity: Sendable {
    /// Returns the file key when this stanza was made for this identity, nil when the stanza is
    /// of another type or for another key, and throws when the stanza is of this identity's type
    /// but malformed.
    func unwrap(_ stanza: Stanza) throws -> FileKey?
    /// How a user would name this identity in a message ("key file 3f2a…").
    var label: String { get }
}

/// Describes a stanza for messages: which key a stanza needs ("key file 3f2a…", "a passphrase").
/// Key types register a describer so the format layer can name stanzas it does not implement.
public enum StanzaDescriptions {
    nonisolated(unsafe) private static var describers: [String: @Sendable (Stanza) -> String] = [:]
    private static let lock = NSLock()

    public static func register(type: String, _ describe: @escaping @Sendable (Stanza) -> String) {
        lock.withLock { describers[type] = describe }
    }

    public static func describe(_ stanza: Stanza) -> String {
        let describer = lock.withLock { describers[stanza.type] }
        return describer?(stanza) ?? "a '\(stanza.type)' key"
    }
}

/// Unwraps the file key from a header with the first identity that opens one of its stanzas,
/// then checks the header MAC with it.
public enum HeaderOpener {
    public static func open(_ header: Header, with identities: [Identity]) throws -> FileKey {
        for identity in identities {
            for stanza in header.stanzas {
                if let key = try identity.unwrap(stanza) {
                    try header.verifyMAC(fileKey: key)
                    return key
                }
            }
        }
        var needed: [String] = []
        for stanza in header.stanzas {
            let d = StanzaDescriptions.describe(stanza)
            if !needed.contains(d) { needed.append(d) }
        }
        throw CofferError.noMatchingKey(needed: needed, tried: identities.map(\.label))
    }
}
