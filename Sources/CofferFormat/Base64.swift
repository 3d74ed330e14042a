import Foundation

/// Standard-alphabet base64 without padding (RFC 4648 §4, "raw"), as age uses it.
///
/// Decoding is strict: padding, line breaks, foreign characters and non-canonical
/// encodings (non-zero unused bits) are all rejected, so that every byte string has
/// exactly one textual form and the header MAC cannot be sidestepped by re-encoding.
public enum RawBase64 {
    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = Data(bytes).base64EncodedString()
        while s.hasSuffix("=") { s.removeLast() }
        return s
    }

    /// Returns nil unless `text` is the canonical raw base64 of some byte string.
    public static func decode(_ text: Substring) -> [UInt8]? {
        decode(String(text))
    }

    public static func decode(_ text: String) -> [UInt8]? {
        if text.isEmpty { return [] }
        if text.utf8.count % 4 == 1 { return nil }
        for c in text.utf8 {
            let ok = (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2B || c == 0x2F
            if !ok { return nil }
        }
        let padded = text + String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: padded) else { return nil }
        let bytes = [UInt8](data)
        // Canonical check: the only encoding of these bytes must be the input itself.
        guard encode(bytes) == text else { return nil }
        return bytes
    }
}
