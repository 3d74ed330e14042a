/// A small, strict XML reader for S3's answers (ListObjectsV2, InitiateMultipartUpload,
/// CompleteMultipartUpload, DeleteObjects, errors), and the escaping of the few documents Coffer
/// sends. It reads elements, attributes (skipped), text, CDATA and the predefined and numeric
/// entities; it refuses DTDs (`<!DOCTYPE`: no entity expansion), mismatched tags, more than one
/// root, nesting deeper than 32 and documents over `maxBytes`. Namespaces are kept as written in
/// attributes and ignored: elements are matched by local name.
///
/// Foundation's XMLParser exists on Linux only in FoundationXML, which drags in libxml2 at run
/// time; S3's answers need none of what it adds.
struct XMLElement: Sendable, Equatable {
    var name: String
    var children: [XMLElement] = []
    var text: String = ""

    func child(_ name: String) -> XMLElement? { children.first { $0.name == name } }
    func all(_ name: String) -> [XMLElement] { children.filter { $0.name == name } }
    func childText(_ name: String) -> String? { child(name)?.text }
}

struct XMLSyntaxError: Error, Equatable, CustomStringConvertible {
    let reason: String
    let offset: Int
    var description: String { "malformed XML at byte \(offset): \(reason)" }
}

enum S3XML {
    static let maxDepth = 32

    static func parse(_ bytes: [UInt8], maxBytes: Int = 16 << 20) throws(XMLSyntaxError) -> XMLElement {
        guard bytes.count <= maxBytes else { throw XMLSyntaxError(reason: "document larger than \(maxBytes) bytes", offset: 0) }
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func fail(_ reason: String) -> XMLSyntaxError { XMLSyntaxError(reason: reason, offset: i) }

        mutating func document() throws(XMLSyntaxError) -> XMLElement {
            // A UTF-8 byte order mark is tolerated.
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
            try skipMisc()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "<") else { throw fail("expected the root element") }
            let root = try element(depth: 0)
            try skipMisc()
            guard i == bytes.count else { throw fail("content after the root element") }
            return root
        }

        /// Whitespace, comments and processing instructions (`<?xml …?>`) between elements.
        mutating func skipMisc() throws(XMLSyntaxError) {
            while i < bytes.count {
                if isSpace(bytes[i]) { i += 1; continue }
                if starts("<?") { try skip(past: "?>"); continue }
                if starts("<!--") { try skip(past: "-->"); continue }
                if starts("<!") { throw fail("DTDs and declarations are not accepted") }
                return
            }
        }

        func starts(_ text: String) -> Bool {
            let t = Array(text.utf8)
            return i + t.count <= bytes.count && Array(bytes[i..<(i + t.count)]) == t
        }

        mutating func skip(past text: String) throws(XMLSyntaxError) {
            let t = Array(text.utf8)
            while i + t.count <= bytes.count {
                if Array(bytes[i..<(i + t.count)]) == t { i += t.count; return }
                i += 1
            }
            throw fail("unterminated '\(String(decoding: t, as: UTF8.self))'")
        }

        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        func isNameByte(_ b: UInt8) -> Bool {
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: ":") || b >= 0x80
        }

        mutating func name() throws(XMLSyntaxError) -> String {
            let start = i
            while i < bytes.count, isNameByte(bytes[i]) { i += 1 }
            guard i > start else { throw fail("expected a name") }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }

        /// `<name attrs…>content</name>` or `<name attrs…/>`, at `<`.
        mutating func element(depth: Int) throws(XMLSyntaxError) -> XMLElement {
            guard depth < S3XML.maxDepth else { throw fail("nested deeper than \(S3XML.maxDepth)") }
            i += 1
            let qualified = try name()
            var element = XMLElement(name: Self.localName(qualified))
            // Attributes: NAME="…" or NAME='…', skipped.
            while true {
                while i < bytes.count, isSpace(bytes[i]) { i += 1 }
                guard i < bytes.count else { throw fail("unterminated start tag") }
                if bytes[i] == UInt8(ascii: "/") {
                    guard i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: ">") else { throw fail("expected '/>'") }
                    i += 2
                    return element
                }
                if bytes[i] == UInt8(ascii: ">") { i += 1; break }
                _ = try name()
                while i < bytes.count, isSpace(bytes[i]) { i += 1 }
                guard i < bytes.count, bytes[i] == UInt8(ascii: "=") else { throw fail("expected '=' in an attribute") }
                i += 1
                while i < bytes.count, isSpace(bytes[i]) { i += 1 }
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") || bytes[i] == UInt8(ascii: "'") else {
                    throw fail("expected a quoted attribute value")
                }
                let quote = bytes[i]
                i += 1
                while i < bytes.count, bytes[i] != quote {
                    if bytes[i] == UInt8(ascii: "<") { throw fail("'<' in an attribute value") }
                    i += 1
                }
                guard i < bytes.count else { throw fail("unterminated attribute value") }
                i += 1
            }
            var text: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("unterminated element <\(qualified)>") }
                let b = bytes[i]
                if b == UInt8(ascii: "<") {
                    if starts("</") {
                        i += 2
                        let closing = try name()
                        guard closing == qualified else { throw fail("</\(closing)> closes <\(qualified)>") }
                        while i < bytes.count, isSpace(bytes[i]) { i += 1 }
                        guard i < bytes.count, bytes[i] == UInt8(ascii: ">") else { throw fail("expected '>'") }
                        i += 1
                        guard let decoded = String(validating: text, as: UTF8.self) else { throw fail("text is not UTF-8") }
                        element.text = decoded
                        return element
                    } else if starts("<![CDATA[") {
                        i += 9
                        let start = i
                        try skip(past: "]]>")
                        text += bytes[start..<(i - 3)]
                    } else if starts("<!--") {
                        try skip(past: "-->")
                    } else if starts("<?") {
                        try skip(past: "?>")
                    } else if starts("<!") {
                        throw fail("declarations are not accepted inside elements")
                    } else {
                        element.children.append(try self.element(depth: depth + 1))
                    }
                } else if b == UInt8(ascii: "&") {
                    text += try entity()
                } else {
                    text.append(b)
                    i += 1
                }
            }
        }

        /// `&amp;` `&lt;` `&gt;` `&quot;` `&apos;` `&#N;` `&#xH;`, at `&`.
        mutating func entity() throws(XMLSyntaxError) -> [UInt8] {
            let start = i
            guard let end = bytes[i...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else { throw fail("unterminated entity") }
            let body = String(decoding: bytes[(start + 1)..<end], as: UTF8.self)
            i = end + 1
            switch body {
            case "amp": return [UInt8(ascii: "&")]
            case "lt": return [UInt8(ascii: "<")]
            case "gt": return [UInt8(ascii: ">")]
            case "quot": return [UInt8(ascii: "\"")]
            case "apos": return [UInt8(ascii: "'")]
            default:
                var value: UInt32?
                if body.hasPrefix("#x") { value = UInt32(body.dropFirst(2), radix: 16) }
                else if body.hasPrefix("#") { value = UInt32(body.dropFirst(), radix: 10) }
                guard let value, value != 0, let scalar = Unicode.Scalar(value) else {
                    i = start
                    throw fail("unknown entity '&\(body.prefix(10));'")
                }
                return Array(String(Character(scalar)).utf8)
            }
        }

        static func localName(_ qualified: String) -> String {
            guard let colon = qualified.lastIndex(of: ":") else { return qualified }
            return String(qualified[qualified.index(after: colon)...])
        }
    }

    /// Text escaped for an element's content.
    static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
