import Crypto
import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// The byte layouts of the repository's objects (docs/REPOSITORY.md): JSON documents for config,
// key objects, data-key objects, locks, snapshots and the writer key file; binary for the pack
// trailer and index objects. Every decoder here sees plaintext that has already authenticated,
// and still checks every bound before it allocates or indexes.

/// The repository's format version (config `version`).
public let repositoryFormatVersion = 1

/// JSON as the repository writes it: sorted keys, no escaped slashes, RFC 3339 dates with
/// fractional seconds, snake_case keys.
/// RFC 3339 times in UTC with milliseconds, written and read without Foundation's date formatters
/// (they go through ICU, whose data pages cost ~6 MiB of resident memory): what the repository's
/// JSON uses, and S3's dates (listings, object-lock retention) too.
public enum RFC3339Time {
    /// "2026-12-03T07:40:00.123Z".
    public static func format(_ date: Date) -> String { RepositoryJSON.formatDate(date) }
    /// "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)"; nil for anything else.
    public static func parse(_ text: String) -> Date? { RepositoryJSON.parseDate(text) }
}

enum RepositoryJSON {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatDate(date))
        }
        return e
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let text = try c.decode(String.self)
            guard let date = parseDate(text) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an RFC 3339 time")
            }
            return date
        }
        return d
    }

    /// "2025-12-03T00:00:00.000Z": UTC, milliseconds (rounded), as ISO8601DateFormatter with
    /// `[.withInternetDateTime, .withFractionalSeconds]` writes it. Computed here with gmtime_r:
    /// that formatter goes through ICU, whose calendar and time-zone data it pulls in cost every
    /// repository command ~5 MiB of resident memory (measured: `RssFile` of lib_FoundationICU).
    static func formatDate(_ date: Date) -> String {
        // The formatter's arithmetic: milliseconds since 1970, rounded to the nearest.
        let millis = ((date.timeIntervalSinceReferenceDate + 978_307_200) * 1000).rounded()
        guard millis.isFinite, abs(millis) < 1e17 else { return "1970-01-01T00:00:00.000Z" }
        let total = Int64(millis)
        let seconds = total >= 0 ? total / 1000 : -((999 - total) / 1000)  // rounded down
        let ms = total - seconds * 1000
        var t = time_t(seconds)
        var parts = tm()
        guard gmtime_r(&t, &parts) != nil else { return "1970-01-01T00:00:00.000Z" }
        func pad(_ v: Int32, _ width: Int) -> String {
            let digits = String(abs(Int(v)))
            return (v < 0 ? "-" : "") + String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "." + pad(Int32(ms), 3) + "Z"
    }

    /// Parses "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)" (RFC 3339, what ``formatDate`` and earlier
    /// versions wrote); the fraction is read to the millisecond, as ISO8601DateFormatter does.
    static func parseDate(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func number(_ at: Int, _ count: Int) -> Int? {
            guard at + count <= b.count else { return nil }
            var v = 0
            for c in b[at..<(at + count)] {
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            return v
        }
        func at(_ i: Int, _ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }
        guard let year = number(0, 4), at(4, "-"), let month = number(5, 2), at(7, "-"), let day = number(8, 2), at(10, "T"),
              let hour = number(11, 2), at(13, ":"), let minute = number(14, 2), at(16, ":"), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 60 else { return nil }
        var i = 19
        var millis = 0
        if at(i, ".") {
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                if digits < 3 { millis = millis * 10 + Int(b[i] - 0x30) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 3) { millis *= 10 }
        }
        var offset = 0
        if at(i, "Z") {
            i += 1
        } else if at(i, "+") || at(i, "-") {
            guard let oh = number(i + 1, 2), at(i + 3, ":"), let om = number(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (at(i, "-") ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = Int64(timegm(&parts))
        // A day the month does not have (timegm normalises 02-30 to 03-02): refused.
        guard parts.tm_mday == Int32(day), parts.tm_mon == Int32(month - 1) else { return nil }
        let udate = Double((seconds - Int64(offset)) * 1000 + Int64(millis))
        return Date(timeIntervalSinceReferenceDate: udate / 1000 - 978_307_200)
    }

    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] { Array(try encoder().encode(value)) }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], object: String) throws -> T {
        do { return try decoder().decode(type, from: Data(bytes)) } catch {
            throw RepositoryError.damaged(object: object, reason: "its content does not parse (\(error))")
        }
    }
}

/// Base64 (standard alphabet, padded) of a fixed-size secret, for JSON.
struct Base64Bytes: Codable, Sendable, Equatable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        guard let data = Data(base64Encoded: try c.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not base64")
        }
        bytes = Array(data)
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(Data(bytes).base64EncodedString())
    }
}

