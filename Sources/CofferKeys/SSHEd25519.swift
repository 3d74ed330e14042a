import CofferFormat
import Crypto
import Foundation

/// OpenSSH keys, as age accepts them (`age -R ~/.ssh/id_ed25519.pub`, `age -d -i ~/.ssh/id_ed25519`).
/// They open and make age files only (age's `ssh-ed25519` stanza, below); Coffer's own files
/// use age1… keys.
///
/// Public keys are authorized_keys lines (`ssh-ed25519 AAAA… comment`); private keys are
/// unencrypted `openssh-key-v1` PEM blocks (`ssh-keygen -p -N ''` removes a passphrase).
public enum SSHKey {
    public static let ed25519Type = "ssh-ed25519"
    public static let rsaType = "ssh-rsa"
    static let privateKeyMagic = Array("openssh-key-v1".utf8) + [0]

    /// The SSH wire encoding of an Ed25519 public key: string "ssh-ed25519", string key.
    public static func ed25519Wire(publicKey: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        SSHWire.appendString(Array(ed25519Type.utf8), to: &out)
        SSHWire.appendString(publicKey, to: &out)
        return out
    }
}

/// Reads SSH's length-prefixed wire fields.
struct SSHWire {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func uint32() throws -> UInt32 {
        guard bytes.count - offset >= 4 else { throw KeyError.invalid("the SSH key is cut short") }
        defer { offset += 4 }
        return bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    mutating func string() throws -> [UInt8] {
        let count = Int(try uint32())
        guard bytes.count - offset >= count else { throw KeyError.invalid("the SSH key is cut short") }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    static func appendString(_ value: [UInt8], to out: inout [UInt8]) {
        let n = UInt32(value.count)
        out += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
        out += value
    }
}

/// age's `ssh-ed25519` stanza (FiloSottile/age agessh; AGE-FORMAT.md §1.11):
///
/// ```
/// -> ssh-ed25519 TAG SHARE           ; TAG = base64(SHA-256(ssh wire public key)[:4])
/// pk_M     = the Ed25519 public key in Montgomery form (X25519)
/// ss       = X25519(ephemeral, pk_M)                  ; SHARE = X25519(ephemeral, 9)
/// tweak    = HKDF-SHA-256(ikm: "", salt: ssh wire public key, info: LABEL)   ; the key is the salt (agessh.go)
/// wrap key = HKDF-SHA-256(ikm: X25519(tweak, ss), salt: SHARE || pk_M, info: LABEL)
/// body     = ChaCha20-Poly1305(wrap key, 12 zero bytes, file key)
/// LABEL    = "age-encryption.org/v1/ssh-ed25519"
/// ```
/// The identity's X25519 key is SHA-512(seed)[:32], whose public half is pk_M.
enum AgeSSHEd25519 {
    static let stanzaType = "ssh-ed25519"
    static let label = Array("age-encryption.org/v1/ssh-ed25519".utf8)

    static func tag(wire: [UInt8]) -> String { RawBase64.encode(Array(SHA256.hash(data: wire)).prefix(4)) }

    static func tweak(wire: [UInt8]) -> Curve25519.KeyAgreement.PrivateKey {
        let bytes = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: [UInt8]()), salt: wire, info: label,
                                           outputByteCount: 32).withUnsafeBytes { Array($0) }
        return try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes)
    }

    static func wrappingKey(shared: SharedSecret, wire: [UInt8], share: [UInt8], recipient: [UInt8]) -> SymmetricKey? {
        guard let tweaked = WrapAEAD.sharedSecret(tweak(wire: wire), shared.withUnsafeBytes { Array($0) }) else { return nil }
        return tweaked.hkdfDerivedSymmetricKey(using: SHA256.self, salt: share + recipient, sharedInfo: label, outputByteCount: 32)
    }
}

