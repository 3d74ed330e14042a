@_spi(TestVectors) import CofferFormat
import CofferKeys
import Foundation
import Testing

/// Issue 11, item 3: the format module's own error type holds only format, integrity, I/O and
/// parameter errors; what the format decides about keys (no stanza opened, no recipient, signers
/// not accepted) is an ``AccessError`` (exit class "key"), and no message names a command-line flag.
@Suite struct ErrorSplit {
    /// Every case of ``CofferError``. The switch is exhaustive: a new case must be listed here, and
    /// so gets checked for its category.
    static func category(of error: CofferError) -> ErrorCategory {
        switch error {
        case .notCofferFile, .unsupportedVersion, .malformedHeader, .malformedStanza, .headerMACMismatch,
             .objectMismatch, .notInRun, .chunkAuthenticationFailed, .truncated, .trailingData, .invalidParameter,
             .readFailed, .writeFailed, .diskFull, .headerSpaceExhausted, .signatureInvalid:
            return error.category
        }
    }

    static let everyCofferError: [CofferError] = [
        .notCofferFile(hint: nil), .unsupportedVersion("x"), .malformedHeader("x"), .malformedStanza(type: "t", reason: "r"),
        .headerMACMismatch, .objectMismatch(expected: "a", found: "b"), .notInRun("x"),
        .chunkAuthenticationFailed(chunk: 1, reason: "r"), .truncated("x"), .trailingData(afterChunk: 1),
        .invalidParameter("x"), .readFailed(path: "p", reason: "r"), .writeFailed(path: "p", reason: "r"),
        .diskFull(path: "p"), .headerSpaceExhausted(needed: 2, available: 1), .signatureInvalid("x"),
    ]

    @Test("no CofferError case is a key error: the format module's own errors are format, integrity, I/O or usage")
    func cofferErrorHasNoKeyCase() {
        for error in Self.everyCofferError {
            #expect(Self.category(of: error) != .key, "\(error)")
        }
    }

    @Test("every AccessError is a key error (exit code 2) and names no flag")
    func accessErrorsAreKeyErrors() {
        let all: [AccessError] = [
            .noMatchingKey(needed: ["key file 1"], tried: []), .noRecipient("no key to encrypt to"),
            .wrongFileKeyLength(expected: 32, got: 16), .signerNotAccepted(found: [], accepted: ["ed25519 1"]),
            .signerNotAccepted(found: ["ed25519 2"], accepted: ["ed25519 1"]),
        ]
        for error in all {
            #expect(error.category == .key, "\(error)")
            #expect(!"\(error)".contains("--"), "\(error)")
        }
    }

    @Test("a wrong key, no recipient and a bad file key length are AccessErrors from the format itself")
    func formatThrowsAccessErrors() throws {
        let key = testKey(), other = testKey()
        let sealed = try encryptToBytes(deterministicBytes(1000), key: key, parameters: HeaderParameters(chunkSize: 4096), threads: 1)
        #expect(throws: AccessError.noMatchingKey(needed: ["key file \(key.keyID)"], tried: ["key file \(other.keyID)"])) {
            _ = try decryptBytes(sealed, key: other, threads: 1)
        }
        #expect(throws: AccessError.noRecipient("no key to encrypt to")) { _ = try CofferEncryptor(recipients: []) }
        #expect(throws: AccessError.wrongFileKeyLength(expected: 32, got: 16)) {
            _ = try FileKey(bytes: [UInt8](repeating: 1, count: 16))
        }
    }
}
