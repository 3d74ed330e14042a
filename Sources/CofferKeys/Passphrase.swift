import CofferFormat
import Crypto
import _CryptoExtras
import Foundation

/// A passphrase, stretched with scrypt: the `scrypt` stanza (docs/FORMAT.md, "scrypt stanza").
///
/// ```
/// -> scrypt SALT LOG2N
/// body = ChaCha20-Poly1305(key: scrypt(P, S: "coffer/v1 scrypt" || SALT, N: 2^LOG2N, r: 8, p: 1, 32 bytes),
///                          nonce: 12 zero bytes, plaintext: file key)      ; 48 bytes
/// ```
/// Derived wrapping keys are cached by (salt, work factor), so a directory run whose files all
/// carry the same stanza pays for scrypt once.
public final class Passphrase: Recipient, Identity, StanzaKind, @unchecked Sendable {
    public static let stanzaType = Header.scryptStanzaType
    public static let stanzaTypes = [stanzaType]
    /// log2(N) written by default: about one second per derivation on this project's machines
    /// (docs/PERFORMANCE.md, "scrypt").
    public static let defaultWorkFactor = 18
    /// The most a reader accepts: 2^22 needs 4 GiB of memory (128 · r · N bytes).
    public static let maxWorkFactor = 22
    /// The least a writer accepts.
    public static let minWorkFactor = 10

    private let passphrase: [UInt8]
    public let workFactor: Int
    private let lock = NSLock()
    private var cache: [String: SymmetricKey] = [:]
    /// How many scrypt derivations this instance ran (tests check that a run derives once).
    public private(set) var derivations = 0

    public init(_ passphrase: [UInt8], workFactor: Int = Passphrase.defaultWorkFactor) throws {
        guard !passphrase.isEmpty else { throw KeyError.invalid("the passphrase is empty") }
        guard (Self.minWorkFactor...Self.maxWorkFactor).contains(workFactor) else {
            throw CofferError.invalidParameter(
                "scrypt work factor must be \(Self.minWorkFactor)...\(Self.maxWorkFactor) (log2 of N), got \(workFactor)")
        }
        self.passphrase = passphrase
        self.workFactor = workFactor
    }

    public var label: String { "passphrase" }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    func wrappingKey(salt: [UInt8], workFactor: Int) throws -> SymmetricKey {
        let cacheKey = "\(RawBase64.encode(salt)) \(workFactor)"
        lock.lock()
        defer { lock.unlock() }
        if let key = cache[cacheKey] { return key }
        let key = try KDF.Scrypt.deriveKey(from: passphrase, salt: Array("coffer/v1 scrypt".utf8) + salt,
                                           outputByteCount: 32, rounds: 1 << workFactor, blockSize: 8, parallelism: 1)
        derivations += 1
        cache[cacheKey] = key
        return key
    }

    /// Coffer's `scrypt` stanza wraps Coffer's 32-byte file keys; age files take ``AgeScrypt``.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        [try wrap(fileKey: fileKey, salt: SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })]
    }

    /// Deterministic variant for test vectors only.
    @_spi(TestVectors)
    public func wrap(fileKey: [UInt8], salt: [UInt8]) throws -> Stanza {
        guard fileKey.count == Limits.fileKeySize else {
            throw KeyError.invalid("Coffer's passphrase stanza wraps \(Limits.fileKeySize)-byte file keys; age files use age's scrypt stanza")
        }
        let body = try WrapAEAD.seal(fileKey, key: wrappingKey(salt: salt, workFactor: workFactor))
        return Stanza(type: Self.stanzaType, arguments: [RawBase64.encode(salt), String(workFactor)], body: body)
    }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        for stanza in stanzas where stanza.type == Self.stanzaType {
            let (salt, workFactor) = try Self.parseArguments(stanza)
            // nil: a wrong passphrase and an altered stanza look the same here.
            if let key = WrapAEAD.open(stanza.body, key: try wrappingKey(salt: salt, workFactor: workFactor)) { return key }
        }
        return nil
    }

    static func parseArguments(_ stanza: Stanza) throws -> ([UInt8], Int) {
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "expected 2 arguments (salt, work factor)")
        }
        let salt = try WrapAEAD.salt(stanza.arguments[0], stanzaType: stanzaType)
        let text = stanza.arguments[1]
        guard let first = text.first, first != "0", text.count <= 2, text.allSatisfy(\.isASCIIDigitCharacter),
              let workFactor = Int(text), workFactor >= 1 else {
            throw CofferError.malformedStanza(type: stanzaType, reason: "work factor must be a decimal number without leading zeros")
        }
        guard workFactor <= maxWorkFactor else {
            throw KeyError.refused(
                "the file's scrypt work factor 2^\(workFactor) exceeds the maximum 2^\(maxWorkFactor) (it would need \((1 << workFactor) >> 20) GiB of memory)")
        }
        try WrapAEAD.checkBody(stanza, fileKeySizes: [Limits.fileKeySize])
        return (salt, workFactor)
    }

    public static func describe(_ stanza: Stanza) -> String {
        "passphrase (scrypt 2^\(stanza.arguments.count > 1 ? stanza.arguments[1] : "?"))"
    }

    public static func keyID(of stanza: Stanza) -> String? { nil }
}

