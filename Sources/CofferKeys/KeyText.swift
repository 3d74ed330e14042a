import CofferFormat
import Crypto
import Foundation

/// The items of a key text: one key a line, `#` comments and blank lines ignored, PEM blocks
/// (`-----BEGIN …-----` to `-----END …-----`) kept whole. Lines may end in LF or CRLF.
enum KeyTextItems {
    struct Item {
        let text: String
        let line: Int
        var isPEM: Bool { text.hasPrefix("-----BEGIN ") }
    }

    static func split(_ content: String, source: String) throws -> [Item] {
        var items: [Item] = []
        var pem: [Substring] = []
        var pemStart = 0
        for (index, raw) in content.split(omittingEmptySubsequences: false,
                                          whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            var line = raw
            while let last = line.last, last == "\r" || last == " " || last == "\t" { line.removeLast() }
            while let first = line.first, first == " " || first == "\t" { line.removeFirst() }
            if !pem.isEmpty {
                pem.append(line)
                if line.hasPrefix("-----END ") {
                    items.append(Item(text: pem.joined(separator: "\n") + "\n", line: pemStart))
                    pem = []
                }
                continue
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("-----BEGIN ") {
                pem = [line]
                pemStart = index + 1
                continue
            }
            items.append(Item(text: String(line), line: index + 1))
        }
        guard pem.isEmpty else {
            throw KeyError.invalid("\(source), line \(pemStart): a PEM block that never ends (no '-----END …-----' line)")
        }
        return items
    }
}

/// Recipients as users write them: `age1…` (X25519), `age1pq1…` (post-quantum hybrid), a PEM
/// RSA public key, or an SSH public key line (age files only); and recipients files holding any number of these.
public enum RecipientText {
    public static func parse(_ text: String, source: String) throws -> Recipient {
        if text.hasPrefix("-----BEGIN ") { return try RSARecipient(pem: text) }
        if text.hasPrefix(SSHKey.ed25519Type + " ") || text.hasPrefix(SSHKey.rsaType + " ") { return try SSHRecipient(line: text) }
        if text.hasPrefix(HybridRecipient.recipientHRP + "1") { return try HybridRecipient(encoded: text) }
        if text.hasPrefix(AgeKeyEncoding.recipientPrefix + "1") {
            return X25519Recipient(publicKey: try AgeKeyEncoding.parseRecipient(text))
        }
        if text.hasPrefix("AGE-SECRET-KEY-") || text.contains("PRIVATE KEY") {
            throw KeyError.privateKeyAsRecipient(source: source)
        }
        throw KeyError.invalid(
            "\(source): '\(text.prefix(16))…' is not a recipient (expected age1…, age1pq1…, or a PEM RSA public key)")
    }

    /// A recipients file: one recipient a line (PEM blocks span lines), `#` comments.
    public static func parseFile(_ content: String, source: String) throws -> [Recipient] {
        let items = try KeyTextItems.split(content, source: source)
        guard !items.isEmpty else { throw KeyError.invalid("\(source) holds no recipient") }
        return try items.map { try parse($0.text, source: "\(source), line \($0.line)") }
    }
}

/// Identity files: `AGE-SECRET-KEY-1…` (X25519, as `age-keygen` writes them), `AGE-SECRET-KEY-PQ-1…`,
/// PEM RSA private keys (PKCS#8 or PKCS#1), OpenSSH private keys (for age files), and
/// `COFFER-SYMMETRIC-KEY-V1:` lines; several per file, `#` comments.
public enum IdentityText {
    public static func parse(_ content: String, source: String) throws -> [Identity] {
        let items = try KeyTextItems.split(content, source: source)
        guard !items.isEmpty else { throw KeyError.invalid("\(source) holds no identity") }
        return try items.map { item in
            let place = "\(source), line \(item.line)"
            if item.isPEM {
                if item.text.contains("PUBLIC KEY") {
                    throw KeyError.invalid("\(place) is a public key; decrypting needs the private key")
                }
                if item.text.hasPrefix("-----BEGIN OPENSSH PRIVATE KEY-----") { return try SSHIdentity(pem: item.text, source: place) }
                return try RSAIdentity(pem: item.text)
            }
            if item.text.hasPrefix(HybridRecipient.identityHRP + "1") { return try HybridIdentity(encoded: item.text) }
            if item.text.hasPrefix(AgeKeyEncoding.identityPrefix + "1") {
                return X25519Identity(privateKey: try AgeKeyEncoding.parseIdentity(item.text))
            }
            if item.text.hasPrefix(SymmetricKeyFile.textPrefix) {
                return try SymmetricKeyFile.parse(Array(item.text.utf8), source: place)
            }
            if item.text.hasPrefix("age1") {
                throw KeyError.invalid("\(place) is a public key (age1…); decrypting needs the private key file")
            }
            throw KeyError.invalid("\(place) is not an identity (expected AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…, or a PEM private key)")
        }
    }
}
