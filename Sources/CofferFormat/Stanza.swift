/// One way to open a file: a type, its arguments, and a body (usually a wrapped file key).
///
/// The textual form is age's stanza grammar, so the same code reads age headers:
/// ```
/// -> TYPE ARG1 ARG2\n
/// <body as raw base64, 64 columns per line; the last line is shorter, possibly empty>\n
/// ```
public struct Stanza: Equatable, Sendable {
    public var type: String
    public var arguments: [String]
    public var body: [UInt8]

    public init(type: String, arguments: [String], body: [UInt8]) {
        self.type = type
        self.arguments = arguments
        self.body = body
    }

    /// The canonical encoding, ending with a line feed.
    public func encoded() -> [UInt8] {
        var out = Array("->".utf8)
        for word in [type] + arguments {
            out.append(0x20)
            out.append(contentsOf: word.utf8)
        }
        out.append(0x0A)
        let b64 = Array(RawBase64.encode(body).utf8)
        var i = 0
        // Full 64-column lines, then one shorter (possibly empty) final line.
        while b64.count - i >= StanzaGrammar.bodyColumns {
            out.append(contentsOf: b64[i..<(i + StanzaGrammar.bodyColumns)])
            out.append(0x0A)
            i += StanzaGrammar.bodyColumns
        }
        out.append(contentsOf: b64[i...])
        out.append(0x0A)
        return out
    }
}

/// Strict parsing of stanza lines, shared by every header format built on age's grammar.
public enum StanzaGrammar {
    public static let bodyColumns = 64

    /// True for an argument character: printable ASCII without space (VCHAR, 0x21–0x7E).
    static func isArgumentByte(_ b: UInt8) -> Bool { b >= 0x21 && b <= 0x7E }

    /// Parses one stanza whose arg line is `lines[index]`; returns it and the index after its body.
    /// `lines` are the header's lines without their line feeds.
    public static func parse(lines: [Substring], at index: Int) throws -> (Stanza, Int) {
        let argLine = lines[index]
        guard argLine.hasPrefix("-> ") else {
            throw CofferError.malformedHeader("expected a stanza line starting with '-> ' at line \(index + 1)")
        }
        let words = argLine.dropFirst(3).split(separator: " ", omittingEmptySubsequences: false)
        guard let first = words.first, !first.isEmpty else {
            throw CofferError.malformedHeader("stanza with no type at line \(index + 1)")
        }
        for word in words {
            guard !word.isEmpty, word.utf8.allSatisfy(isArgumentByte) else {
                throw CofferError.malformedHeader("empty or non-printable stanza argument at line \(index + 1)")
            }
        }
        var bodyText = ""
        var i = index + 1
        while true {
            guard i < lines.count else {
                throw CofferError.malformedHeader("stanza at line \(index + 1) has no final body line")
            }
            let line = lines[i]
            if line.hasPrefix("-> ") || line.hasPrefix("---") {
                throw CofferError.malformedHeader("stanza at line \(index + 1) is missing its final (short) body line")
            }
            guard line.utf8.count <= bodyColumns else {
                throw CofferError.malformedHeader("stanza body line \(i + 1) is longer than \(bodyColumns) columns")
            }
            bodyText += line
            i += 1
            if line.utf8.count < bodyColumns { break }
        }
        guard let body = RawBase64.decode(bodyText) else {
            throw CofferError.malformedHeader("stanza body at line \(index + 2) is not canonical unpadded base64")
        }
        let stanza = Stanza(type: String(first), arguments: words.dropFirst().map(String.init), body: body)
        return (stanza, i)
    }
}
