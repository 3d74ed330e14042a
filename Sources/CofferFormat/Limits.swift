/// The numeric limits of format version 1 (docs/FORMAT.md, "Limits").
public enum Limits {
    /// The first line of every version-1 file, without its line feed.
    public static let versionLine = "coffer/v1"
    /// Version 2's lead line is this, a space, and the header slot size.
    public static let versionLineV2 = "coffer/v2"
    /// Smallest and largest payload chunk size, in plaintext bytes.
    public static let minChunkSize = 4 * 1024
    public static let maxChunkSize = 16 * 1024 * 1024
    /// Chosen by measurement (docs/PERFORMANCE.md): 1 MiB chunks reach ~0.76 of the raw AES-GCM
    /// ceiling through swift-crypto's public API, 64 KiB chunks only ~0.6.
    public static let defaultChunkSize = 1024 * 1024
    /// Largest header, from the version line through the MAC line's line feed.
    public static let maxHeaderSize = 256 * 1024
    /// Most stanzas one header may carry.
    public static let maxStanzas = 128
    /// Largest object name (bytes, before base64).
    public static let maxObjectNameSize = 4096
    /// Bytes of the per-file payload nonce that follows the header.
    public static let payloadNonceSize = 16
    /// Bytes of an AEAD tag appended to every chunk.
    public static let tagSize = 16
    /// Bytes of a file key.
    public static let fileKeySize = 32
}
