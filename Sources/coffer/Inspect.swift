import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an encrypted file's header: version, cipher, chunk size, stanzas, payload size. Needs no key.",
        discussion: """
        Nothing shown is authenticated until a key opens the file: use 'coffer verify' for that.
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
        let plaintextBytes: UInt64?
        let chunks: UInt64?
        let payloadError: String?
        enum CodingKeys: String, CodingKey {
            case file, version, cipher, object, stanzas, chunks
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
            let reading = try HeaderReading.read(from: source)
            let header = reading.header
            let stanzas = header.stanzas.map { stanza in
                StanzaInfo(type: stanza.type,
                           keyID: KeyTypes.keyID(of: stanza),
                           workFactor: stanza.type == Passphrase.stanzaType ? stanza.arguments.last.flatMap { Int($0) } : nil,
                           description: StanzaDescriptions.describe(stanza),
                           uri: KMSStanza.uri(of: stanza))
            }
            var layout: StreamEngine.PayloadLayout?
            var payloadError: CofferError?
            if let size = source.regularFileSize {
                do {
                    guard size >= reading.payloadStart else { throw CofferError.truncated("no payload after the header") }
                    layout = try StreamEngine.PayloadLayout(sealedLength: size - reading.payloadStart,
                                                            chunkSize: header.parameters.chunkSize)
                } catch let error as CofferError {
                    payloadError = error
                }
            }
            let report = Report(
                file: input, version: header.generation == nil ? Limits.versionLine : Limits.versionLineV2,
                cipher: header.parameters.cipher.rawValue,
                chunkSize: header.parameters.chunkSize,
                object: header.parameters.objectName.isEmpty ? nil : header.parameters.objectNameText,
                headerBytes: reading.headerLength,
                slotSize: { if case .slots(let size, _) = header.layout { return size } else { return nil } }(),
                generation: header.generation,
                damagedSlots: reading.damagedSlots.isEmpty ? nil : reading.damagedSlots.map { "slot \($0.slot + 1): \($0.reason)" },
                stanzas: stanzas,
                plaintextBytes: layout?.plaintextSize, chunks: layout?.chunkCount,
                payloadError: payloadError.map { "\($0)" })
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print("file:        \(report.file)")
                print("version:     \(report.version)")
                print("cipher:      \(report.cipher)")
                print("chunk size:  \(report.chunkSize) bytes (\(ProgressLine.bytes(UInt64(report.chunkSize))))")
                if let object = report.object { print("object:      \(object)") }
                print("header:      \(report.headerBytes) bytes")
                if let size = report.slotSize, let generation = report.generation {
                    print("slots:       2 × \(size) bytes; in use: slot \(reading.activeSlot! + 1), generation \(generation)\(reading.alternate != nil ? " (the other slot holds an older generation: an interrupted rewrap)" : "")")
                }
                for damaged in report.damagedSlots ?? [] { print("damaged:     \(damaged)") }
                print("stanzas:     \(stanzas.count) (any one opens the file)")
                for stanza in stanzas {
                    let id = stanza.keyID.map { " [key id \($0)]" } ?? ""
                    print("  \(stanza.type.padding(toLength: 14, withPad: " ", startingAt: 0)) \(stanza.description)\(stanza.uri != nil ? id : "")")
                    if let uri = stanza.uri { print("                 uri: \(uri)") }
                }
                if let layout {
                    print("payload:     \(layout.plaintextSize) bytes in \(layout.chunkCount) chunks")
                } else if let payloadError {
                    print("payload:     invalid: \(payloadError)")
                } else {
                    print("payload:     unknown (not a regular file)")
                }
            }
            if let payloadError { throw payloadError }
        }
    }
}
