import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Re-encrypts files under a new file key, for when a file key itself may have leaked (a removed
/// key's holder may have read it): the old file is decrypted into a pipe, encrypted to the new
/// recipients under a fresh file key, the new file read back and authenticated (it must hold
/// exactly the old file's plaintext), then renamed over the old one. The plaintext never touches
/// the disk; an interruption leaves the old file.
///
/// Files of one invocation share a new file key only while their object names differ
/// (docs/FORMAT.md: files sharing a file key MUST have different object names): a file whose
/// object name was already used (two files encrypted on their own both have the empty name) gets
/// a fresh file key from `makeEncryptor`.
public final class Reencrypt {
    public private(set) var encryptor: CofferEncryptor
    public let threads: Int
    private let makeEncryptor: () throws -> CofferEncryptor
    private var usedObjectNames: Set<[UInt8]> = []

    public init(threads: Int, makeEncryptor: @escaping () throws -> CofferEncryptor) throws {
        self.threads = threads
        self.makeEncryptor = makeEncryptor
        encryptor = try makeEncryptor()
    }

    public struct Outcome: Sendable {
        public var bytes: UInt64
        /// The old file was signed and the new one is not (no signer given): a signature covers
        /// the payload, which a re-encryption replaces.
        public var droppedSignature: Bool
        /// The file got a file key of its own (its object name was already used in this invocation).
        public var freshFileKey: Bool
    }

    public func reencrypt(path: String, identities: [Identity]) throws -> Outcome {
        let (directory, name) = try DirectoryHandle.parent(of: path)
        let source = try directory.openRegularFile(name)
        defer { source.close() }
        let opened = try HeaderReading.read(from: source).open(with: identities)
        let parameters = opened.header.parameters
        var fresh = false
        if usedObjectNames.contains(parameters.objectName) {
            encryptor = try makeEncryptor()
            usedObjectNames = []
            fresh = true
        }
        usedObjectNames.insert(parameters.objectName)
        let encryptor = self.encryptor
        let threads = self.threads
        let output = try AtomicOutputFile(directory: directory, name: name,
                                          mode: OutputMode.forReplacement(of: DirectoryRun.mode(of: source)),
                                          overwrite: true, displayPath: path)
        let box = UncheckedBox((opened, source, threads))
        // The old file's plaintext flows through a pipe into the encryptor; the new file is read
        // back and must hold exactly that plaintext before it replaces the old one.
        let bytes = try VerifiedReplacement.write(
            .decrypted(name: "decrypted \(path)", path: path) { pipe in
                let (opened, source, threads) = box.value
                let hashing = HashingSink(pipe)
                _ = try opened.decrypt(from: source, to: hashing, engine: StreamEngine(threads: threads))
                return hashing.digest
            },
            into: output, encryptor: encryptor, parameters: parameters, engine: StreamEngine(threads: threads)).bytes
        return Outcome(bytes: bytes, droppedSignature: parameters.signature != nil && encryptor.signer == nil,
                       freshFileKey: fresh)
    }
}
