/// Bech32 (BIP-173), as age uses it for keys: no 90-character limit, all upper or all lower case,
/// checksum over the lower-case form. An encoding, not a cipher: written here from the BIP.
public enum Bech32 {
    static let charset = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)
    static let generator: [UInt32] = [0x3B6A_57B2, 0x2650_8E6D, 0x1EA1_19FA, 0x3D42_33DD, 0x2A14_62B3]

    static func polymod(_ values: [UInt8]) -> UInt32 {
        var checksum: UInt32 = 1
        for value in values {
            let top = checksum >> 25
            checksum = (checksum & 0x1FF_FFFF) << 5 ^ UInt32(value)
            for i in 0..<5 where (top >> i) & 1 == 1 { checksum ^= generator[i] }
        }
        return checksum
    }

    static func expand(_ hrp: [UInt8]) -> [UInt8] {
        hrp.map { $0 >> 5 } + [0] + hrp.map { $0 & 31 }
    }

    /// Regroups bits: 8 → 5 with zero padding (`pad`), or 5 → 8 refusing leftover non-zero bits.
    static func convert(_ data: [UInt8], from: Int, to: Int, pad: Bool) -> [UInt8]? {
        var accumulator = 0, bits = 0
        var out: [UInt8] = []
        let mask = (1 << to) - 1
        for value in data {
            guard Int(value) >> from == 0 else { return nil }
            accumulator = accumulator << from | Int(value)
            bits += from
            while bits >= to {
                bits -= to
                out.append(UInt8((accumulator >> bits) & mask))
            }
        }
        if pad {
            if bits > 0 { out.append(UInt8((accumulator << (to - bits)) & mask)) }
        } else if bits >= from || (accumulator << (to - bits)) & mask != 0 {
            return nil
        }
        return out
    }

    /// Encodes `data` under the human-readable part `hrp`; upper case when `hrp` is upper case.
    public static func encode(hrp: String, data: [UInt8]) -> String {
        let lowerHRP = Array(hrp.lowercased().utf8)
        let words = convert(data, from: 8, to: 5, pad: true)!
        let mod = polymod(expand(lowerHRP) + words + [0, 0, 0, 0, 0, 0]) ^ 1
        let checksum = (0..<6).map { UInt8((mod >> (5 * (5 - $0))) & 31) }
        let text = String(decoding: lowerHRP + [UInt8(ascii: "1")] + (words + checksum).map { charset[Int($0)] },
                          as: UTF8.self)
        return hrp == hrp.uppercased() && hrp != hrp.lowercased() ? text.uppercased() : text
    }

    /// Decodes a Bech32 string; returns the lower-case human-readable part and the data bytes, or
    /// nil for mixed case, a bad character, a bad checksum or bad padding.
    public static func decode(_ text: String) -> (hrp: String, data: [UInt8])? {
        let bytes = Array(text.utf8)
        guard bytes.allSatisfy({ $0 >= 33 && $0 <= 126 }) else { return nil }
        let lower = text.lowercased(), upper = text.uppercased()
        guard text == lower || text == upper else { return nil }
        let chars = Array(lower.utf8)
        guard let separator = chars.lastIndex(of: UInt8(ascii: "1")), separator >= 1,
              chars.count - separator - 1 >= 6 else { return nil }
        let hrp = Array(chars[..<separator])
        var words: [UInt8] = []
        for c in chars[(separator + 1)...] {
            guard let index = charset.firstIndex(of: c) else { return nil }
            words.append(UInt8(index))
        }
        guard polymod(expand(hrp) + words) == 1,
              let data = convert(Array(words.dropLast(6)), from: 5, to: 8, pad: false) else { return nil }
        return (String(decoding: hrp, as: UTF8.self), data)
    }
}
