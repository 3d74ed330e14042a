import CofferFormat
import CofferKeys
import Crypto
import Foundation

/// Reading and writing standard age v1 files (age-encryption.org/v1), binary or ASCII-armored,
/// so that files made by `age` open with Coffer and files made by Coffer open with `age -d`.
public enum AgeFile {
    public enum Kind: Sendable { case binary, armored }

    /// Enough leading bytes for ``kind(of:)`` (``FormatDetector/sniffLength``).
    public static let sniffLength = FormatDetector.sniffLength

    /// What `firstBytes` open: an age file, an armored age file, or neither (nil), as
    /// ``FormatDetector`` tells.
    public static func kind(of firstBytes: [UInt8]) -> Kind? {
        guard case .age(let armored) = FormatDetector.detect(firstBytes: firstBytes) else { return nil }
        return armored ? .armored : .binary
    }

    /// A header whose file key was unwrapped and whose MAC authenticated, and the payload key.
    public struct Opened {
        public let header: AgeHeader
        public let payloadKey: SymmetricKey
        /// Which identity opened it.
        public let identityLabel: String
    }

    /// Reads the header and the payload nonce from `input` and opens them with the first identity
    /// that unwraps a stanza (in the order given, trying every stanza for each), as age does.
    public static func open(_ input: AgeInput, identities: [Identity]) throws -> Opened {
        let header = try AgeHeader.read(from: input)
        try header.checkScryptAlone()
        for identity in identities {
            guard let fileKey = try identity.unwrap(stanzas: header.stanzas) else { continue }
            guard fileKey.count == AgeHeader.fileKeySize else {
                throw CofferError.malformedHeader("the stanza for \(identity.label) holds a \(fileKey.count)-byte file key; age's are \(AgeHeader.fileKeySize) bytes")
            }
            try header.verifyMAC(fileKey: fileKey)
            var nonce = [UInt8](repeating: 0, count: AgeHeader.nonceSize)
            let got = try nonce.withUnsafeMutableBytes { try input.readFully(into: $0) }
            guard got == AgeHeader.nonceSize else {
                throw CofferError.malformedHeader("the file ends \(got == 0 ? "right after the header" : "inside the payload nonce")")
            }
            return Opened(header: header, payloadKey: AgeStream.payloadKey(fileKey: fileKey, nonce: nonce),
                          identityLabel: identity.label)
        }
        throw AccessError.noMatchingKey(needed: header.stanzas.reduce(into: [String]()) { needed, stanza in
            let description = KeyTypes.describe(stanza)
            if !needed.contains(description) { needed.append(description) }
        }, tried: identities.map(\.label))
    }

    /// Decrypts an age file from `source` to `sink`; only authenticated plaintext is written.
    /// Returns the plaintext byte count.
    public static func decrypt(from source: ByteSource, kind: Kind, identities: [Identity], to sink: ByteSink,
                               threads: Int, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> UInt64 {
        let input: AgeInput = kind == .armored ? AgeArmor.Reader(source: source) : source
        let opened = try open(input, identities: identities)
        return try AgeStream.open(from: input, to: sink, payloadKey: opened.payloadKey, threads: threads, progress: progress)
    }

    /// Writes age files to a fixed set of recipients.
    public struct Encryptor: Sendable {
        public let recipients: [Recipient]
        public var armor: Bool

        public init(recipients: [Recipient], armor: Bool = false) throws {
            guard !recipients.isEmpty else { throw AccessError.noRecipient("an age file needs at least one recipient") }
            // age's rules: a passphrase is the only recipient, and post-quantum and classic
            // recipients are not mixed (a classic one would undo the post-quantum protection).
            if recipients.count > 1, recipients.contains(where: { $0 is AgeScrypt }) {
                throw InteropError.recipientsNotAllowed("an age file with a passphrase can have no other recipient (age's rule)")
            }
            let postQuantum = recipients.filter { $0 is HybridRecipient }.count
            if postQuantum > 0 && postQuantum < recipients.count {
                throw InteropError.recipientsNotAllowed("an age file cannot mix post-quantum (age1pq1…) and classic recipients (age's rule)")
            }
            self.recipients = recipients
            self.armor = armor
        }

        /// Encrypts everything `source` yields to a new age file in `sink`; returns the plaintext byte count.
        public func encrypt(from source: ByteSource, to sink: ByteSink, engine: StreamEngine) throws -> UInt64 {
            let fileKey = SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }
            let stanzas = try recipients.flatMap { try $0.wrap(fileKey: fileKey) }
            let nonce = SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }
            let armorWriter = armor ? try AgeArmor.Writer(sink: sink) : nil
            let out: ByteSink = armorWriter ?? sink
            try (AgeHeader.encode(stanzas: stanzas, fileKey: fileKey) + nonce).withUnsafeBytes { try out.write($0) }
            let total = try AgeStream.seal(from: source, to: out, payloadKey: AgeStream.payloadKey(fileKey: fileKey, nonce: nonce),
                                           engine: engine)
            try armorWriter?.finish()
            return total
        }
    }
}