/// An SSH public key to encrypt age files to.
public struct SSHRecipient: Recipient, StanzaKind {
    public static let stanzaTypes = [SSHKey.ed25519Type, SSHKey.rsaType]
    public let type: String
    /// The key's SSH wire encoding (what the authorized_keys line holds in base64).
    public let wire: [UInt8]
    /// For ssh-ed25519: the 32-byte Ed25519 public key.
    public let ed25519PublicKey: [UInt8]?

    /// Parses an authorized_keys line: `TYPE BASE64 [comment]`.
    public init(line: String) throws {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, let wire = Data(base64Encoded: String(words[1])).map({ [UInt8]($0) }) else {
            throw KeyError.invalid("not an SSH public key line ('ssh-ed25519 AAAA…')")
        }
        try self.init(wire: wire)
        guard type == String(words[0]) else { throw KeyError.invalid("the SSH public key's type and data disagree") }
    }

    /// Parses a public key's SSH wire encoding.
    public init(wire: [UInt8]) throws {
        var reader = SSHWire(wire)
        let type = String(decoding: try reader.string(), as: UTF8.self)
        switch type {
        case SSHKey.ed25519Type:
            let key = try reader.string()
            guard key.count == 32, reader.offset == wire.count else { throw KeyError.invalid("an ssh-ed25519 key is 32 bytes") }
            ed25519PublicKey = key
        case SSHKey.rsaType:
            ed25519PublicKey = nil
        default:
            throw KeyError.invalid("SSH keys of type \(type) cannot be used (ssh-ed25519 can)")
        }
        self.type = type
        self.wire = wire
    }

    /// Wraps age's 16-byte file key in age's `ssh-ed25519` stanza. Coffer files have no SSH stanza,
    /// and ssh-rsa stanzas need RSA-OAEP with a label, which swift-crypto cannot set.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        guard fileKey.count == WrapAEAD.ageFileKeySize else {
            throw KeyError.ageFilesOnly("SSH keys")
        }
        guard let edwards = ed25519PublicKey else {
            throw KeyError.invalid("ssh-rsa recipients are not supported: age wraps with RSA-OAEP under the label 'age-encryption.org/v1/ssh-rsa', which swift-crypto's RSA-OAEP cannot set; use an ssh-ed25519 or age1… key")
        }
        guard let u = Ed25519Conversion.montgomeryU(edwardsY: edwards),
              let montgomery = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: u) else {
            throw KeyError.invalid("the ssh-ed25519 key is not a usable curve point")
        }
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = Array(ephemeral.publicKey.rawRepresentation)
        let recipient = Array(montgomery.rawRepresentation)
        guard let shared = WrapAEAD.sharedSecret(ephemeral, recipient),
              let key = AgeSSHEd25519.wrappingKey(shared: shared, wire: wire, share: share, recipient: recipient) else {
            throw KeyError.invalid("the ssh-ed25519 key is a low-order point")
        }
        return [Stanza(type: AgeSSHEd25519.stanzaType, arguments: [AgeSSHEd25519.tag(wire: wire), RawBase64.encode(share)],
                       body: try WrapAEAD.seal(fileKey, key: key))]
    }

    public static func describe(_ stanza: Stanza) -> String { "\(stanza.type) key \(stanza.arguments.first ?? "?")" }
    public static func keyID(of stanza: Stanza) -> String? { nil }
}

/// An OpenSSH private key, to open age files made for its public key.
public struct SSHIdentity: KeyPair {
    public let type: String
    /// The public key's SSH wire encoding.
    public let publicWire: [UInt8]
    /// For ssh-ed25519: the 32-byte seed the key pair comes from.
    public let ed25519Seed: [UInt8]?