extension Character {
    var isASCIIDigitCharacter: Bool { ("0"..."9").contains(self) && isASCII }
}

// MARK: - age's scrypt stanza

/// age's passphrase stanza (AGE-FORMAT.md §1.8):
/// `-> scrypt SALT LOG2N`, wrap key = scrypt(passphrase, "age-encryption.org/v1/scrypt" || SALT, N = 2^LOG2N, r = 8, p = 1).
/// It differs from Coffer's own `scrypt` stanza in its salt label and its 16-byte file key.
public final class AgeScrypt: Identity, Recipient, @unchecked Sendable {
    public static let stanzaType = "scrypt"
    static let saltLabel = Array("age-encryption.org/v1/scrypt".utf8)
    /// age's defaults: 2^18 when writing (about a second); at most 2^22 (4 GiB) when reading.
    public static let defaultWorkFactor = 18
    public static let maxWorkFactor = 22

    private let passphrase: [UInt8]
    public let workFactor: Int

    public init(passphrase: [UInt8], workFactor: Int = AgeScrypt.defaultWorkFactor) throws {
        guard !passphrase.isEmpty else { throw KeyError.invalid("the passphrase is empty") }
        guard (1...Self.maxWorkFactor).contains(workFactor) else {
            throw CofferError.invalidParameter("scrypt work factor must be 1...\(Self.maxWorkFactor), got \(workFactor)")
        }
        self.passphrase = passphrase
        self.workFactor = workFactor
    }

    public var label: String { "passphrase" }
    public func describe(_ stanza: Stanza) -> String? { KeyTypes.describe(stanza) }

    func wrappingKey(salt: [UInt8], workFactor: Int) throws -> SymmetricKey {
        try KDF.Scrypt.deriveKey(from: passphrase, salt: Self.saltLabel + salt, outputByteCount: 32,
                                 rounds: 1 << workFactor, blockSize: 8, parallelism: 1)
    }

    /// age's stanza wraps age's 16-byte file keys only.
    public func wrap(fileKey: [UInt8]) throws -> [Stanza] {
        guard fileKey.count == WrapAEAD.ageFileKeySize else {
            throw KeyError.invalid("age's passphrase stanza wraps \(WrapAEAD.ageFileKeySize)-byte file keys; Coffer files use Coffer's scrypt stanza")
        }
        let salt = SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }
        let body = try WrapAEAD.seal(fileKey, key: wrappingKey(salt: salt, workFactor: workFactor))
        return [Stanza(type: Self.stanzaType, arguments: [RawBase64.encode(salt), String(workFactor)], body: body)]
    }

    public func unwrap(stanzas: [Stanza]) throws -> [UInt8]? {
        try stanzas.firstFileKey(where: { $0.type == Self.stanzaType }) { try unwrap($0) }
    }

    func unwrap(_ stanza: Stanza) throws -> [UInt8]? {
        guard stanza.arguments.count == 2 else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "expected 2 arguments (salt, work factor)")
        }
        let salt = try WrapAEAD.argument(stanza.arguments[0], size: 16, stanzaType: stanza.type, what: "salt")
        let text = stanza.arguments[1]
        // Decimal, no sign, no leading zero: one spelling per number.
        guard let first = text.utf8.first, first != 0x30, text.utf8.count <= 2,
              text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let workFactor = Int(text) else {
            throw CofferError.malformedStanza(type: stanza.type, reason: "the work factor must be a decimal number without sign or leading zeros")
        }
        guard workFactor <= Self.maxWorkFactor else {
            throw CofferError.malformedStanza(
                type: stanza.type, reason: "work factor 2^\(workFactor) exceeds the maximum 2^\(Self.maxWorkFactor) (it would need \((1 << workFactor) >> 20) GiB of memory)")
        }
        try WrapAEAD.checkBody(stanza, fileKeySizes: [WrapAEAD.ageFileKeySize])
        return WrapAEAD.open(stanza.body, key: try wrappingKey(salt: salt, workFactor: workFactor))
    }
}
