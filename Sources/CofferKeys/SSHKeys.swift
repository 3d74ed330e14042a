import CofferFormat
import Crypto
import Foundation

/// OpenSSH keys, as age accepts them (`age -R ~/.ssh/id_ed25519.pub`, `age -d -i ~/.ssh/id_ed25519`).
/// They open and make age files only (CofferInterop's `ssh-ed25519` stanza); Coffer's own files
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
        guard bytes.count - offset >= 4 else { throw CofferError.invalidKey("the SSH key is cut short") }
        defer { offset += 4 }
        return bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    mutating func string() throws -> [UInt8] {
        let count = Int(try uint32())
        guard bytes.count - offset >= count else { throw CofferError.invalidKey("the SSH key is cut short") }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    static func appendString(_ value: [UInt8], to out: inout [UInt8]) {
        let n = UInt32(value.count)
        out += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
        out += value
    }
}

/// An SSH public key to encrypt age files to.
public struct SSHRecipient: Recipient {
    public let type: String
    /// The key's SSH wire encoding (what the authorized_keys line holds in base64).
    public let wire: [UInt8]
    /// For ssh-ed25519: the 32-byte Ed25519 public key.
    public let ed25519PublicKey: [UInt8]?

    /// Parses an authorized_keys line: `TYPE BASE64 [comment]`.
    public init(line: String) throws {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, let wire = Data(base64Encoded: String(words[1])).map({ [UInt8]($0) }) else {
            throw CofferError.invalidKey("not an SSH public key line ('ssh-ed25519 AAAA…')")
        }
        try self.init(wire: wire)
        guard type == String(words[0]) else { throw CofferError.invalidKey("the SSH public key's type and data disagree") }
    }

    /// Parses a public key's SSH wire encoding.
    public init(wire: [UInt8]) throws {
        var reader = SSHWire(wire)
        let type = String(decoding: try reader.string(), as: UTF8.self)
        switch type {
        case SSHKey.ed25519Type:
            let key = try reader.string()
            guard key.count == 32, reader.offset == wire.count else { throw CofferError.invalidKey("an ssh-ed25519 key is 32 bytes") }
            ed25519PublicKey = key
        case SSHKey.rsaType:
            ed25519PublicKey = nil
        default:
            throw CofferError.invalidKey("SSH keys of type \(type) cannot be used (ssh-ed25519 can)")
        }
        self.type = type
        self.wire = wire
    }

    /// Coffer files have no SSH stanza: SSH keys make age files (`--format age`).
    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        throw CofferError.invalidKey("SSH keys encrypt age files only: add --format age, or use an age1… key for Coffer files")
    }
}

/// An OpenSSH private key, to open age files made for its public key.
public struct SSHIdentity: Identity {
    public let type: String
    /// The public key's SSH wire encoding.
    public let publicWire: [UInt8]
    /// For ssh-ed25519: the 32-byte seed the key pair comes from.
    public let ed25519Seed: [UInt8]?

    /// Parses an unencrypted `-----BEGIN OPENSSH PRIVATE KEY-----` block.
    public init(pem: String, source: String) throws {
        let body = pem.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("-----") }.joined()
        guard let data = Data(base64Encoded: body).map({ [UInt8]($0) }), data.starts(with: SSHKey.privateKeyMagic) else {
            throw CofferError.invalidKey("\(source): not an OpenSSH private key (openssh-key-v1)")
        }
        var reader = SSHWire(Array(data.dropFirst(SSHKey.privateKeyMagic.count)))
        let cipher = String(decoding: try reader.string(), as: UTF8.self)
        _ = try reader.string()  // KDF name
        _ = try reader.string()  // KDF options
        guard cipher == "none" else {
            throw CofferError.invalidKey("\(source): the SSH key is protected by a passphrase, which Coffer cannot open; make an unprotected copy with 'ssh-keygen -p -N \"\" -f COPY'")
        }
        guard try reader.uint32() == 1 else { throw CofferError.invalidKey("\(source): an OpenSSH file with several keys") }
        let publicWire = try reader.string()
        var secret = SSHWire(try reader.string())
        guard try secret.uint32() == (try secret.uint32()) else {
            throw CofferError.invalidKey("\(source): the OpenSSH key's check numbers differ (damaged or encrypted)")
        }
        let type = String(decoding: try secret.string(), as: UTF8.self)
        switch type {
        case SSHKey.ed25519Type:
            let publicKey = try secret.string()
            let pair = try secret.string()  // seed || public key
            guard publicKey.count == 32, pair.count == 64, Array(pair[32...]) == publicKey,
                  publicWire == SSHKey.ed25519Wire(publicKey: publicKey) else {
                throw CofferError.invalidKey("\(source): a damaged ssh-ed25519 private key")
            }
            ed25519Seed = Array(pair[0..<32])
        case SSHKey.rsaType:
            ed25519Seed = nil
        default:
            throw CofferError.invalidKey("\(source): SSH keys of type \(type) cannot be used (ssh-ed25519 can)")
        }
        self.type = type
        self.publicWire = publicWire
    }

    public var label: String { "\(type) key" }

    /// The public half, to encrypt age files to.
    public func recipient() throws -> SSHRecipient { try SSHRecipient(wire: publicWire) }

    /// Coffer files have no SSH stanza; SSH keys open age files.
    public func unwrap(_ stanza: Stanza) throws -> FileKey? { nil }
}