    /// Parses an unencrypted `-----BEGIN OPENSSH PRIVATE KEY-----` block.
    public init(pem: String, source: String) throws {
        let body = pem.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("-----") }.joined()
        guard let data = Data(base64Encoded: body).map({ [UInt8]($0) }), data.starts(with: SSHKey.privateKeyMagic) else {
            throw KeyError.invalid("\(source): not an OpenSSH private key (openssh-key-v1)")
        }
        var reader = SSHWire(Array(data.dropFirst(SSHKey.privateKeyMagic.count)))
        let cipher = String(decoding: try reader.string(), as: UTF8.self)
        _ = try reader.string()  // KDF name
        _ = try reader.string()  // KDF options
        guard cipher == "none" else {
            throw KeyError.invalid("\(source): the SSH key is protected by a passphrase, which Coffer cannot open; make an unprotected copy with 'ssh-keygen -p -N \"\" -f COPY'")
        }
        guard try reader.uint32() == 1 else { throw KeyError.invalid("\(source): an OpenSSH file with several keys") }
        let publicWire = try reader.string()
        var secret = SSHWire(try reader.string())
        guard try secret.uint32() == (try secret.uint32()) else {
            throw KeyError.invalid("\(source): the OpenSSH key's check numbers differ (damaged or encrypted)")
        }
        let type = String(decoding: try secret.string(), as: UTF8.self)
        switch type {
        case SSHKey.ed25519Type:
            let publicKey = try secret.string()
            let pair = try secret.string()  // seed || public key
            guard publicKey.count == 32, pair.count == 64, Array(pair[32...]) == publicKey,
                  publicWire == SSHKey.ed25519Wire(publicKey: publicKey) else {
                throw KeyError.invalid("\(source): a damaged ssh-ed25519 private key")
            }
            ed25519Seed = Array(pair[0..<32])
        case SSHKey.rsaType:
            ed25519Seed = nil
        default:
            throw KeyError.invalid("\(source): SSH keys of type \(type) cannot be used (ssh-ed25519 can)")
        }
        self.type = type
        self.publicWire = publicWire
        tag = AgeSSHEd25519.tag(wire: publicWire)
        x25519Key = ed25519Seed.map {
            try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(SHA512.hash(data: $0)).prefix(32))
        }
    }

    /// The stanza tag naming this key: base64(SHA-256(public wire)[:4]).
    let tag: String
    /// The X25519 key of an ssh-ed25519 key: SHA-512(seed)[:32], whose public half is the Montgomery form.
    let x25519Key: Curve25519.KeyAgreement.PrivateKey?

    public var label: String { "\(type) key \(tag)" }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    /// The public half, to encrypt age files to.
    public func recipient() throws -> SSHRecipient { try SSHRecipient(wire: publicWire) }
    public func publicRecipient() throws -> Recipient { try recipient() }

    /// Opens age's `ssh-ed25519` stanzas made for this key. ssh-rsa keys are read but open nothing:
    /// their stanzas need RSA-OAEP with a label, which swift-crypto cannot set.
    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        if stanza.type == SSHKey.rsaType, type == SSHKey.rsaType, stanza.arguments.first == tag {
            throw KeyError.invalid("this file was made for your ssh-rsa key, which Coffer cannot open: age's ssh-rsa stanza uses RSA-OAEP with a label that swift-crypto cannot set; decrypt it with 'age -d'")
        }
        guard stanza.type == AgeSSHEd25519.stanzaType, let x25519Key else { return nil }
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 2 arguments (tag, share)")
        }
        let share = try WrapAEAD.argument(stanza.arguments[1], size: 32, stanzaType: stanza.type, what: "share")
        guard stanza.arguments[0] == tag else { return nil }
        let ours = Array(x25519Key.publicKey.rawRepresentation)
        guard let shared = WrapAEAD.sharedSecret(x25519Key, share),
              let wrapKey = AgeSSHEd25519.wrappingKey(shared: shared, wire: publicWire, share: share, recipient: ours) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share is a low-order point")
        }
        try WrapAEAD.checkBody(stanza, fileKeySizes: [WrapAEAD.ageFileKeySize])
        guard let fileKey = WrapAEAD.open(stanza.body, key: wrapKey) else {
            // The tag names this key, so a stanza that does not open was altered (age fails here too).
            throw CofferError.malformedStanza(type: stanza.type, reason: "the stanza for \(label) does not authenticate: it was altered")
        }
        return fileKey
    }
}
