/// Text from files and headers (object names, stanza fields, key ids, signer names, paths) made
/// safe to print: the one escaping function every message and every printer goes through
/// (docs/KEYS.md, "What is printed").
///
/// Control characters (C0 including line feed and carriage return, DEL, C1), Unicode line and
/// paragraph separators and bidirectional formatting characters are written as `\u{XX}`; bytes
/// that are not UTF-8 as `\xXX`. The result holds no character that a terminal interprets, so an
/// attacker-chosen name cannot fake an "OK" line, move the cursor or rewrite the screen. Escaping
/// is idempotent (escaped text has nothing left to escape), so a message assembled from
/// already-escaped parts can be escaped again as a whole.
public enum DisplayText {
    /// True for a Unicode scalar a terminal may act on rather than show.
    public static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: return true          // C0, DEL, C1
        case 0x2028, 0x2029: return true                    // line and paragraph separators
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true  // bidi marks, embeddings, overrides, isolates
        case 0xFEFF: return true                            // byte order mark / zero-width no-break space
        default: return false
        }
    }

    /// Escapes a string (already valid Unicode).
    public static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if needsEscape(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 2) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Escapes bytes that should be UTF-8 text: valid sequences as ``escape(_:)-(String)`` does,
    /// every byte of an invalid sequence as `\xXX`.
    public static func escape(_ bytes: some Collection<UInt8>) -> String {
        let buffer = Array(bytes)
        var out = ""
        var index = 0
        while index < buffer.count {
            let length = validSequenceLength(buffer, at: index)
            if length == 0 {
                out += "\\x" + String(buffer[index], radix: 16, uppercase: true).leftPadded(to: 2)
                index += 1
                continue
            }
            out += escape(String(decoding: buffer[index..<(index + length)], as: UTF8.self))
            index += length
        }
        return out
    }

    /// The length of the well-formed UTF-8 sequence at `index` (RFC 3629: no overlong forms, no
    /// surrogates, nothing above U+10FFFF), or 0 when the byte there does not start one.
    static func validSequenceLength(_ b: [UInt8], at index: Int) -> Int {
        let first = b[index]
        func continuation(_ offset: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> Bool {
            index + offset < b.count && range.contains(b[index + offset])
        }
        switch first {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: return continuation(1) ? 2 : 0
        case 0xE0: return continuation(1, 0xA0...0xBF) && continuation(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return continuation(1) && continuation(2) ? 3 : 0
        case 0xED: return continuation(1, 0x80...0x9F) && continuation(2) ? 3 : 0
        case 0xF0: return continuation(1, 0x90...0xBF) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF1...0xF3: return continuation(1) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF4: return continuation(1, 0x80...0x8F) && continuation(2) && continuation(3) ? 4 : 0
        default: return 0
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
