import ArgumentParser
import CofferFiles
import CofferFormat
import CofferInterop
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an encrypted file's header: version, cipher, chunk size, stanzas, payload size. Needs no key.",
        discussion: """
        Nothing shown is authenticated until a key opens the file: use 'coffer verify' for that. \
        Exit status 3 when the payload length is impossible (the file was cut short or extended).
        """)

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Argument(help: ArgumentHelp("Encrypted file ('-': standard input).", valueName: "file"))
    var input: String

    struct StanzaInfo: Encodable {
        let type: String
        let keyID: String?
        let workFactor: Int?
        let description: String
        /// KMS stanzas: the key URI that finds the key again (a stanza holds no secret).
        let uri: String?
        enum CodingKeys: String, CodingKey {
            case type, description, uri
            case keyID = "key_id"
            case workFactor = "work_factor"
        }
    }

    struct SignatureInfo: Encodable {
        let algorithm: String
        let digest: String
        /// Key ids of the signatures in the trailer (nil when it could not be read: a pipe).
        let signers: [String]?
        /// What is structurally wrong with the trailer (docs/FORMAT.md, "Signatures"), if anything.
        let damage: String?
    }

    struct Report: Encodable {
        let file: String
        let version: String
        let cipher: String
        let chunkSize: Int
        let object: String?
        let headerBytes: UInt64
        let slotSize: Int?
        let generation: UInt64?
        let damagedSlots: [String]?
        let stanzas: [StanzaInfo]
        let signature: SignatureInfo?
        let plaintextBytes: UInt64?
        let chunks: UInt64?
        let payloadError: String?
        enum CodingKeys: String, CodingKey {
            case file, version, cipher, object, stanzas, chunks, signature
            case chunkSize = "chunk_size"
            case headerBytes = "header_bytes"
            case slotSize = "slot_size"
            case generation
            case damagedSlots = "damaged_slots"
            case plaintextBytes = "plaintext_bytes"
            case payloadError = "payload_error"
        }
    }

    func run() throws {
        try Runtime.reporting {
            let source = try ByteSource.open(path: input)
            defer { source.close() }
            switch try FormatDetector.detect(source) {
            case .age(let armored): return try inspectAge(source, kind: armored ? .armored : .binary)
            case .other(let hint): throw CofferError.notCofferFile(hint: hint)
            case .coffer, .xbcrypt: break  // .xbcrypt has no header to show: "not a Coffer file" says what it is
            }
            let reading = try HeaderReading.read(from: source)
            let header = reading.header
            let stanzas = header.stanzas.map { stanza in
                StanzaInfo(type: stanza.type,
                           keyID: KeyTypes.keyID(of: stanza),
                           workFactor: stanza.type == Passphrase.stanzaType ? stanza.arguments.last.flatMap { Int($0) } : nil,
                           description: KeyTypes.describe(stanza),
                           uri: KMSStanza.uri(of: stanza))
            }
            var layout: StreamEngine.PayloadLayout?
            var payloadError: CofferError?
            var signers: [String]?
            var damage: String?
            if let size = source.regularFileSize {
                do {
                    layout = try reading.layout(fileSize: size)
                    let trailer = try reading.readTrailer(from: source, fileSize: size)
                    signers = trailer?.entries.map(\.keyIDText)
                    damage = trailer?.structuralDamage
                } catch let error as CofferError {
                    payloadError = error
                }
            }
            let signature = header.parameters.signature.map {
                SignatureInfo(algorithm: $0.algorithm.rawValue, digest: $0.digest.rawValue, signers: signers, damage: damage)
            }
            let report = Report(
                file: input, version: header.generation == nil ? Limits.versionLine : Limits.versionLineV2,
                cipher: header.parameters.cipher.rawValue,
                chunkSize: header.parameters.chunkSize,
                // Exact in JSON when it is UTF-8 (JSON escapes it); the text printer escapes it.
                object: header.parameters.objectName.isEmpty ? nil
                    : String(validating: header.parameters.objectName, as: UTF8.self) ?? header.parameters.objectNameText,
                headerBytes: reading.headerLength,
                slotSize: { if case .slots(let size, _) = header.layout { return size } else { return nil } }(),
                generation: header.generation,
                damagedSlots: reading.damagedSlots.isEmpty ? nil : reading.damagedSlots.map { "slot \($0.slot + 1): \($0.reason)" },
                stanzas: stanzas, signature: signature,
                plaintextBytes: layout?.plaintextSize, chunks: layout?.chunkCount,
                payloadError: payloadError.map { "\($0)" })
            let slots = report.slotSize.map { size in
                "2 × \(size) bytes; in use: slot \(reading.activeSlot! + 1), generation \(report.generation!)\(reading.alternate != nil ? " (the other slot holds an older generation: an interrupted rewrap)" : "")"
            }
            try show(report, slots: slots, unknownPayload: "not a regular file")
            if let payloadError { throw payloadError }
        }
    }

    func printJSON(_ report: Report) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(Self.jsonSafe(String(decoding: try encoder.encode(report), as: UTF8.self)))
    }

    /// JSON text with every character a terminal could act on written as a `\\uXXXX` escape: the
    /// encoder escapes C0 controls already, but not DEL, C1 controls, line separators or bidi
    /// controls, which may only occur inside strings and are equally valid escaped.
    static func jsonSafe(_ json: String) -> String {
        var out = ""
        for scalar in json.unicodeScalars {
            if scalar.value >= 0x7F, DisplayText.needsEscape(scalar) {
                out += String(format: "\\u%04x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Every text line goes through here: header fields are escaped (``DisplayText``).
    func line(_ text: String) { print(DisplayText.escape(text)) }

    /// A standard age file: its stanzas (which keys open it) and, for a binary regular file, the payload size.
    func inspectAge(_ source: ByteSource, kind: AgeFile.Kind) throws {
        let header = try AgeHeader.read(from: kind == .armored ? AgeArmor.Reader(source: source) : source)
        let stanzas = header.stanzas.map { stanza in
            StanzaInfo(type: stanza.type, keyID: nil,
                       workFactor: stanza.type == AgeScrypt.stanzaType ? stanza.arguments.last.flatMap { Int($0) } : nil,
                       description: KeyTypes.describe(stanza), uri: nil)
        }
        var layout: StreamEngine.PayloadLayout?
        var payloadError: CofferError?
        let headerBytes = UInt64(header.encodedLength + AgeHeader.nonceSize)
        if kind == .binary, let size = source.regularFileSize {
            do {
                guard size >= headerBytes else { throw CofferError.malformedHeader("the file ends before its payload nonce") }
                // age's payload has Coffer's chunk layout rules, with 64 KiB chunks.
                layout = try StreamEngine.PayloadLayout(sealedLength: size - headerBytes, chunkSize: AgeStream.chunkSize)
            } catch let error as CofferError {
                payloadError = error
            }
        }
        let report = Report(file: input, version: AgeHeader.versionLine + (kind == .armored ? " (ASCII armor)" : ""),
                            cipher: PayloadCipher.chacha20poly1305.rawValue, chunkSize: AgeStream.chunkSize, object: nil,
                            headerBytes: UInt64(header.encodedLength), slotSize: nil, generation: nil, damagedSlots: nil,
                            stanzas: stanzas, signature: nil, plaintextBytes: layout?.plaintextSize, chunks: layout?.chunkCount,
                            payloadError: payloadError.map { "\($0)" })
        try show(report, slots: nil, unknownPayload: kind == .armored ? "armored" : "not a regular file")
        if let payloadError { throw payloadError }
    }

    /// Prints a report as JSON or as aligned text (Coffer and age files alike).
    func show(_ report: Report, slots: String?, unknownPayload: String) throws {
        if json { return try printJSON(report) }
        line("file:        \(report.file)")
        line("version:     \(report.version)")
        line("cipher:      \(report.cipher)")
        line("chunk size:  \(report.chunkSize) bytes (\(ProgressLine.bytes(UInt64(report.chunkSize))))")
        if let object = report.object { line("object:      \(object)") }
        line("header:      \(report.headerBytes) bytes")
        if let slots { line("slots:       \(slots)") }
        for damaged in report.damagedSlots ?? [] { line("damaged:     \(damaged)") }
        line("stanzas:     \(report.stanzas.count) (\(report.stanzas.count == 1 ? "it opens the file" : "any one opens the file"))")
        for stanza in report.stanzas {
            let id = stanza.keyID.map { " [key id \($0)]" } ?? ""
            line("  \(stanza.type.padding(toLength: 14, withPad: " ", startingAt: 0)) \(stanza.description)\(stanza.uri != nil ? id : "")")
            if let uri = stanza.uri { line("                 uri: \(uri)") }
        }
        if let signature = report.signature {
            let who = signature.signers.map { $0.isEmpty ? "no signature in the trailer" : $0.map { "key id \($0)" }.joined(separator: ", ") }
                ?? "trailer not read (not a regular file)"
            line("signature:   \(signature.algorithm), \(signature.digest); signed by \(who) (not checked: check with verify --signed-by)")
            if let damage = signature.damage { line("             damaged trailer: \(damage)") }
        } else {
            line("signature:   none")
        }
        if let plaintext = report.plaintextBytes, let chunks = report.chunks {
            line("payload:     \(counted(plaintext, "byte")) in \(counted(chunks, "chunk"))")
        } else if let payloadError = report.payloadError {
            line("payload:     invalid: \(payloadError)")
        } else {
            line("payload:     unknown (\(unknownPayload))")
        }
    }
}
