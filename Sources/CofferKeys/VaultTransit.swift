import CofferCloud
import CofferFormat
import Crypto
import Foundation

/// The `vault-transit` stanza (docs/FORMAT.md, "KMS stanzas"): the file key wrapped by a
/// Vault/OpenBao Transit key that never leaves the server. The stanza records where to find that
/// key again, never a secret:
///
/// ```
/// -> vault-transit ADDR MOUNT KEY VERSION WRAP_ID [NAMESPACE]
/// body = the bytes of the Transit ciphertext vault:vVERSION:BASE64(body)
/// ```
/// Transit's rewrap endpoint does not take associated data, so the context's hash is sealed with
/// the file key instead (plaintext = file key ‖ SHA-256("coffer/v1 vault-transit context" ‖ 0x00 ‖
/// WRAP_ID)) and checked after decrypting. Wrapping and unwrapping go through ``KMSRecipient`` and
/// ``KMSIdentity``, which serve both key services.
public enum VaultTransitStanza: StanzaKind {
    public static let stanzaType = "vault-transit"
    public static let stanzaTypes = [stanzaType]

    struct Fields {
        var address: String, mount: String, key: String, version: Int, wrapID: String, namespace: String?
    }

    static func contextHash(wrapID: String) -> [UInt8] {
        Array(SHA256.hash(data: Array("coffer/v1 vault-transit context".utf8) + [0] + Array(wrapID.utf8)))
    }

    /// Every field is checked before anything is built from it (see ``AWSKMSStanza/parse(_:)``).
    static func parse(_ stanza: Stanza) throws -> Fields {
        func bad(_ reason: String) -> CofferError { .malformedStanza(type: stanza.type, reason: reason) }
        guard (5...6).contains(stanza.arguments.count) else { throw bad("expected ADDR MOUNT KEY VERSION WRAP_ID [NAMESPACE]") }
        let address = stanza.arguments[0], mount = stanza.arguments[1], key = stanza.arguments[2]
        let namespace = stanza.arguments.count == 6 ? stanza.arguments[5] : nil
        do { _ = try HTTPEndpoint(parsing: address) } catch { throw bad("ADDR \(error)") }
        guard KeyURIFields.isPath(mount) else { throw bad("MOUNT must be a path of letters, digits, '-', '.', '_' or '~'") }
        guard HTTPEndpoint.isPathSegment(key) else { throw bad("KEY must be a name of letters, digits, '-', '.', '_' or '~'") }
        if let namespace, !KeyURIFields.isPath(namespace) {
            throw bad("NAMESPACE must be a path of letters, digits, '-', '.', '_' or '~'")
        }
        guard let version = Int(stanza.arguments[3]), version >= 1, String(version) == stanza.arguments[3] else {
            throw bad("VERSION must be a positive decimal number")
        }
        try KMSStanza.checkWrapID(stanza.arguments[4], stanza: stanza)
        guard !stanza.body.isEmpty else { throw bad("empty ciphertext") }
        return Fields(address: address, mount: mount, key: key, version: version, wrapID: stanza.arguments[4], namespace: namespace)
    }

    public static func describe(_ stanza: Stanza) -> String {
        guard let fields = try? parse(stanza) else { return "a '\(stanza.type)' key" }
        return "Vault Transit key \(fields.mount)/\(fields.key) v\(fields.version) at \(fields.address)"
    }

    /// The key id names ADDR/MOUNT/KEY; the version is not part of it: a rotated key is the same key.
    public static func keyID(of stanza: Stanza) -> String? {
        guard let fields = try? parse(stanza) else { return nil }
        return KMSStanza.keyID(type: stanzaType, name: "\(fields.address)/\(fields.mount)/\(fields.key)")
    }

    static func uri(of stanza: Stanza) -> String? {
        guard let fields = try? parse(stanza) else { return nil }
        return "vault:///\(fields.key)?ADDR=\(fields.address)&MOUNT=\(fields.mount)" + (fields.namespace.map { "&NAMESPACE=\($0)" } ?? "")
    }

    static func wrap(_ fileKey: [UInt8], key: VaultKeyURI, environment: [String: String]) async throws(KeyServiceError) -> Stanza {
        let wrapID = KMSStanza.newWrapID()
        let client = try VaultTransitClient(key: key, environment: environment)
        let sealed = try await client.encrypt(fileKey + contextHash(wrapID: wrapID))
        var arguments = [key.address, key.mount, key.key, String(sealed.version), wrapID]
        if let namespace = key.namespace { arguments.append(namespace) }
        return Stanza(type: stanzaType, arguments: arguments, body: sealed.bytes)
    }

    static func unwrap(_ stanza: Stanza, _ fields: Fields, client: VaultTransitClient) async throws(KeyServiceError) -> [UInt8] {
        let plaintext = try await client.decrypt(.init(version: fields.version, bytes: stanza.body))
        let hashSize = 32
        guard plaintext.count > hashSize, Array(plaintext.suffix(hashSize)) == contextHash(wrapID: fields.wrapID) else {
            throw KeyServiceError(.invalidCiphertext, "the Transit plaintext is not this stanza's (its context hash differs)")
        }
        return Array(plaintext.dropLast(hashSize))
    }

    /// The same ciphertext re-encrypted under the key's newest version (Transit's rewrap; the
    /// plaintext never leaves the server), or nil when it already is the newest.
    static func rewrapToNewestVersion(_ stanza: Stanza, _ fields: Fields, client: VaultTransitClient) throws -> Stanza? {
        let old = VaultTransitClient.Ciphertext(version: fields.version, bytes: stanza.body)
        let new: VaultTransitClient.Ciphertext
        do throws(KeyServiceError) {
            new = try BlockingBridge.run { () throws(KeyServiceError) in try await client.rewrap(old) }
        } catch {
            throw KeyError.service(context: "cannot rewrap \(describe(stanza))", cause: error)
        }
        guard new.version != fields.version else { return nil }
        var arguments = stanza.arguments
        arguments[3] = String(new.version)
        return Stanza(type: stanza.type, arguments: arguments, body: new.bytes)
    }

    /// The client for a stanza. Without URIs, only for the address in VAULT_ADDR: a token is a
    /// bearer secret, and a header is not trusted before it is opened.
    static func client(for fields: Fields, uris: [KMSKeyURI], environment: [String: String]) throws -> KMSIdentity.ClientLookup {
        if uris.isEmpty {
            let recorded = try HTTPEndpoint(parsing: fields.address)
            let trusted = environment["VAULT_ADDR"].flatMap { $0.isEmpty ? nil : try? HTTPEndpoint(parsing: $0) }
            guard trusted == recorded else {
                return .failed("not tried: the token is sent only to VAULT_ADDR (\(trusted?.description ?? "unset or not a URL")), and this stanza names \(recorded); give the KMS URI vault:///\(fields.key)?ADDR=\(recorded)&MOUNT=\(fields.mount) to use it")
            }
            let uri = try VaultKeyURI(key: fields.key, server: recorded, mount: fields.mount, namespace: fields.namespace)
            return .found(.vault(try VaultTransitClient(key: uri, environment: environment)))
        }
        for case .vault(let uri) in uris where uri.key == fields.key && uri.mount == fields.mount {
            return .found(.vault(try VaultTransitClient(key: uri, environment: environment)))
        }
        return .none
    }
}