/// `config/config`: the repository's parameters. Written once at `init`, encrypted under the index
/// key, so every holder of a key object or a writer key can read it.
public struct RepositoryConfig: Codable, Sendable, Equatable {
    public var version: Int
    /// The repository id: 64 hex digits.
    public var id: String
    public var created: Date
    public var chunkerMin: Int
    public var chunkerAvg: Int
    public var chunkerMax: Int
    /// Target plaintext size of a data pack.
    public var packSize: Int
    /// When true, removing keys must leave a key object that the recovery key opens.
    public var requireRecovery: Bool
    /// The key id of the recovery key given at `init` (the key id its stanzas carry), if any.
    public var recoveryKeyId: String?
    /// Object lock (`init --object-lock-days`): every object but locks and restore-test results is
    /// written with this retention. Omitted when off, so older configs are unchanged.
    public var objectLock: ObjectLock? = nil

    public static let minPackSize = 1 << 20
    public static let maxPackSize = 128 << 20
    /// 4 MiB: a backup holds up to five packs' worth of buffers (the open one, two being sealed,
    /// each with its sealed copy), and `check --read-data` two per core; at 8 MiB that alone was
    /// 40 MiB of the 64 MiB memory target (docs/REPOSITORY.md, "Chunking").
    public static let defaultPackSize = 4 << 20

    var chunkerParameters: ChunkerParameters {
        get throws { try ChunkerParameters(minSize: chunkerMin, averageSize: chunkerAvg, maxSize: chunkerMax) }
    }

    func validate(object: String = "config/config") throws {
        guard version == repositoryFormatVersion else {
            throw RepositoryError.unsupported("repository format version \(version); this build reads version \(repositoryFormatVersion)")
        }
        guard Hex.decode(id)?.count == 32, id == id.lowercased() else {
            throw RepositoryError.damaged(object: object, reason: "the repository id is not 64 hex digits")
        }
        do { _ = try chunkerParameters } catch {
            throw RepositoryError.damaged(object: object, reason: "chunker parameters out of bounds (\(error))")
        }
        guard (Self.minPackSize...Self.maxPackSize).contains(packSize) else {
            throw RepositoryError.damaged(object: object, reason: "pack size \(packSize) outside \(Self.minPackSize)...\(Self.maxPackSize)")
        }
        if let reason = objectLock?.invalidReason {
            throw RepositoryError.damaged(object: object, reason: reason)
        }
    }
}

/// The secrets every full-access key object holds (docs/REPOSITORY.md, "Key objects").
struct RepositorySecrets: Sendable, Equatable {
    var repositoryID: [UInt8]
    var chunkerKey: [UInt8]
    var chunkIDKey: [UInt8]
    var indexKey: [UInt8]
    /// Encrypts the data-key objects (`keys/data-N`).
    var ringKey: [UInt8]

    static func random() -> RepositorySecrets {
        RepositorySecrets(repositoryID: randomBytes(), chunkerKey: randomBytes(), chunkIDKey: randomBytes(),
                          indexKey: randomBytes(), ringKey: randomBytes())
    }
}

/// The payload of a key object `keys/ID`.
struct KeyObjectPayload: Codable, Sendable {
    var version: Int
    var repository: String
    var created: Date
    var hostname: String
    var username: String
    var chunkerKey: Base64Bytes
    var chunkIdKey: Base64Bytes
    var indexKey: Base64Bytes
    var ringKey: Base64Bytes

    init(secrets: RepositorySecrets, created: Date, hostname: String, username: String) {
        version = 1
        repository = Hex.encode(secrets.repositoryID)
        self.created = created
        self.hostname = hostname
        self.username = username
        chunkerKey = Base64Bytes(secrets.chunkerKey)
        chunkIdKey = Base64Bytes(secrets.chunkIDKey)
        indexKey = Base64Bytes(secrets.indexKey)
        ringKey = Base64Bytes(secrets.ringKey)
    }

