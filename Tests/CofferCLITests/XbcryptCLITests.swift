import Crypto
import _CryptoExtras
import Foundation
import Testing

/// `coffer decrypt` on XtraBackup .xbcrypt files, through the real binary.
@Suite struct XbcryptCommand {
    static let vectors = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/vectors/xbcrypt").path
    static let file = "\(vectors)/aes256_chunk4096_len300000.xbcrypt"
    static let key = "xbcrypt-test-vectors-key-aes-256"
    static let plaintext = (0..<300_000).map { UInt8(($0 * 7) % 251) }

    @Test("an .xbcrypt file decrypts with --key-file (raw bytes), XBCRYPT_ENCRYPTION_KEY, from a pipe, with a note")
    func decrypts() throws {
        let dir = Scratch()
        let keyFile = try dir.write(Array(Self.key.utf8), "xb.key")
        let viaFile = try coffer(["decrypt", "--key-file", keyFile, "--encrypt-algo", "AES256", "-o", dir.file("out"), Self.file])
        #expect(viaFile.status == Exit.ok, "\(viaFile.stderr)")
        #expect(try dir.read("out") == Self.plaintext)
        #expect(viaFile.stderr.contains("not authenticated"))
        let viaEnv = try coffer(["decrypt", Self.file], environment: ["XBCRYPT_ENCRYPTION_KEY": Self.key])
        #expect(viaEnv.stdout == Self.plaintext)
        let piped = try coffer(["decrypt", "-q", "--key-file", keyFile],
                               stdin: [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.file))))
        #expect(piped.stdout == Self.plaintext)
        #expect(piped.stderr.isEmpty)
    }

    @Test("a wrong key is refused with exit 2 and no output; a key with a stray newline is named")
    func wrongKeys() throws {
        let dir = Scratch()
        let wrong = try dir.write(Array("xbcrypt-test-vectors-key-aes-25X".utf8), "wrong.key")
        let result = try coffer(["decrypt", "--key-file", wrong, "-o", dir.file("out"), Self.file])
        #expect(result.status == Exit.key)
        #expect(result.stderr.contains("wrong xbcrypt key"))
        #expect(dir.absent("out"))
        let newline = try dir.write(Array((Self.key + "\n").utf8), "newline.key")
        let named = try coffer(["decrypt", "--key-file", newline, Self.file])
        #expect(named.status == Exit.key)
        #expect(named.stderr.contains("line feed"))
        #expect(try coffer(["decrypt", Self.file]).stderr.contains("XBCRYPT_ENCRYPTION_KEY"))
    }

    /// zlib's CRC-32, bit by bit: an independent check of the reader's table-driven one.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
        }
        return ~crc
    }

    /// One XBCRYP01 or XBCRYP02 chunk made as xbcrypt 2.x did: AES-CTR from a zero counter, no hash.
    static func oldChunk(_ plaintext: [UInt8], key: [UInt8], version: UInt8) throws -> [UInt8] {
        let payload = [UInt8](try AES._CTR.encrypt(plaintext, using: SymmetricKey(data: key),
                                                   nonce: AES._CTR.Nonce(nonceBytes: [UInt8](repeating: 0, count: 16))))
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var chunk = Array("XBCRYP0".utf8) + [version] + le(0, 8) + le(UInt64(plaintext.count), 8)
        chunk += le(UInt64(payload.count), 8) + le(UInt64(Self.crc32(payload)), 4)
        if version == 0x32 { chunk += le(16, 8) + [UInt8](repeating: 0xAB, count: 16) }  // an IV nobody applied
        return chunk + payload
    }

    @Test("XBCRYP01/02 chunks decrypt, with a warning that integrity cannot be checked")
    func oldVersions() throws {
        let dir = Scratch()
        let key = Array("0123456789abcdef".utf8)
        let text = Array("old backup chunk one|".utf8)
        let file = try Self.oldChunk(text, key: key, version: 0x31) + Self.oldChunk(text, key: key, version: 0x32)
        let path = try dir.write(file, "old.xbcrypt")
        let keyFile = try dir.write(key, "old.key")
        let result = try coffer(["decrypt", "--key-file", keyFile, path])
        #expect(result.status == Exit.ok, "\(result.stderr)")
        #expect(result.stdout == text + text)
        #expect(result.stderr.contains("warning: this .xbcrypt file has XBCRYP01 chunks, which carry no integrity check"))
    }

    @Test("decrypt --recursive on an XtraBackup target directory: every NAME.xbcrypt to NAME, originals removed")
    func targetDirectory() throws {
        let dir = Scratch()
        let names = ["aes256_chunk4096_len300000", "aes256_chunk65536_len65537", "aes256_chunk4096_len0"]
        let targets = ["backup/ibdata1", "backup/shop/orders.ibd.zst", "backup/xtrabackup_info"]
        for (name, target) in zip(names, targets) {
            _ = try dir.write([UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.vectors)/\(name).xbcrypt"))),
                              target + ".xbcrypt")
        }
        _ = try dir.write(try Self.oldChunk(Array("v1 data".utf8), key: Array(Self.key.utf8), version: 0x31),
                          "backup/old.frm.xbcrypt")
        let wrong = try dir.write(Array("xbcrypt-test-vectors-key-aes-25X".utf8), "wrong.key")
        let refused = try coffer(["decrypt", "--recursive", "--remove-original", "--key-file", wrong, dir.file("backup")])
        #expect(refused.status == Exit.key)
        for target in targets where target != "backup/xtrabackup_info" {
            #expect(dir.exists(target + ".xbcrypt") && dir.absent(target))
        }
        // The XBCRYP01 file "decrypted" with the wrong key (nothing can tell), but its original was kept.
        #expect(dir.exists("backup/old.frm.xbcrypt"))
        #expect(try dir.read("backup/old.frm") != Array("v1 data".utf8))
        #expect(refused.stderr.contains("the original was kept"))
        let keyFile = try dir.write(Array(Self.key.utf8), "xb.key")
        let result = try coffer(["decrypt", "--recursive", "--remove-original", "--force", "--key-file", keyFile,
                                 dir.file("backup")])
        #expect(result.status == Exit.ok, "\(result.stderr)")
        #expect(try dir.read("backup/ibdata1") == Self.plaintext)
        #expect(try dir.read("backup/shop/orders.ibd.zst") == Array(Self.plaintext.prefix(65537)))
        #expect(try dir.read("backup/xtrabackup_info").isEmpty)
        #expect(try dir.read("backup/old.frm") == Array("v1 data".utf8))
        #expect(dir.listing().filter { $0.hasSuffix(".xbcrypt") } == ["backup/old.frm.xbcrypt"])
        #expect(result.stderr.contains("warning: old.frm.xbcrypt: XBCRYP01/02 chunks carry no integrity check"))
    }

    @Test("migrate --from xbcrypt: one pass to .cof, verified; v3 originals removed, v1 kept; resumable; wrong old key refused")
    func migrate() throws {
        let dir = Scratch()
        _ = try dir.write([UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.file))), "backup/ibdata1.xbcrypt")
        _ = try dir.write([UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.vectors)/aes256_chunk65536_len65537.xbcrypt"))),
                          "backup/db/t1.ibd.xbcrypt")
        _ = try dir.write(try Self.oldChunk(Array("v1 data".utf8), key: Array(Self.key.utf8), version: 0x31),
                          "backup/old.frm.xbcrypt")
        let newKey = try dir.keygen("new.key")
        let wrongOld = try dir.write(Array("xbcrypt-test-vectors-key-aes-25X".utf8), "wrong.key")
        let refused = try coffer(["migrate", "--from", "xbcrypt", "--from-key-file", wrongOld, "--key-file", newKey,
                                  "--remove-original", dir.file("backup")])
        #expect(refused.status == Exit.key)
        #expect(dir.absent("backup/ibdata1.cof") && dir.exists("backup/ibdata1.xbcrypt"))
        try? FileManager.default.removeItem(atPath: dir.file("backup/old.frm.cof"))  // v1 "converts" under any key

        let oldKey = try dir.write(Array(Self.key.utf8), "old.key")
        // First without removal (as if interrupted before the removals), then again with it.
        let first = try coffer(["migrate", "--from", "xbcrypt", "--from-key-file", oldKey, "--key-file", newKey, dir.file("backup")])
        #expect(first.status == Exit.ok, "\(first.stderr)")
        #expect(dir.exists("backup/ibdata1.xbcrypt"))
        let second = try coffer(["migrate", "--from", "xbcrypt", "--from-key-file", oldKey, "--key-file", newKey,
                                 "--remove-original", dir.file("backup")])
        #expect(second.status == Exit.ok, "\(second.stderr)")
        #expect(second.stderr.contains("already converted"))
        #expect(second.stderr.contains("old.frm.xbcrypt: the original was kept: XBCRYP01/02 chunks cannot be checked"))
        #expect(dir.absent("backup/ibdata1.xbcrypt") && dir.absent("backup/db/t1.ibd.xbcrypt"))
        #expect(dir.exists("backup/old.frm.xbcrypt"))
        #expect(try coffer(["decrypt", "--key-file", newKey, dir.file("backup/ibdata1.cof")]).stdout == Self.plaintext)
        #expect(try coffer(["decrypt", "--key-file", newKey, dir.file("backup/db/t1.ibd.cof")]).stdout
            == Array(Self.plaintext.prefix(65537)))
        #expect(try coffer(["decrypt", "--key-file", newKey, dir.file("backup/old.frm.cof")]).stdout == Array("v1 data".utf8))
        #expect(try coffer(["inspect", dir.file("backup/db/t1.ibd.cof")]).stdoutText.contains("object:      db/t1.ibd"))
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })
        #expect(try coffer(["migrate", "--from", "gpg", "--key-file", newKey, dir.file("backup")]).status == Exit.usage)
    }

    @Test("verify checks what an .xbcrypt file allows: CRC-32 and v3's SHA-256; v1 files cannot be verified")
    func verify() throws {
        let dir = Scratch()
        let ok = try coffer(["verify", Self.file], environment: ["XBCRYPT_ENCRYPTION_KEY": Self.key])
        #expect(ok.status == Exit.ok, "\(ok.stderr)")
        #expect(ok.stderr.contains("300000 bytes, every chunk's CRC-32 and SHA-256 matched"))
        let wrong = try coffer(["verify", Self.file], environment: ["XBCRYPT_ENCRYPTION_KEY": "xbcrypt-test-vectors-key-aes-25X"])
        #expect(wrong.status == Exit.key)
        let old = try dir.write(try Self.oldChunk(Array("v1".utf8), key: Array(Self.key.utf8), version: 0x31), "old.xbcrypt")
        let unverifiable = try coffer(["verify", old], environment: ["XBCRYPT_ENCRYPTION_KEY": Self.key])
        #expect(unverifiable.status == Exit.key)
        #expect(unverifiable.stderr.contains("no integrity check"))
    }

    /// XBCRYP03 chunks as xbcrypt 8.0 writes them: random IV, AES-CTR over plaintext ‖ SHA-256.
    static func v3File(_ plaintext: [UInt8], key: [UInt8], chunkSize: Int = 65536) throws -> [UInt8] {
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var out: [UInt8] = []
        var start = 0
        while start < plaintext.count {
            let piece = Array(plaintext[start..<min(plaintext.count, start + chunkSize)])
            start += piece.count
            let iv = (0..<16).map { _ in UInt8.random(in: 0...255) }
            let payload = [UInt8](try AES._CTR.encrypt(piece + Array(SHA256.hash(data: piece)), using: SymmetricKey(data: key),
                                                       nonce: AES._CTR.Nonce(nonceBytes: iv)))
            out += Array("XBCRYP03".utf8) + le(0, 8) + le(UInt64(piece.count + 32), 8) + le(UInt64(payload.count), 8)
            out += le(UInt64(Self.crc32(payload)), 4) + le(16, 8) + iv + payload
        }
        return out
    }

    @Test("decrypt --recursive --decompress: NAME.zst.xbcrypt becomes NAME through zstd; bad zstd data fails cleanly")
    func decompress() throws {
        let dir = Scratch()
        let text = Array(String(repeating: "INSERT INTO t VALUES (1,'coffer'),(2,'xtrabackup');\n", count: 4000).utf8)
        let compressed = try spawn(["/usr/bin/zstd", "-q", "-c"], environment: [:], stdin: text)
        try #require(compressed.status == 0, "zstd is needed (scripts/test.sh installs it)")
        let key = Array(Self.key.utf8)
        _ = try dir.write(try Self.v3File(compressed.stdout, key: key, chunkSize: 1000), "backup/db/t1.ibd.zst.xbcrypt")
        _ = try dir.write(try Self.v3File(Array("not zstd at all".utf8), key: key), "backup/db/bad.ibd.zst.xbcrypt")
        _ = try dir.write(try Self.v3File(text, key: key), "backup/plain.ibd.xbcrypt")
        let keyFile = try dir.write(key, "xb.key")
        let result = try coffer(["decrypt", "--recursive", "--decompress", "--remove-original", "--key-file", keyFile,
                                 dir.file("backup")])
        #expect(result.status == Exit.io, "\(result.stderr)")
        #expect(result.stderr.contains("bad.ibd.zst.xbcrypt"))
        #expect(try dir.read("backup/db/t1.ibd") == text)
        #expect(try dir.read("backup/plain.ibd") == text)
        #expect(dir.absent("backup/db/t1.ibd.zst") && dir.absent("backup/db/t1.ibd.zst.xbcrypt"))
        #expect(dir.exists("backup/db/bad.ibd.zst.xbcrypt") && dir.absent("backup/db/bad.ibd"))
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })
    }
}
