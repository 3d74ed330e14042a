import Crypto
import CofferFormat
import Foundation

/// One event of the repository's key history (docs/REPOSITORY.md, "Key history").
public struct KeyEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// The repository was created (its first key object and data key).
        case initialized = "init"
        case add, remove, rotate
        /// A command opened the repository through a KMS stanza (one KMS decrypt call).
        case kmsUnwrap = "kms-unwrap"
        /// The rotation period changed.
        case policy
    }

    public var version = 1
    /// Position in the chain, from 1.
    public var seq = 0
    /// SHA-256 (hex) of the previous event object's stored bytes; empty for the first event.
    public var prev = ""
    public var event: Kind
    public var time: Date
    public var hostname: String
    public var username: String
    /// The key concerned: a key object id, or `data-N` for a data key.
    public var key: String?
    /// Which keys open it, the KMS key used, the data-key generation started, … (free text).
    public var detail: String?
    /// The command that caused the event (kms-unwrap), e.g. "restore".
    public var command: String?
    /// The rotation period in seconds (init, policy); 0 turns the age warning off.
    public var maxKeyAge: Int?

    public init(_ event: Kind, key: String? = nil, detail: String? = nil, command: String? = nil, maxKeyAge: Int? = nil,
                time: Date = Date(), hostname: String = ProcessInfo.processInfo.hostName,
                username: String = ProcessInfo.processInfo.environment["USER"] ?? "") {
        self.event = event; self.key = key; self.detail = detail; self.command = command; self.maxKeyAge = maxKeyAge
        self.time = time; self.hostname = hostname; self.username = username
    }
}

/// The verified key history: its events in order and the hash of the newest event object (the
/// chain's head, which someone who noted it earlier can compare to detect a cut-off tail).
public struct KeyHistory: Sendable, Equatable {
    public var events: [KeyEvent]
    public var head: String
    /// The rotation period in force (seconds): the newest init or policy event's; nil when never set.
    public var maxKeyAge: Int? {
        events.last { $0.maxKeyAge != nil }?.maxKeyAge.flatMap { $0 > 0 ? $0 : nil }
    }
}

extension Repository {
    static let historyPrefix = "log-"

    /// The key that encrypts and authenticates history events: derived from the ring key, which
    /// only full keys hold (a writer key cannot read, write or forge events).
    var historyKey: SymmetricObjectKey {
        get throws {
            guard access == .full, let secrets else { throw RepositoryError.writerKeyCannotRead("the key history") }
            let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secrets.ringKey),
                                             info: Array("coffer-repository key history v1".utf8), outputByteCount: 32)
            return try SymmetricObjectKey(key.withUnsafeBytes { Array($0) })
        }
    }

    /// `log-` followed by 10 decimal digits (the event's seq); nil for other names.
    static func historySeq(_ name: String) -> Int? {
        guard name.hasPrefix(historyPrefix) else { return nil }
        let digits = name.dropFirst(historyPrefix.count)
        guard digits.count == 10, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits), n >= 1 else { return nil }
        return n
    }

    static func historyName(_ seq: Int) throws -> ObjectName {
        try ObjectName(.keys, historyPrefix + String(format: "%010d", seq))
    }

    /// Every history object's seq, sorted; names that start with `log-` but are not canonical are damage.
    func historySeqs() async throws -> [Int] {
        var seqs: [Int] = []
        for item in try await storage.listAll(.keys) where item.name.name.hasPrefix(Self.historyPrefix) {
            guard let n = Self.historySeq(item.name.name) else {
                throw RepositoryError.damaged(object: item.name.description, reason: "not a key-history name (log- and 10 digits)")
            }
            seqs.append(n)
        }
        return seqs.sorted()
    }

    /// Reads and checks the whole chain: events numbered 1…n without gaps, each authenticating
    /// under the history key and bound to its name, each naming the hash of the one before.
    public func keyHistory() async throws -> KeyHistory {
        let key = try historyKey
        let seqs = try await historySeqs()
        var events: [KeyEvent] = []
        var previousHash = ""
        for (i, seq) in seqs.enumerated() {
            let name = try Self.historyName(seq)
            guard seq == i + 1 else {
                throw RepositoryError.damaged(object: name.description,
                                              reason: "the key history has a gap: event \(i + 1) is missing (removed)")
            }
            let (plain, _, stored) = try await Self.readObject(storage, name) { try key.fileKey(for: $0, object: name.description) }
            let event = try RepositoryJSON.decode(KeyEvent.self, plain, object: name.description)
            guard event.version == 1, event.seq == seq else {
                throw RepositoryError.damaged(object: name.description, reason: "it is not key-history event \(seq)")
            }
            guard event.prev == previousHash else {
                throw RepositoryError.damaged(object: name.description, reason: "it does not follow the event before it (the chain was edited)")
            }
            previousHash = Hex.encode(Array(SHA256.hash(data: stored)))
            events.append(event)
        }
        return KeyHistory(events: events, head: previousHash)
    }

    /// Appends an event at the end of the chain (reads only the newest event, to hash it). Two
    /// writers racing for one seq: the storage lets one win (no overwrite), the other retries.
    @discardableResult
    /// `first`: the repository was just created, so the history is known to be empty and is not
    /// listed for the first attempt (if an event is there after all, the write is refused and the
    /// next attempt lists as usual).
    public func appendKeyEvent(_ event: KeyEvent, first: Bool = false) async throws -> KeyEvent {
        let key = try historyKey
        for attempt in 0..<16 {
            let seqs = first && attempt == 0 ? [] : try await historySeqs()
            var next = event
            next.seq = (seqs.last ?? 0) + 1
            if let last = seqs.last {
                let name = try Self.historyName(last)
                let (_, _, stored) = try await Self.readObject(storage, name) { try key.fileKey(for: $0, object: name.description) }
                next.prev = Hex.encode(Array(SHA256.hash(data: stored)))
            } else {
                next.prev = ""
            }
            do {
                _ = try await writeObject(try Self.historyName(next.seq), try RepositoryJSON.encode(next)) { try key.stanzas(for: $0) }
                return next
            } catch StorageError.alreadyExists {
                continue
            }
        }
        throw RepositoryError.locked("could not append to the key history: other commands kept appending")
    }
}

