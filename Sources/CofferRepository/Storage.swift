import Foundation

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

/// An object's name and size as the storage reports them, and when it was last written when the
/// storage's listing says (S3's LastModified, a file's mtime): untrusted, used only to plan (which
/// objects may still be under retention).
public struct ObjectInfo: Hashable, Sendable {
    public let name: ObjectName
    public let size: Int64
    public let modified: Date?

    public init(name: ObjectName, size: Int64, modified: Date? = nil) {
        self.name = name
        self.size = size
        self.modified = modified
    }

    /// The same object and size: the listing time is information, not identity.
    public static func == (a: ObjectInfo, b: ObjectInfo) -> Bool { a.name == b.name && a.size == b.size }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(size)
    }
}

/// Object lock (immutable backups, docs/S3.md "Object lock"): a repository option recorded in the
/// config. Every object but lock objects and restore-test results is written with retention until
/// now + `days` (S3's `x-amz-object-lock-mode` / `-retain-until-date`); the storage refuses to
/// delete or overwrite it before then.
public struct ObjectLock: Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Mode: String, Codable, Sendable, CaseIterable {
        /// Nobody, not even the account's root user, can shorten the retention or delete the object.
        case compliance
        /// Users with `s3:BypassGovernanceRetention` can; Coffer never asks to.
        case governance
    }

    public var mode: Mode
    public var days: Int

    /// 100 years: S3's own bound for a bucket's default retention.
    public static let maxDays = 36_500

    public init(mode: Mode, days: Int) {
        self.mode = mode
        self.days = days
    }

    /// Why this setting is not acceptable, or nil.
    public var invalidReason: String? {
        (1...Self.maxDays).contains(days) ? nil : "object lock days must be 1 to \(Self.maxDays), not \(days)"
    }

    /// The retention an object written at `date` gets.
    public func retainUntil(writtenAt date: Date) -> Date { date.addingTimeInterval(Double(days) * 86_400) }

    /// Whether an object is written under retention. Lock objects are not (they must be removable
    /// when a command ends, and are rewritten to refresh them); restore-test results are not (a
    /// record of a test, not needed to restore anything; removed with their snapshot). Everything
    /// else is: config, key objects, data keys and key-history events (without them nothing opens),
    /// packs, index objects and snapshots.
    public static func applies(to name: ObjectName) -> Bool {
        switch name.kind {
        case .locks: return false
        case .snapshots: return !name.name.contains("-restoretest-")
        default: return true
        }
    }

    public var description: String { "\(mode.rawValue), \(days) day\(days == 1 ? "" : "s")" }
}

/// Something a killed write left behind that is not an object: a temporary file of a local save
/// (`.tmp-NAME-RANDOM`), an incomplete multipart upload on S3. Never listed or loaded as an object;
/// `prune` removes those older than a safe age (``Storage/leftovers(olderThan:)``).
public struct Leftover: Hashable, Sendable, CustomStringConvertible {
    /// Where it is, for messages: a path below the repository, or an S3 key.
    public let location: String
    /// When it was made (mtime, or the upload's Initiated).
    public let since: Date
    /// The storage's own handle (an upload id).
    public let token: String

    public init(location: String, since: Date, token: String = "") {
        self.location = location
        self.since = since
        self.token = token
    }

    public var description: String { location }
}

/// What a storage implementation can do, for callers that plan parallel work.
public struct StorageProperties: Sendable {
    /// How many operations may usefully run at once (local disk: a few; S3: dozens).
    public let connections: Int
    /// Whether `save(…, overwrite: true)` replaces an object atomically.
    public let hasAtomicReplace: Bool
    /// Whether each request crosses a network (a round trip per save): a backup then keeps more
    /// full packs in flight, so the next pack fills while the previous ones upload.
    public let remote: Bool

    public init(connections: Int, hasAtomicReplace: Bool, remote: Bool = false) {
        self.connections = connections
        self.hasAtomicReplace = hasAtomicReplace
        self.remote = remote
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

    /// Removes many objects (S3: DeleteObjects, 1000 a request); returns those that could not be
    /// removed, with the reason. A missing object counts as removed.
    func remove(_ names: [ObjectName]) async throws -> [(ObjectName, String)]

    /// Leftovers of killed writes made before `date` (see ``Leftover``).
    func leftovers(olderThan date: Date) async throws -> [Leftover]

    /// Removes a leftover ``leftovers(olderThan:)`` returned.
    func removeLeftover(_ leftover: Leftover) async throws

    /// Whether objects can be kept under retention (S3 object lock); a local directory cannot.
    var supportsObjectLock: Bool { get }

    /// The retention for objects written from now on (``ObjectLock/applies(to:)`` chooses which);
    /// nil for none. Ignored by a storage that does not support object lock.
    func useObjectLock(_ lock: ObjectLock?)

    /// The retention date the storage holds for an object now (S3: HEAD's
    /// `x-amz-object-lock-retain-until-date`), nil when it has none.
    func retainUntil(_ name: ObjectName) async throws -> Date?

    /// Extends an object's retention to `date` (S3 PutObjectRetention, in the repository's mode).
    /// Returns false when it was already retained at least that long (nothing changed).
    func extendRetention(_ name: ObjectName, until date: Date) async throws -> Bool
}

extension Storage {
    public func remove(_ names: [ObjectName]) async throws -> [(ObjectName, String)] {
        var failed: [(ObjectName, String)] = []
        for name in names {
            do { try await remove(name) } catch StorageError.notFound {} catch { failed.append((name, "\(error)")) }
        }
        return failed
    }

    public func leftovers(olderThan date: Date) async throws -> [Leftover] { [] }

    public func removeLeftover(_ leftover: Leftover) async throws {}

    public var supportsObjectLock: Bool { false }

    public func useObjectLock(_ lock: ObjectLock?) {}

    public func retainUntil(_ name: ObjectName) async throws -> Date? { nil }

    public func extendRetention(_ name: ObjectName, until date: Date) async throws -> Bool {
        throw StorageError.io(operation: "extend retention of", target: name.description, errno: 0,
                              reason: "this storage cannot lock objects")
    }

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
