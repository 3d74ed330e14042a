import CofferFormat
import CofferKeys
import Crypto
import Foundation

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
        guard let tweaked = AgeWrap.sharedSecret(tweak(wire: wire), shared.withUnsafeBytes { Array($0) }) else { return nil }
        return tweaked.hkdfDerivedSymmetricKey(using: SHA256.self, salt: share + recipient, sharedInfo: label, outputByteCount: 32)
    }
}

public struct AgeSSHEd25519Recipient: AgeRecipient {
    let wire: [UInt8]
    let montgomery: Curve25519.KeyAgreement.PublicKey

    public init(_ key: SSHRecipient) throws {
        guard let edwards = key.ed25519PublicKey else {
            throw CofferError.invalidKey("ssh-rsa recipients are not supported: age wraps with RSA-OAEP under the label 'age-encryption.org/v1/ssh-rsa', which swift-crypto's RSA-OAEP cannot set; use an ssh-ed25519 or age1… key")
        }
        guard let u = Ed25519Conversion.montgomeryU(edwardsY: edwards) else {
            throw CofferError.invalidKey("the ssh-ed25519 key is not a usable curve point")
        }
        wire = key.wire
        montgomery = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: u)
    }

    public func wrap(_ fileKey: [UInt8]) throws -> Stanza {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = Array(ephemeral.publicKey.rawRepresentation)
        let recipient = Array(montgomery.rawRepresentation)
        guard let shared = AgeWrap.sharedSecret(ephemeral, recipient),
              let key = AgeSSHEd25519.wrappingKey(shared: shared, wire: wire, share: share, recipient: recipient) else {
            throw CofferError.invalidKey("the ssh-ed25519 key is a low-order point")
        }
        return Stanza(type: AgeSSHEd25519.stanzaType, arguments: [AgeSSHEd25519.tag(wire: wire), RawBase64.encode(share)],
                      body: try AgeWrap.seal(fileKey, key: key))
    }
}

/// An OpenSSH private key opening age stanzas. ssh-rsa keys are read but open nothing: their
/// stanzas need RSA-OAEP with a label, which swift-crypto cannot set.
public struct AgeSSHIdentity: AgeIdentity {
    let key: SSHIdentity
    let tag: String
    let privateKey: Curve25519.KeyAgreement.PrivateKey?

    public init(_ key: SSHIdentity) {
        self.key = key
        tag = AgeSSHEd25519.tag(wire: key.publicWire)
        privateKey = key.ed25519Seed.map {
            try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(SHA512.hash(data: $0)).prefix(32))
        }
    }

    public var label: String { "\(key.type) key \(tag)" }

    public func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        if stanza.type == SSHKey.rsaType, key.type == SSHKey.rsaType, stanza.arguments.first == tag {
            throw CofferError.invalidKey("this file was made for your ssh-rsa key, which Coffer cannot open: age's ssh-rsa stanza uses RSA-OAEP with a label that swift-crypto cannot set; decrypt it with 'age -d'")
        }
        guard stanza.type == AgeSSHEd25519.stanzaType, let privateKey else { return nil }
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 2 arguments (tag, share)")
        }
        let share = try AgeWrap.argument(stanza.arguments[1], size: 32, stanzaType: stanza.type, what: "share")
        guard stanza.arguments[0] == tag else { return nil }
        let ours = Array(privateKey.publicKey.rawRepresentation)
        guard let shared = AgeWrap.sharedSecret(privateKey, share),
              let wrapKey = AgeSSHEd25519.wrappingKey(shared: shared, wire: key.publicWire, share: share, recipient: ours) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the share is a low-order point")
        }
        try AgeWrap.checkBody(stanza)
        guard let fileKey = AgeWrap.open(stanza.body, key: wrapKey) else {
            // The tag names this key, so a stanza that does not open was altered (age fails here too).
            throw CofferError.malformedStanza(type: stanza.type, reason: "the stanza for \(label) does not authenticate: it was altered")
        }
        return fileKey
    }
}

/// The Edwards-to-Montgomery map of Curve25519 for public keys: u = (1 + y) / (1 − y) mod p,
/// p = 2^255 − 19. Only this key conversion is here; the X25519 and Ed25519 primitives are swift-crypto's.
/// Numbers are four little-endian 64-bit limbs.
enum Ed25519Conversion {
    typealias Limbs = [UInt64]
    static let p: Limbs = [0xFFFF_FFFF_FFFF_FFED, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF]
    static let one: Limbs = [1, 0, 0, 0]

    /// The Montgomery u (32 bytes, little-endian) of an Ed25519 public key; nil when y = 1 (no u).
    static func montgomeryU(edwardsY encoded: [UInt8]) -> [UInt8]? {
        guard encoded.count == 32 else { return nil }
        var y = limbs(encoded)
        y[3] &= 0x7FFF_FFFF_FFFF_FFFF  // the top bit is the sign of x, not part of y
        y = canonical(y)
        let denominator = sub(one, y)
        guard denominator != [0, 0, 0, 0] else { return nil }
        return bytes(canonical(mul(add(one, y), invert(denominator))))
    }