/// A key as `key list` shows it: key objects (which open the repository) and data keys (which
/// packs and snapshots are encrypted to).
public struct KeyLifecycleInfo: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable { case active, retired }
    /// "key object" or "data key".
    public var kind: String
    /// The key object's id, or `data-N`.
    public var id: String
    /// Which keys open a key object ("key file 3f2a…", "AWS KMS …"); X25519 for a data key.
    public var keys: [String]
    public var created: Date?
    /// Data keys: their generation. Key objects: the data-key generation current when added (from the history).
    public var generation: Int?
    /// Data keys: the newest generation is active, older ones retired (they only read old data).
    /// Key objects: active while they exist.
    public var status: Status
    /// The key object that opened the repository for this command.
    public var current: Bool
    public var recovery: Bool
    /// Older than the rotation period (active keys only).
    public var overdue: Bool
    public var damaged: String?
}

extension Repository {
    /// Key objects and data keys with their creation time, generation and status; `overdue` when an
    /// active key is older than the history's rotation period. Creation times come from the key
    /// history for key objects (their payloads need their own keys), from the data-key objects for
    /// data keys.
    public func keyLifecycle(history: KeyHistory, now: Date = Date()) async throws -> [KeyLifecycleInfo] {
        guard let secrets else { throw RepositoryError.writerKeyCannotRead("key objects") }
        var added: [String: KeyEvent] = [:]
        var generation = 1
        var generationAt: [String: Int] = [:]
        for e in history.events {
            if e.event == .rotate, let k = e.key, let n = Int(k.dropFirst(5)) { generation = n }
            if (e.event == .add || e.event == .initialized), let k = e.key { added[k] = e; generationAt[k] = generation }
        }
        var out: [KeyLifecycleInfo] = []
        for k in try await listKeys() {
            let created = k.current ? (k.created ?? added[k.id]?.time) : added[k.id]?.time
            out.append(KeyLifecycleInfo(kind: "key object", id: k.id, keys: k.keys, created: created, generation: generationAt[k.id],
                                        status: .active, current: k.current, recovery: k.recovery, overdue: false, damaged: k.damaged))
        }
        let ring = try SymmetricObjectKey(secrets.ringKey)
        var dataKeys: [KeyLifecycleInfo] = []
        for item in try await storage.listAll(.keys) where item.name.name.hasPrefix("data-") {
            let (plain, _, _) = try await Self.readObject(storage, item.name) { try ring.fileKey(for: $0, object: item.name.description) }
            let p = try RepositoryJSON.decode(DataKeyPayload.self, plain, object: item.name.description)
            dataKeys.append(KeyLifecycleInfo(kind: "data key", id: item.name.name, keys: ["X25519"], created: p.created,
                                             generation: p.generation, status: .retired, current: false, recovery: false,
                                             overdue: false, damaged: nil))
        }
        dataKeys.sort { ($0.generation ?? 0) < ($1.generation ?? 0) }
        if !dataKeys.isEmpty { dataKeys[dataKeys.count - 1].status = .active }
        out += dataKeys
        if let age = history.maxKeyAge {
            for i in out.indices where out[i].status == .active {
                if let created = out[i].created, now.timeIntervalSince(created) > Double(age) { out[i].overdue = true }
            }
        }
        return out
    }
}
