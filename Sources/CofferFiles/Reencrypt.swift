import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Re-encrypts files under a new file key, for when a file key itself may have leaked (a removed
/// key's holder may have read it): the old file is decrypted into a pipe, encrypted to the new
/// recipients under a fresh file key, the new file read back and authenticated, then renamed over
/// the old one. The plaintext never touches the disk; an interruption leaves the old file.
public struct Reencrypt {
    public let encryptor: CofferEncryptor
    public let threads: Int

    public init(encryptor: CofferEncryptor, threads: Int) {
        self.encryptor = encryptor
        self.threads = threads
    }

    public struct Outcome: Sendable {
        public var bytes: UInt64
        /// The old file was signed and the new one is not (no signer given): a signature covers
        /// the payload, which a re-encryption replaces.
        public var droppedSignature: Bool
    }

    public func reencrypt(path: String, identities: [Identity]) throws -> Outcome {
        let source = try ByteSource.open(path: path)
        defer { source.close() }
        let opened = try HeaderReading.read(from: source).open(with: identities)
        let parameters = opened.header.parameters
        var st = stat()
        guard fstat(source.fd, &st) == 0 else { throw CofferError.readFailed(path: path, reason: String(cString: strerror(errno))) }
        let output = try AtomicOutputFile(path: path, mode: st.st_mode & 0o7777, overwrite: true)
        let box = UncheckedBox((opened, source, threads))
        let bytes = try output.complete { sink in
            let (plaintext, finished) = try PipedProducer.start(name: "decrypted \(path)", for: path) { pipe in
                let (opened, source, threads) = box.value
                return try opened.decrypt(from: source, to: pipe, engine: StreamEngine(threads: threads))
            }
            let written: UInt64
            do {
                written = try encryptor.encrypt(from: plaintext, to: sink, parameters: parameters,
                                                engine: StreamEngine(threads: threads))
            } catch {
                plaintext.close()
                _ = try? finished()
                throw error
            }
            plaintext.close()
            // A failure while decrypting ends the pipe early: that prefix is never kept.
            let read = try finished()
            guard read == written else {
                throw CofferError.writeFailed(path: path, reason: "encrypted \(written) of \(read) bytes")
            }
            let check = try ByteSource.open(path: output.temporaryPath)
            defer { check.close() }
            let verified = try HeaderReading.read(from: check).open(fileKey: encryptor.fileKey)
                .decrypt(from: check, to: DiscardingSink(), engine: StreamEngine(threads: threads))
            guard verified == written else {
                throw CofferError.writeFailed(path: path, reason: "verification read back \(verified) of \(written) bytes")
            }
            return written
        }
        return Outcome(bytes: bytes, droppedSignature: parameters.signature != nil && encryptor.signer == nil)
    }
}
