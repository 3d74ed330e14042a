/// The keys given do not open a file, or its signers are not the ones required: what the format
/// itself decides about keys. The format knows headers, stanzas, identities and signers — not
/// key files, passphrases or where keys come from (those errors are `KeyError`, in CofferKeys).
/// Every case is in the ``ErrorCategory/key`` category.
public enum AccessError: CategorizedError, Equatable {
    /// No identity given opens any stanza. `needed` lists what the header was made for, `tried`
    /// the identities given.
    case noMatchingKey(needed: [String], tried: [String])
    /// A file or header is to be written with no recipient (no stanza): nobody could open it.
    case noRecipient(String)
    /// An identity unwrapped a file key of the wrong length.
    case wrongFileKeyLength(expected: Int, got: Int)
    /// Signers were required but the file is unsigned (`found` empty) or signed only by keys not
    /// in the accepted list. `accepted` may end with a note in parentheses.
    case signerNotAccepted(found: [String], accepted: [String])

    public var category: ErrorCategory { .key }

    public var description: String {
        switch self {
        case .noMatchingKey(let needed, let tried):
            let want = needed.isEmpty ? "no stanza this version understands" : needed.joined(separator: ", ")
            let gave = tried.isEmpty ? "no key" : tried.joined(separator: ", ")
            return "no key given opens this file; it opens with: \(want); you gave: \(gave)"
        case .noRecipient(let reason):
            return reason
        case .wrongFileKeyLength(let expected, let got):
            return "a file key is \(expected) bytes, got \(got)"
        case .signerNotAccepted(let found, let accepted):
            let want = accepted.joined(separator: ", ")
            if found.isEmpty { return "the file is not signed; a signature by \(want) is required" }
            return "the file is signed by \(found.joined(separator: ", ")), not by an accepted signer (\(want))"
        }
    }
}
