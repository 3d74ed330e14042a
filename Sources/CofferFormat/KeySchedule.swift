import Crypto
import Foundation

/// Derivation of a file's keys from its file key (docs/FORMAT.md, "Key schedule").
public enum KeySchedule {
    static func hkdf(_ ikm: SymmetricKey, salt: [UInt8], info: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, salt: salt, info: info, outputByteCount: 32)
    }

    /// object key = HKDF-SHA256(ikm: file key, salt: "", info: "coffer/v1 object" || 0x00 || object name)
    public static func objectKey(fileKey: FileKey, objectName: [UInt8]) -> SymmetricKey {
        hkdf(fileKey.key, salt: [], info: Array("coffer/v1 object".utf8) + [0] + objectName)
    }

    /// header MAC key = HKDF-SHA256(ikm: object key, salt: "", info: "coffer/v1 header")
    public static func headerMACKey(objectKey: SymmetricKey) -> SymmetricKey {
        hkdf(objectKey, salt: [], info: Array("coffer/v1 header".utf8))
    }

    /// payload key = HKDF-SHA256(ikm: object key, salt: payload nonce, info: "coffer/v1 payload " || cipher name)
    public static func payloadKey(objectKey: SymmetricKey, nonce: [UInt8], cipher: PayloadCipher) -> SymmetricKey {
        hkdf(objectKey, salt: nonce, info: Array("coffer/v1 payload \(cipher.rawValue)".utf8))
    }

    public static func headerMAC(_ bytes: [UInt8], objectKey: SymmetricKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: headerMACKey(objectKey: objectKey)))
    }
}