    func secrets(object: String) throws -> RepositorySecrets {
        guard version == 1 else { throw RepositoryError.unsupported("key object version \(version)") }
        guard let id = Hex.decode(repository), id.count == 32,
              [chunkerKey, chunkIdKey, indexKey, ringKey].allSatisfy({ $0.bytes.count == 32 }) else {
            throw RepositoryError.damaged(object: object, reason: "a secret is not 32 bytes")
        }
        return RepositorySecrets(repositoryID: id, chunkerKey: chunkerKey.bytes, chunkIDKey: chunkIdKey.bytes,
                                 indexKey: indexKey.bytes, ringKey: ringKey.bytes)
    }
}

/// The payload of a data-key object `keys/data-N` (N = generation, decimal, no leading zero).
struct DataKeyPayload: Codable, Sendable {
    var version: Int
    var repository: String
    var generation: Int
    var created: Date
    var privateKey: Base64Bytes
}

/// The writer key file (`coffer key add --writer`): what a write-only backup host holds.
public struct WriterKeyFile: Codable, Sendable, Equatable {
    public static let typeName = "coffer-repository-writer-key"
    var type: String
    var version: Int
    var repository: String
    /// SHA-256 of the config object's stored bytes: the writer refuses a repository whose config differs.
    var configSha256: String
    var created: Date
    var chunkerKey: Base64Bytes
    var chunkIdKey: Base64Bytes
    var indexKey: Base64Bytes
    var dataKeyGeneration: Int
    var dataPublicKey: Base64Bytes

    /// The file's bytes: one JSON document and a line feed.
    public func encoded() throws -> [UInt8] { try RepositoryJSON.encode(self) + [0x0A] }

    /// Parses a writer key file; anything else is a key error.
    public static func parse(_ bytes: [UInt8]) throws -> WriterKeyFile {
        guard bytes.count < 64 << 10,
              let key = try? RepositoryJSON.decoder().decode(WriterKeyFile.self, from: Data(bytes)),
              key.type == typeName else {
            throw RepositoryError.key("not a Coffer repository writer key file")
        }
        guard key.version == 1 else { throw RepositoryError.unsupported("writer key version \(key.version)") }
        guard Hex.decode(key.repository)?.count == 32, Hex.decode(key.configSha256)?.count == 32,
              [key.chunkerKey, key.chunkIdKey, key.indexKey, key.dataPublicKey].allSatisfy({ $0.bytes.count == 32 }),
              key.dataKeyGeneration >= 1 else {
            throw RepositoryError.key("the writer key file is malformed")
        }
        return key
    }
}

/// The payload of a lock object `locks/NAME`.
public struct LockInfo: Codable, Sendable, Equatable {
    public var time: Date
    public var exclusive: Bool
    public var hostname: String
    public var username: String
    public var pid: Int32
}

// MARK: Binary layouts

