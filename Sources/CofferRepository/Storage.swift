/// The kinds of object a repository stores; each kind is a separate namespace (a directory on disk,
/// a key prefix on S3).
public enum ObjectKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case config, keys, data, index, snapshots, locks

    /// Whether objects of this kind are spread over 256 subdirectories by the first two characters
    /// of their name (data packs are the only kind numerous enough to need it).
    public var isSharded: Bool { self == .data }

    public var description: String { rawValue }
}

/// A validated object name within a kind.
///
/// Names come from storage listings, which whoever controls the storage can fill with anything, so
/// a name is accepted only if it is 1...128 characters of `a-z`, `0-9`, `-` and `_`: no `/`, no `.`
/// (hence no `..` and no hidden or temporary files), no upper case (case-insensitive file systems),
/// no control characters, no spaces. A sharded kind's names need at least 2 characters.
public struct ObjectName: Hashable, Sendable, CustomStringConvertible {
    public let kind: ObjectKind
    public let name: String

    public static let maxLength = 128

    public init(_ kind: ObjectKind, _ name: String) throws {
        if let reason = Self.invalidReason(name, kind: kind) {
            throw StorageError.invalidName(kind: kind, name: Self.printable(name), reason: reason)
        }
        self.kind = kind
        self.name = name
    }

    /// Why `name` is not acceptable, or nil.
    public static func invalidReason(_ name: String, kind: ObjectKind) -> String? {
        let utf8 = name.utf8
        if utf8.isEmpty { return "empty" }
        if utf8.count > maxLength { return "longer than \(maxLength) bytes" }
        if kind.isSharded && utf8.count < 2 { return "shorter than 2 characters" }
        for b in utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"):
                continue
            default:
                return "contains a character other than a-z, 0-9, '-' and '_'"
            }
        }
        return nil
    }

    /// A name safe to put in a message: non-printable bytes escaped, at most 80 bytes shown.
    static func printable(_ name: String) -> String {
        var out = ""
        for (i, b) in name.utf8.enumerated() {
            if i == 80 { out += "…"; break }
            if b >= 0x21 && b < 0x7f && b != UInt8(ascii: "\\") { out.unicodeScalars.append(Unicode.Scalar(b)) }
            else { out += "\\x" + String(b, radix: 16).leftPadded(to: 2) }
        }
        return out
    }

    public var description: String { "\(kind)/\(name)" }
}

extension String {
    fileprivate func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

/// An object's name and size as the storage reports them.
public struct ObjectInfo: Hashable, Sendable {
    public let name: ObjectName
    public let size: Int64

    public init(name: ObjectName, size: Int64) {
        self.name = name
        self.size = size
    }
}

/// What a storage implementation can do, for callers that plan parallel work.
public struct StorageProperties: Sendable {
    /// How many operations may usefully run at once (local disk: a few; S3: dozens).
    public let connections: Int
    /// Whether `save(…, overwrite: true)` replaces an object atomically.
    public let hasAtomicReplace: Bool

    public init(connections: Int, hasAtomicReplace: Bool) {
        self.connections = connections
        self.hasAtomicReplace = hasAtomicReplace
    }
}

/// Storage errors, typed so callers can tell "missing" and "already there" from I/O failures.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(ObjectName)
    /// `save` without `overwrite` found an object of that name (possibly written concurrently).
    case alreadyExists(ObjectName)
    /// A name refused by ``ObjectName`` (shown escaped).
    case invalidName(kind: ObjectKind, name: String, reason: String)
    /// A ranged load that does not lie within the object.
    case rangeOutOfBounds(ObjectName, range: Range<Int64>, size: Int64)
    /// Something on the storage that is not what it must be (e.g. a directory or a symlink where an
    /// object should be).
    case unexpectedEntry(ObjectName, String)
    /// An I/O failure: which operation, on what, and the system's reason.
    case io(operation: String, target: String, errno: Int32, reason: String)

    public var description: String {
        switch self {
        case .notFound(let n): return "object \(n) not found"
        case .alreadyExists(let n): return "object \(n) already exists"
        case .invalidName(let kind, let name, let reason): return "invalid \(kind) object name '\(name)': \(reason)"
        case .rangeOutOfBounds(let n, let r, let size):
            return "range \(r.lowerBound)..<\(r.upperBound) of object \(n) is outside its \(size) bytes"
        case .unexpectedEntry(let n, let why): return "object \(n): \(why)"
        case .io(let op, let target, _, let reason): return "\(op) \(target): \(reason)"
        }
    }
}

/// One repository's storage: objects of a few kinds, each written once, read whole or by byte range.
///
/// Modelled on restic's backend interface, made for remote latency: every operation is `async` and
/// implementations must allow many concurrent calls (``StorageProperties/connections`` says how many
/// are useful); listing comes in batches, so a caller can start work on the first names while the
/// next page is fetched; loads take a byte range, so restoring one file reads only the bytes it needs.
///
/// Contract for every implementation:
/// - `save` is atomic: readers and listings see either no object or the whole object, never a
///   prefix; a crash leaves at most an unlisted leftover. Without `overwrite`, an existing object is
///   never replaced (``StorageError/alreadyExists(_:)``), even when two saves race.
/// - Names are validated (``ObjectName``) both ways: on the way in, and for every entry a listing
///   returns; entries that are not valid names (leftover temporary files, foreign files) are skipped.
/// - Nothing is trusted because the storage returned it: contents are authenticated above this layer.
public protocol Storage: Sendable {
    var properties: StorageProperties { get }

    /// Stores `contents` under `name`. Throws ``StorageError/alreadyExists(_:)`` when the object
    /// exists and `overwrite` is false.
    func save(_ name: ObjectName, contents: [UInt8], overwrite: Bool) async throws

    /// The object's bytes, or only `range` of them; a range not within the object is an error
    /// (``StorageError/rangeOutOfBounds(_:range:size:)``), never a short read.
    func load(_ name: ObjectName, range: Range<Int64>?) async throws -> [UInt8]

    /// Size of an object; ``StorageError/notFound(_:)`` when it does not exist.
    func stat(_ name: ObjectName) async throws -> ObjectInfo

    /// Removes an object; ``StorageError/notFound(_:)`` when it does not exist.
    func remove(_ name: ObjectName) async throws

    /// The objects of one kind, in batches of at most `batchSize`, in no particular order.
    func list(_ kind: ObjectKind, batchSize: Int) -> AsyncThrowingStream<[ObjectInfo], Error>
}

extension Storage {
    public func save(_ name: ObjectName, contents: [UInt8]) async throws {
        try await save(name, contents: contents, overwrite: false)
    }

    public func load(_ name: ObjectName) async throws -> [UInt8] {
        try await load(name, range: nil)
    }

    public func list(_ kind: ObjectKind) -> AsyncThrowingStream<[ObjectInfo], Error> {
        list(kind, batchSize: 1000)
    }

    /// All objects of a kind, collected.
    public func listAll(_ kind: ObjectKind) async throws -> [ObjectInfo] {
        var all: [ObjectInfo] = []
        for try await batch in list(kind) { all += batch }
        return all
    }
}
