import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A private key file encrypted with a passphrase (`coffer keygen --protect`): an ordinary Coffer
/// file with one `scrypt` stanza whose plaintext is the key file's text. Any Coffer reader can
/// therefore open it, and nothing new enters the format.
public enum ProtectedKeyFile {
    public static func isProtected(_ content: [UInt8]) -> Bool {
        content.starts(with: Array("\(Limits.versionLine)\n".utf8)) || content.starts(with: Array("\(Limits.versionLineV2) ".utf8))
    }

    public static func protect(_ text: String, passphrase: Passphrase) throws -> [UInt8] {
        let source = try memorySource(Array(text.utf8), name: "key text")
        defer { source.close() }
        let sink = MemorySink()
        _ = try CofferEncryptor(recipients: [passphrase]).encrypt(
            from: source, to: sink, parameters: HeaderParameters(chunkSize: Limits.minChunkSize),
            engine: StreamEngine(threads: 1))
        return sink.bytes
    }

    /// Decrypts a protected key file; a wrong passphrase is reported for this file by name.
    public static func unprotect(_ content: [UInt8], passphrase: Passphrase, source name: String) throws -> String {
        let source = try memorySource(content, name: name)
        defer { source.close() }
        let reading = try HeaderReading.read(from: source)
        let opened: OpenedFile
        do { opened = try reading.open(with: [passphrase]) } catch AccessError.noMatchingKey {
            throw KeyError.invalid("wrong passphrase for the protected key file \(name)")
        }
        let sink = MemorySink()
        _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: 1))
        guard let text = String(validating: sink.bytes, as: UTF8.self) else {
            throw KeyError.invalid("\(name) does not hold a key file's text")
        }
        return text
    }

    /// A readable descriptor holding `bytes`: key files are small enough to sit in a pipe's buffer
    /// (64 KiB on Linux; the largest key text, RSA-4096 PKCS#8 PEM, is about 3.3 KB).
    static func memorySource(_ bytes: [UInt8], name: String) throws -> ByteSource {
        guard bytes.count <= 60_000 else { throw KeyError.invalid("\(name) is too large for a key file") }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw CofferError.readFailed(path: name, reason: String(cString: strerror(errno))) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fds[1], $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                close(fds[0]); close(fds[1])
                throw CofferError.readFailed(path: name, reason: String(cString: strerror(errno)))
            }
            offset += n
        }
        close(fds[1])
        return ByteSource(fd: fds[0], path: name)
    }
}
