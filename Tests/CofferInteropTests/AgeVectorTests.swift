import CofferFormat
import CofferKeys
@testable import CofferInterop
import Crypto
import AgeTestVectors
import Foundation
import Testing

/// Helpers for running the age test vectors (parsed by the AgeTestVectors target) through the library.
enum AgeVectors {
    typealias Vector = AgeTestVectors.Vector
    static var all: (vectors: [Vector], skipped: [(name: String, reason: String)], files: Int) { AgeTestVectors.all }

    static func identities(of vector: Vector) throws -> [Identity] {
        var identities: [Identity] = []
        for text in vector.identities {
            if text.hasPrefix("AGE-SECRET-KEY-PQ-1") {
                identities.append(try HybridIdentity(encoded: text))
            } else {
                identities.append(X25519Identity(privateKey: try AgeKeyEncoding.parseIdentity(text)))
            }
        }
        for passphrase in vector.passphrases {
            identities.append(try AgeScrypt(passphrase: Array(passphrase.utf8)))
        }
        return identities
    }

    /// The class of failure an error stands for, in the vectors' words.
    static func failureClass(of error: Error) -> String {
        if case .malformedArmor? = error as? InteropError { return "armor failure" }
        if case .noMatchingKey? = error as? AccessError { return "no match" }
        switch error as? CofferError {
        case .headerMACMismatch?: return "HMAC failure"
        case .chunkAuthenticationFailed?, .truncated?, .trailingData?: return "payload failure"
        case .malformedHeader?, .malformedStanza?, .unsupportedVersion?: return "header failure"
        default: return "other error: \(error)"
        }
    }

    /// Writes the vector's age file to a temporary file (the decryptor reads files and pipes).
    static func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "coffer-age-vector-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

@Suite struct AgeVectorTests {
    @Test("every age vector file is run, or skipped with a stated reason")
    func inventory() {
        let (vectors, skipped, files) = AgeVectors.all
        print("age vectors: \(files) files, \(vectors.count) run, \(skipped.count) skipped")
        for (name, reason) in skipped { print("age vector \(name) skipped: \(reason)") }
        #expect(files == AgeTestVectors.expectedCount, "vectors not found in \(AgeTestVectors.directory)")
        #expect(vectors.count + skipped.count == files)
        #expect(skipped.isEmpty, "skipped: \(skipped.map(\.name))")
    }

    @Test("age vector", arguments: AgeVectors.all.vectors)
    func vector(_ vector: AgeVectors.Vector) throws {
        let path = try AgeVectors.temporaryFile(vector.file)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let identities = try AgeVectors.identities(of: vector)
        for threads in [1, 3] {
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            let sink = MemorySink()
            var failure: Error?
            do {
                _ = try AgeFile.decrypt(from: source, kind: vector.armored ? .armored : .binary, identities: identities,
                                        to: sink, threads: threads)
            } catch {
                failure = error
            }
            if vector.expect == "success" {
                #expect(failure == nil, "threads \(threads): \(failure.map { "\($0)" } ?? "")")
            } else {
                let got = failure.map(AgeVectors.failureClass) ?? "success"
                #expect(got == vector.expect, "threads \(threads): \(failure.map { "\($0)" } ?? "no error")")
            }
            if let payload = vector.payload {
                // Exactly the authenticated plaintext before the failure (or all of it) was released.
                #expect(hex(SHA256.hash(data: sink.bytes)) == payload, "threads \(threads): released \(sink.bytes.count) bytes")
            } else if vector.expect != "success" {
                #expect(sink.bytes.isEmpty, "threads \(threads): released \(sink.bytes.count) bytes")
            }
        }
    }
}