    static func limbs(_ bytes: [UInt8]) -> Limbs {
        (0..<4).map { i in (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[i * 8 + $1]) << (8 * $1) } }
    }

    static func bytes(_ limbs: Limbs) -> [UInt8] {
        limbs.flatMap { limb in (0..<8).map { UInt8(truncatingIfNeeded: limb >> (8 * $0)) } }
    }

    static func isAtLeastP(_ a: Limbs) -> Bool {
        for i in (0..<4).reversed() where a[i] != p[i] { return a[i] > p[i] }
        return true
    }

    /// a − p while a ≥ p (a < 2^256 < 3p, so at most twice).
    static func canonical(_ a: Limbs) -> Limbs {
        var a = a
        while isAtLeastP(a) {
            var borrow = false
            for i in 0..<4 {
                let (d1, b1) = a[i].subtractingReportingOverflow(p[i])
                let (d2, b2) = d1.subtractingReportingOverflow(borrow ? 1 : 0)
                a[i] = d2
                borrow = b1 || b2
            }
        }
        return a
    }

    /// Adds `value` at limb 0 and carries; returns the carry out of limb 3.
    static func addSmall(_ a: inout Limbs, _ value: UInt64) -> UInt64 {
        var carry = value
        for i in 0..<4 where carry != 0 {
            let (s, o) = a[i].addingReportingOverflow(carry)
            a[i] = s
            carry = o ? 1 : 0
        }
        return carry
    }

    /// Folds a carry c out of 2^256 back in: c · 2^256 ≡ 38c (mod p).
    static func fold(_ a: inout Limbs, carry: UInt64) {
        var c = carry
        while c != 0 { c = addSmall(&a, c &* 38) }
    }

    static func add(_ a: Limbs, _ b: Limbs) -> Limbs {
        var r = a
        var carry: UInt64 = 0
        for i in 0..<4 {
            let (s1, o1) = r[i].addingReportingOverflow(b[i])
            let (s2, o2) = s1.addingReportingOverflow(carry)
            r[i] = s2
            carry = (o1 ? 1 : 0) + (o2 ? 1 : 0)
        }
        fold(&r, carry: carry)
        return r
    }

    static func sub(_ a: Limbs, _ b: Limbs) -> Limbs {
        var r = a
        var borrow: UInt64 = 0
        for i in 0..<4 {
            let (d1, b1) = r[i].subtractingReportingOverflow(b[i])
            let (d2, b2) = d1.subtractingReportingOverflow(borrow)
            r[i] = d2
            borrow = (b1 ? 1 : 0) + (b2 ? 1 : 0)
        }
        // A borrow wrapped the result by +2^256 ≡ +38: take 38 off for each wrap.
        while borrow != 0 {
            var under = false
            var take: UInt64 = 38
            for i in 0..<4 where take != 0 {
                let (d, o) = r[i].subtractingReportingOverflow(take)
                r[i] = d
                take = o ? 1 : 0
                under = o && i == 3
            }
            borrow = under ? 1 : 0
        }
        return r
    }

    static func mul(_ a: Limbs, _ b: Limbs) -> Limbs {
        // Schoolbook 4×4 limbs into 8, then 2^256 ≡ 38: low + 38 · high.
        var wide = [UInt64](repeating: 0, count: 8)
        for i in 0..<4 {
            var carry: UInt64 = 0
            for j in 0..<4 {
                let (high, low) = a[i].multipliedFullWidth(by: b[j])
                let (s1, o1) = wide[i + j].addingReportingOverflow(low)
                let (s2, o2) = s1.addingReportingOverflow(carry)
                wide[i + j] = s2
                carry = high &+ (o1 ? 1 : 0) &+ (o2 ? 1 : 0)  // high ≤ 2^64 − 2: no overflow
            }
            wide[i + 4] = carry
        }
        var r = Array(wide[0..<4])
        var carry: UInt64 = 0
        for i in 0..<4 {
            let (high, low) = wide[i + 4].multipliedFullWidth(by: 38)
            let (s1, o1) = r[i].addingReportingOverflow(low)
            let (s2, o2) = s1.addingReportingOverflow(carry)
            r[i] = s2
            carry = high &+ (o1 ? 1 : 0) &+ (o2 ? 1 : 0)
        }
        fold(&r, carry: carry)
        return r
    }

    /// a^(p − 2) = a⁻¹ (Fermat), square-and-multiply over the bits of p − 2.
    static func invert(_ a: Limbs) -> Limbs {
        var exponent = p
        exponent[0] -= 2
        var result = one
        for i in (0..<4).reversed() {
            for bit in (0..<64).reversed() {
                result = mul(result, result)
                if (exponent[i] >> UInt64(bit)) & 1 == 1 { result = mul(result, a) }
            }
        }
        return result
    }
}
