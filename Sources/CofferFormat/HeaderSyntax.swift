/// Where header lines come from: a file or pipe (``ByteSource``), or the decoded content of an
/// armored age file.
public protocol LineInput: AnyObject {
    /// One line including its line feed, at most `limit` bytes; what is left at the end of the
    /// input without a line feed; nil at the end of the input.
    func readLine(limit: Int) throws -> [UInt8]?
}

extension ByteSource: LineInput {}

/// The text grammar that Coffer headers (version 1, and each version-2 slot) and age v1 headers
/// share: a first line, stanzas (``StanzaGrammar``), and a MAC line `--- ` followed by the 32-byte
/// MAC in canonical unpadded base64. Each format keeps its own rules around it (limits, the lines
/// before the stanzas, what it refuses) and its own error messages: the functions here report
/// what they found, and the callers turn that into their errors.
public enum HeaderSyntax {
    /// What opens the MAC line (a base64 body line cannot start with '-').
    public static let macLineStart = "---"
    public static let macSize = 32

    /// The MAC of a MAC line (without its line feed): `--- ` and exactly 43 characters of canonical
    /// unpadded base64 of 32 bytes. Nil when the line is anything else.
    public static func mac(ofLine line: Substring) -> [UInt8]? {
        guard line.hasPrefix(macLineStart + " "), let mac = RawBase64.decode(line.dropFirst(4)), mac.count == macSize else {
            return nil
        }
        return mac
    }

    /// The header bytes a MAC covers: everything through the "---" of the MAC line (its space,
    /// the base64 MAC and the line feed left out). `bytes` ends with the MAC line's line feed.
    public static func bytesCoveredByMAC(_ bytes: [UInt8], macLine: Substring) -> [UInt8] {
        Array(bytes.prefix(bytes.count - macLine.utf8.count - 1 + macLineStart.utf8.count))
    }

    /// How reading lines up to the MAC line ended.
    public enum LinesRead: Equatable {
        /// Every line through the MAC line's line feed.
        case complete([UInt8])
        /// `limit` bytes were read without a complete MAC line.
        case tooLong
        /// The input ended before the MAC line (`empty`: before any byte).
        case endsBeforeMACLine(empty: Bool)
        /// The input ended inside a line (`isMACLine`: the MAC line's).
        case unterminatedLine(isMACLine: Bool)
    }

    /// Reads lines from `input` until a line after the first that starts with "---" (the MAC line).
    /// `first` is a first line already read (with its line feed), if any; at most `limit` bytes in
    /// all are read. `eachLine` sees every complete line read here (with its line feed) and its
    /// index, and may throw to stop early (a wrong first line, a forbidden byte).
    public static func readLines(from input: LineInput, first: [UInt8]? = nil, limit: Int,
                                 eachLine: ([UInt8], Int) throws -> Void = { _, _ in }) throws -> LinesRead {
        var bytes = first ?? []
        var index = first == nil ? 0 : 1
        while true {
            let remaining = limit - bytes.count
            guard remaining > 0 else { return .tooLong }
            guard let line = try input.readLine(limit: remaining) else { return .endsBeforeMACLine(empty: bytes.isEmpty) }
            bytes += line
            let isMACLine = index > 0 && line.starts(with: macLineStart.utf8)
            guard line.last == 0x0A else {
                if isMACLine { return .unterminatedLine(isMACLine: true) }
                return bytes.count >= limit ? .tooLong : .unterminatedLine(isMACLine: false)
            }
            try eachLine(line, index)
            index += 1
            if isMACLine { return .complete(bytes) }
        }
    }

    /// Parses the stanzas of `lines[start..<end]` (`lines[end]` is the MAC line), each with
    /// ``StanzaGrammar/parse(lines:at:)``; `check` sees each stanza as it is parsed and the count so
    /// far, and throws to refuse it (a limit). A line there that does not open a stanza is refused.
    public static func parseStanzas(_ lines: [Substring], from start: Int, to end: Int,
                                    check: (Stanza, Int) throws -> Void = { _, _ in }) throws -> [Stanza] {
        var stanzas: [Stanza] = []
        var index = start
        while index < end {
            let (stanza, after) = try StanzaGrammar.parse(lines: lines, at: index)
            stanzas.append(stanza)
            try check(stanza, stanzas.count)
            index = after
        }
        // StanzaGrammar.parse refuses a body that runs into a "---" line, so the last stanza ends
        // exactly before the MAC line.
        return stanzas
    }
}