/// Little-endian integer reading with bounds checks.
struct ByteReader {
    let bytes: [UInt8]
    var pos: Int
    let object: String
    init(_ bytes: [UInt8], at pos: Int = 0, object: String) { self.bytes = bytes; self.pos = pos; self.object = object }

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, pos <= bytes.count - n else { throw RepositoryError.damaged(object: object, reason: "cut short") }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
    mutating func u8() throws -> UInt8 { try take(1).first! }
    mutating func u32() throws -> UInt32 {
        try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws -> UInt64 {
        try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE(_ v: UInt32) { for i in 0..<4 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func appendLE(_ v: UInt64) { for i in 0..<8 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
}

/// One blob's place in a pack (a pack trailer entry and, with the pack's name, an index entry).
public struct PackedBlob: Sendable, Equatable {
    public var kind: BlobKind
    public var id: BlobID
    /// Offset of the stored bytes in the pack's plaintext.
    public var offset: UInt32
    /// Stored (possibly compressed) length.
    public var length: UInt32
    /// Plaintext length.
    public var rawLength: UInt32
    public var compressed: Bool

    /// 46 bytes: kind u8, id 32, offset u32, length u32, raw length u32, compression u8 (0 raw, 1 zstd).
    static let encodedSize = 46

    func encode(into out: inout [UInt8]) {
        out.append(kind.rawValue)
        out += id.bytes
        out.appendLE(offset)
        out.appendLE(length)
        out.appendLE(rawLength)
        out.append(compressed ? 1 : 0)
    }

    static func decode(_ r: inout ByteReader) throws -> PackedBlob {
        guard let kind = BlobKind(rawValue: try r.u8()) else {
            throw RepositoryError.damaged(object: r.object, reason: "unknown blob kind")
        }
        let id = BlobID(bytes: Array(try r.take(32)))
        let offset = try r.u32(), length = try r.u32(), raw = try r.u32()
        let c = try r.u8()
        guard c <= 1 else { throw RepositoryError.damaged(object: r.object, reason: "unknown compression \(c)") }
        guard length > 0 || raw == 0, c == 0 ? length == raw : true else {
            throw RepositoryError.damaged(object: r.object, reason: "a raw blob's stored and plaintext lengths differ")
        }
        return PackedBlob(kind: kind, id: id, offset: offset, length: length, rawLength: raw, compressed: c == 1)
    }
}

/// The pack trailer: entries, then entry count (u32 LE), then the magic "CPK1".
enum PackTrailer {
    static let magic = Array("CPK1".utf8)

    static func encode(_ blobs: [PackedBlob]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(blobs.count * PackedBlob.encodedSize + 8)
        for b in blobs { b.encode(into: &out) }
        out.appendLE(UInt32(blobs.count))
        out += magic
        return out
    }

    /// Parses a pack's whole plaintext: the trailer's entries must lie in the blob area, in order,
    /// without overlap, and cover it exactly.
    static func decode(_ plaintext: [UInt8], object: String) throws -> [PackedBlob] {
        guard plaintext.count >= 8, Array(plaintext[(plaintext.count - 4)...]) == magic else {
            throw RepositoryError.damaged(object: object, reason: "no pack trailer")
        }
        var r = ByteReader(plaintext, at: plaintext.count - 8, object: object)
        let count = Int(try r.u32())
        let trailerSize = count * PackedBlob.encodedSize + 8
        guard trailerSize <= plaintext.count else { throw RepositoryError.damaged(object: object, reason: "pack trailer count too large") }
        let blobArea = plaintext.count - trailerSize
        r = ByteReader(plaintext, at: blobArea, object: object)
        var blobs: [PackedBlob] = []
        blobs.reserveCapacity(count)
        var expected = 0
        for _ in 0..<count {
            let b = try PackedBlob.decode(&r)
            guard Int(b.offset) == expected else {
                throw RepositoryError.damaged(object: object, reason: "pack trailer entries do not tile the blob area")
            }
            expected += Int(b.length)
            blobs.append(b)
        }
        guard expected == blobArea else { throw RepositoryError.damaged(object: object, reason: "pack trailer does not cover the blob area") }
        return blobs
    }
}

/// One pack as an index object lists it.
struct IndexedPack: Sendable, Equatable {
    var name: String
    var size: Int64
    var blobs: [PackedBlob]
}

/// Index object payload: magic "CIX1", pack count u32; per pack: name (32 raw bytes; the object
/// name is their hex), stored size u64, blob count u32, blob entries (``PackedBlob``, 46 bytes each).
enum IndexFormat {
    static let magic = Array("CIX1".utf8)

    static func encode(_ packs: [IndexedPack]) -> [UInt8] {
        var out = magic
        out.appendLE(UInt32(packs.count))
        for p in packs {
            out += Hex.decode(p.name)!
            out.appendLE(UInt64(p.size))
            out.appendLE(UInt32(p.blobs.count))
            for b in p.blobs { b.encode(into: &out) }
        }
        return out
    }

    static func decode(_ bytes: [UInt8], object: String) throws -> [IndexedPack] {
        var r = ByteReader(bytes, object: object)
        guard Array(try r.take(4)) == magic else { throw RepositoryError.damaged(object: object, reason: "not an index (bad magic)") }
        let count = Int(try r.u32())
        guard count <= bytes.count / 44 else { throw RepositoryError.damaged(object: object, reason: "pack count too large") }
        var packs: [IndexedPack] = []
        packs.reserveCapacity(count)
        for _ in 0..<count {
            let name = Hex.encode(try r.take(32))
            let size = try r.u64()
            let n = Int(try r.u32())
            guard n <= (bytes.count - r.pos) / PackedBlob.encodedSize, size <= UInt64(Int64.max) else {
                throw RepositoryError.damaged(object: object, reason: "blob count too large")
            }
            var blobs: [PackedBlob] = []
            blobs.reserveCapacity(n)
            for _ in 0..<n { blobs.append(try PackedBlob.decode(&r)) }
            packs.append(IndexedPack(name: name, size: Int64(size), blobs: blobs))
        }
        guard r.pos == bytes.count else { throw RepositoryError.damaged(object: object, reason: "bytes after the last pack") }
        return packs
    }
}
