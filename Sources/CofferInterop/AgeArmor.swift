import CofferFormat
import Foundation

/// age's ASCII armor (AGE-FORMAT.md §1.13): strict PEM with the label `AGE ENCRYPTED FILE`,
/// padded standard base64 in 64-column lines, every line full except the last.
///
/// Reading accepts what the reference reader accepts and nothing more: LF or CRLF line ends,
/// whitespace-only lines before the BEGIN line and whitespace after the END line (under 1 KiB each);
/// no headers, no empty lines, no whitespace inside lines, canonical base64 only.
public enum AgeArmor {
    public static let beginLine = FormatDetector.ageArmorBeginLine
    public static let endLine = "-----END AGE ENCRYPTED FILE-----"
    static let columns = 64
    static let bytesPerLine = 48
    static let maxWhitespace = 1024

    /// True when `firstBytes` (after optional leading whitespace) open an armored age file.
    public static func looksArmored(_ firstBytes: [UInt8]) -> Bool { FormatDetector.looksArmoredAge(firstBytes) }

    static func isWhitespace(_ b: UInt8) -> Bool { FormatDetector.isArmorWhitespace(b) }

    /// The decoded content of an armored file, read line by line as it is consumed.
    public final class Reader: AgeInput {
        private let source: ByteSource
        private var decoded: [UInt8] = []
        private var decodedStart = 0
        private var started = false
        private var ended = false

        public init(source: ByteSource) { self.source = source }

        public var isRegularFile: Bool { source.isRegularFile }

        /// One armor line without its LF or CRLF; nil at the end of the input.
        private func nextLine() throws -> String? {
            guard var line = try source.readLine(limit: 4 * 1024) else { return nil }
            if line.last == 0x0A { line.removeLast() } else if line.count >= 4 * 1024 {
                throw InteropError.malformedArmor("a line is longer than \(AgeArmor.columns) columns")
            }
            if line.last == 0x0D { line.removeLast() }
            return String(decoding: line, as: UTF8.self)
        }

        /// After the END line: only whitespace may follow, less than 1 KiB of it.
        private func checkTrailing() throws {
            var rest = [UInt8](repeating: 0, count: AgeArmor.maxWhitespace)
            let n = try rest.withUnsafeMutableBytes { try source.readFully(into: $0) }
            guard rest[0..<n].allSatisfy(AgeArmor.isWhitespace) else {
                throw InteropError.malformedArmor("data after the END line")
            }
            guard n < AgeArmor.maxWhitespace else { throw InteropError.malformedArmor("too much whitespace after the END line") }
        }

        private func start() throws {
            var skipped = 0
            while true {
                guard let line = try source.readLine(limit: 4 * 1024) else {
                    throw InteropError.malformedArmor("no '\(AgeArmor.beginLine)' line")
                }
                if line.allSatisfy(AgeArmor.isWhitespace) {
                    skipped += line.count
                    guard skipped < AgeArmor.maxWhitespace else {
                        throw InteropError.malformedArmor("too much whitespace before the BEGIN line")
                    }
                    continue
                }
                var text = line
                if text.last == 0x0A { text.removeLast() }
                if text.last == 0x0D { text.removeLast() }
                guard text.elementsEqual(AgeArmor.beginLine.utf8) else {
                    throw InteropError.malformedArmor("the first line is not '\(AgeArmor.beginLine)'")
                }
                started = true
                return
            }
        }

        /// Decodes the next armor line into `decoded`; returns false at the END line.
        private func decodeNextLine() throws -> Bool {
            if ended { return false }
            if !started { try start() }
            guard let line = try nextLine() else { throw InteropError.malformedArmor("no '\(AgeArmor.endLine)' line") }
            if line == AgeArmor.endLine {
                ended = true
                try checkTrailing()
                return false
            }
            let bytes = try Self.decodeLine(line)
            decoded = bytes
            decodedStart = 0
            if bytes.count < AgeArmor.bytesPerLine {
                // A short line is the last one.
                guard let closing = try nextLine(), closing == AgeArmor.endLine else {
                    throw InteropError.malformedArmor("a line shorter than \(AgeArmor.columns) columns is not followed by the END line")
                }
                ended = true
                try checkTrailing()
            }
            return true
        }

        static func decodeLine(_ line: String) throws -> [UInt8] {
            guard !line.isEmpty else { throw InteropError.malformedArmor("empty line") }
            guard line.utf8.count <= AgeArmor.columns else {
                throw InteropError.malformedArmor("a line is longer than \(AgeArmor.columns) columns")
            }
            guard line.utf8.count % 4 == 0, let data = Data(base64Encoded: line) else {
                throw InteropError.malformedArmor("a line is not padded standard base64")
            }
            // One spelling per byte string: unused bits zero, padding only where needed.
            guard data.base64EncodedString() == line else {
                throw InteropError.malformedArmor("a line is not canonical base64")
            }
            return [UInt8](data)
        }

        public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            var done = 0
            while done < buffer.count {
                if decodedStart == decoded.count {
                    guard try decodeNextLine() else { break }
                    continue
                }
                let n = min(buffer.count - done, decoded.count - decodedStart)
                decoded.withUnsafeBytes { src in
                    (buffer.baseAddress! + done).copyMemory(from: src.baseAddress! + decodedStart, byteCount: n)
                }
                decodedStart += n
                done += n
            }
            return done
        }

        public func readLine(limit: Int) throws -> [UInt8]? {
            var line: [UInt8] = []
            while line.count < limit {
                if decodedStart == decoded.count {
                    guard try decodeNextLine() else { break }
                    continue
                }
                let b = decoded[decodedStart]
                decodedStart += 1
                line.append(b)
                if b == 0x0A { break }
            }
            return line.isEmpty ? nil : line
        }
    }

    /// Armors everything written to it; ``finish()`` writes the last line and the END line.
    public final class Writer: ByteSink {
        private let sink: ByteSink
        private var pending: [UInt8] = []
        /// Whole lines are encoded in batches of this many input bytes.
        private static let batch = AgeArmor.bytesPerLine * 1024

        public init(sink: ByteSink) throws {
            self.sink = sink
            try Self.write(Array((AgeArmor.beginLine + "\n").utf8), to: sink)
        }

        static func write(_ bytes: [UInt8], to sink: ByteSink) throws {
            try bytes.withUnsafeBytes { try sink.write($0) }
        }

        private func flush(_ bytes: ArraySlice<UInt8>) throws {
            guard !bytes.isEmpty else { return }
            var encoded = Data(bytes).base64EncodedData(options: [.lineLength64Characters, .endLineWithLineFeed])
            encoded.append(0x0A)
            try encoded.withUnsafeBytes { try sink.write($0) }
        }

        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            pending.append(contentsOf: bytes)
            if pending.count >= Self.batch {
                let whole = pending.count - pending.count % Self.batch
                try flush(pending[0..<whole])
                pending.removeFirst(whole)
            }
        }

        public func finish() throws {
            try flush(pending[...])
            pending = []
            try Self.write(Array((AgeArmor.endLine + "\n").utf8), to: sink)
        }
    }
}
