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
public final class Passphrase: Recipient, Identity, @unchecked Sendable {
    public static let stanzaType = Header.scryptStanzaType
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
        KeyTypes.registerAll()
        guard !passphrase.isEmpty else { throw CofferError.invalidKey("the passphrase is empty") }
        guard (Self.minWorkFactor...Self.maxWorkFactor).contains(workFactor) else {
            throw CofferError.invalidParameter(
                "scrypt work factor must be \(Self.minWorkFactor)...\(Self.maxWorkFactor) (log2 of N), got \(workFactor)")
        }
        self.passphrase = passphrase
        self.workFactor = workFactor
    }

    public var label: String { "passphrase" }

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

    public func wrap(_ fileKey: FileKey) throws -> Stanza {
        try wrap(fileKey, salt: SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })
    }

    /// Deterministic variant for test vectors only.
    @_spi(TestVectors)
    public func wrap(_ fileKey: FileKey, salt: [UInt8]) throws -> Stanza {
        let body = try WrapAEAD.seal(fileKey.bytes, key: wrappingKey(salt: salt, workFactor: workFactor))
        return Stanza(type: Self.stanzaType, arguments: [RawBase64.encode(salt), String(workFactor)], body: body)
    }

    public func unwrap(_ stanza: Stanza) throws -> FileKey? {
        guard stanza.type == Self.stanzaType else { return nil }
        let (salt, workFactor) = try Self.parseArguments(stanza)
        guard let key = WrapAEAD.open(stanza.body, key: try wrappingKey(salt: salt, workFactor: workFactor)) else {
            return nil  // a wrong passphrase and an altered stanza look the same here
        }
        return try FileKey(bytes: key)
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
            throw CofferError.refused(
                "the file's scrypt work factor 2^\(workFactor) exceeds the maximum 2^\(maxWorkFactor) (it would need \((1 << workFactor) >> 20) GiB of memory)")
        }
        try WrapAEAD.checkBodySize(stanza)
        return (salt, workFactor)
    }

    public static func registerDescription() {
        StanzaDescriptions.register(type: stanzaType) { stanza in
            "passphrase (scrypt 2^\(stanza.arguments.count > 1 ? stanza.arguments[1] : "?"))"
        }
    }
}

extension Character {
    var isASCIIDigitCharacter: Bool { ("0"..."9").contains(self) && isASCII }
}

/// Key types known to this build. Their stanza descriptions are registered the first time any
/// key type is made (or by an explicit ``registerAll()``), so that "no key opens this file"
/// can name every stanza, including those of types the user gave no key for.
public enum KeyTypes {
    static let registration: Void = {
        SymmetricKeyFile.registerDescription()
        Passphrase.registerDescription()
        X25519Recipient.registerDescription()
        RSARecipient.registerDescription()
        HybridRecipient.registerDescription()
        KMSStanza.registerDescription()
    }()

    public static func registerAll() { registration }

    /// The key id a stanza names (`keyfile`, `rsa-oaep`, and `X25519`/`mlkem768x25519` written by
    /// Coffer); nil for stanzas that name no key (passphrases, age's anonymous stanzas).
    public static func keyID(of stanza: Stanza) -> String? {
        switch stanza.type {
        case SymmetricKeyFile.stanzaType, RSARecipient.stanzaType: return stanza.arguments.first
        case X25519Recipient.stanzaType, HybridRecipient.stanzaType: return stanza.arguments.count == 2 ? stanza.arguments[1] : nil
        case KMSStanza.awsType, KMSStanza.vaultType: return KMSStanza.keyID(of: stanza)
        default: return nil
        }
    }

    /// The key id a recipient's stanzas carry, when it names one.
    public static func keyID(of recipient: Recipient) -> String? {
        switch recipient {
        case let key as SymmetricKeyFile: return key.keyID
        case let key as X25519Recipient: return key.keyID
        case let key as RSARecipient: return key.keyID
        case let key as HybridRecipient: return key.keyID
        default: return nil
        }
    }
}
