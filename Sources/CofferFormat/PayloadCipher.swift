import Crypto
import Foundation

/// The AEAD that seals payload chunks.
public enum PayloadCipher: String, CaseIterable, Sendable {
    /// The default: swift-crypto's BoringSSL AES-GCM uses VAES/AVX-512 here (~12–15 GB/s per core).
    case aes256gcm = "aes-256-gcm"
    /// For CPUs without AES instructions (~2.5 GB/s per core here).
    case chacha20poly1305 = "chacha20-poly1305"

    /// The 12-byte STREAM nonce: 11-byte big-endian chunk counter, then 0x01 for the final chunk, else 0x00.
    @inline(__always)
    public static func chunkNonce(counter: UInt64, isFinal: Bool) -> [UInt8] {
        var n = [UInt8](repeating: 0, count: 12)
        var c = counter
        // The counter's top 3 bytes stay zero: 2^64 chunks is beyond any file.
        for i in stride(from: 10, through: 3, by: -1) {
            n[i] = UInt8(truncatingIfNeeded: c)
            c >>= 8
        }
        n[11] = isFinal ? 1 : 0
        return n
    }

    /// Seals one chunk; returns the ciphertext and the 16-byte tag, which are written in that order.
    /// They are returned as swift-crypto made them: copying them into a buffer of ours would cost
    /// one more pass over memory per chunk.
    func seal(_ plaintext: UnsafeRawBufferPointer, key: SymmetricKey, counter: UInt64, isFinal: Bool) throws -> [Data] {
        let nonceBytes = Self.chunkNonce(counter: counter, isFinal: isFinal)
        switch self {
        case .aes256gcm:
            let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonceBytes))
            return [box.ciphertext, box.tag]
        case .chacha20poly1305:
            let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonceBytes))
            return [box.ciphertext, box.tag]
        }
    }

    /// Opens a sealed chunk (ciphertext then 16-byte tag); returns the plaintext, or nil when
    /// authentication fails. (age files' chunks are ChaCha20-Poly1305 chunks with this nonce layout.)
    public func open(_ sealed: UnsafeRawBufferPointer, key: SymmetricKey, counter: UInt64, isFinal: Bool) -> Data? {
        precondition(sealed.count >= Limits.tagSize)
        let nonceBytes = Self.chunkNonce(counter: counter, isFinal: isFinal)
        let split = sealed.count - Limits.tagSize
        let ciphertext = UnsafeRawBufferPointer(rebasing: sealed[0..<split])
        let tag = UnsafeRawBufferPointer(rebasing: sealed[split...])
        switch self {
        case .aes256gcm:
            guard let box = try? AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonceBytes), ciphertext: ciphertext, tag: tag)
            else { return nil }
            return try? AES.GCM.open(box, using: key)
        case .chacha20poly1305:
            guard let box = try? ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: nonceBytes), ciphertext: ciphertext, tag: tag)
            else { return nil }
            return try? ChaChaPoly.open(box, using: key)
        }
    }
}
