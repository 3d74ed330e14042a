import Crypto
import Foundation

/// The random 256-bit key that the stanzas wrap.
///
/// One file key may be shared by many files (a directory run, later a backup set); each file
/// then derives its own keys from it and its object name (see ``KeySchedule``).
public struct FileKey: Sendable {
    public let key: SymmetricKey

    public init(bytes: [UInt8]) throws {
        guard bytes.count == Limits.fileKeySize else {
            throw AccessError.wrongFileKeyLength(expected: Limits.fileKeySize, got: bytes.count)
        }
        key = SymmetricKey(data: bytes)
    }

    public static func random() -> FileKey {
        // SymmetricKey(size:) draws from the system CSPRNG.
        // Cannot throw: a 256-bit SymmetricKey is exactly the 32 bytes the initializer requires.
        try! FileKey(bytes: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public var bytes: [UInt8] { key.withUnsafeBytes { Array($0) } }
}
