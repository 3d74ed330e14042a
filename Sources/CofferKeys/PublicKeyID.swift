import CofferFormat
import Crypto
import Foundation

/// Key ids of public keys: the first 8 bytes of
/// SHA-256("coffer/v1 public key id" || 0x00 || stanza type || 0x00 || public key bytes), in hex.
/// The type is part of the hash so one key's bytes can never name a key of another type.
public enum PublicKeyID {
    public static func of(type: String, publicKey: some DataProtocol) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("coffer/v1 public key id".utf8) + [0] + Array(type.utf8) + [0])
        hasher.update(data: Array(publicKey))
        return Hex.encode(Array(hasher.finalize()).prefix(8))
    }

    /// A stanza's key-id argument: 16 lower-case hex digits.
    static func check(_ id: String, stanzaType: String) throws {
        guard id.count == 16, id == id.lowercased(), Hex.decode(id) != nil else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "key id must be 16 lower-case hex digits")
        }
    }
}
