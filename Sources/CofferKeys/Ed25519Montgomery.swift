/// Used by the ssh-ed25519 key type (SSHEd25519.swift) to turn an Ed25519 public key into the X25519 key age wraps to.
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
