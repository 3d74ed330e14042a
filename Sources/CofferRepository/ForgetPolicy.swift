import Foundation

/// A duration for `keep-within`, in restic's notation: `1y2m3d4h` (years, months, days, hours).
public struct ForgetDuration: Sendable, Equatable {
    public var years = 0, months = 0, days = 0, hours = 0

    public init(years: Int = 0, months: Int = 0, days: Int = 0, hours: Int = 0) {
        self.years = years; self.months = months; self.days = days; self.hours = hours
    }

    public init(parsing text: String) throws {
        var number = ""
        var seen = false
        for c in text {
            if c.isASCII && c.isNumber { number.append(c); continue }
            guard let n = Int(number), n >= 0, n < 100_000 else { throw TreeError.invalidRequest("invalid duration \"\(text)\" (e.g. 1y2m3d4h)") }
            switch c {
            case "y": years = n
            case "m": months = n
            case "d": days = n
            case "h": hours = n
            default: throw TreeError.invalidRequest("invalid duration \"\(text)\" (e.g. 1y2m3d4h)")
            }
            number = ""
            seen = true
        }
        guard seen, number.isEmpty else { throw TreeError.invalidRequest("invalid duration \"\(text)\" (e.g. 1y2m3d4h)") }
    }

    var isZero: Bool { years == 0 && months == 0 && days == 0 && hours == 0 }

    /// `date` minus this duration (UTC calendar).
    func before(_ date: Date) -> Date {
        var c = DateComponents()
        c.year = -years; c.month = -months; c.day = -days; c.hour = -hours
        return ForgetPolicy.calendar.date(byAdding: c, to: date)!
    }
}

/// Which snapshots `forget` keeps, as restic decides it: per group (same host and paths),
/// newest first, a snapshot is kept when it is the newest of a new hour/day/week/month/year
/// bucket for a rule whose count is not used up (`-1` = unlimited), one of the last N, has all
/// tags of a `keep-tag` list, or lies within `keep-within` of the group's newest snapshot.
/// Buckets are computed in UTC (weeks are ISO 8601 weeks).
public struct ForgetPolicy: Sendable, Equatable {
    public var last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0
    public var within: ForgetDuration? = nil
    /// Each inner list: keep snapshots carrying all of its tags.
    public var tags: [[String]] = []

    public init() {}

    public var isEmpty: Bool {
        last == 0 && hourly == 0 && daily == 0 && weekly == 0 && monthly == 0 && yearly == 0
            && (within?.isZero ?? true) && tags.isEmpty
    }

    static let calendar: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    static let isoCalendar: Calendar = {
        var c = Calendar(identifier: .iso8601)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    public struct Decision: Sendable, Equatable {
        public let record: SnapshotRecord
        /// Why it is kept (empty: removed).
        public let reasons: [String]
        public var keep: Bool { !reasons.isEmpty }
    }

    public struct Group: Sendable, Equatable {
        public let hostname: String
        public let paths: [String]
        /// Newest first.
        public let decisions: [Decision]
        public var keep: [SnapshotRecord] { decisions.filter(\.keep).map(\.record) }
        public var remove: [SnapshotRecord] { decisions.filter { !$0.keep }.map(\.record) }
    }

    /// Applies the policy to every group; a pure function of the snapshots.
    public func apply(to records: [SnapshotRecord]) throws -> [Group] {
        guard !isEmpty else { throw TreeError.invalidRequest("no keep rule given: refusing to remove every snapshot") }
        var groups: [String: [SnapshotRecord]] = [:]
        for r in records {
            let key = r.info.hostname + "\u{0}" + r.info.paths.sorted().joined(separator: "\u{0}")
            groups[key, default: []].append(r)
        }
        return groups.keys.sorted().map { key in
            let list = groups[key]!.sorted { ($0.info.time, $0.id) > ($1.info.time, $1.id) }
            return Group(hostname: list[0].info.hostname, paths: list[0].info.paths.sorted(), decisions: decide(list))
        }
    }

    private func decide(_ list: [SnapshotRecord]) -> [Decision] {
        let cal = ForgetPolicy.calendar, iso = ForgetPolicy.isoCalendar
        typealias Bucket = (count: Int, key: (Date, Int) -> Int, reason: String)
        let rules: [Bucket] = [
            (last, { _, nr in nr }, "last snapshot"),
            (hourly, { d, _ in let c = cal.dateComponents([.year, .month, .day, .hour], from: d); return ((c.year! * 100 + c.month!) * 100 + c.day!) * 100 + c.hour! }, "hourly snapshot"),
            (daily, { d, _ in let c = cal.dateComponents([.year, .month, .day], from: d); return (c.year! * 100 + c.month!) * 100 + c.day! }, "daily snapshot"),
            (weekly, { d, _ in let c = iso.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d); return c.yearForWeekOfYear! * 100 + c.weekOfYear! }, "weekly snapshot"),
            (monthly, { d, _ in let c = cal.dateComponents([.year, .month], from: d); return c.year! * 100 + c.month! }, "monthly snapshot"),
            (yearly, { d, _ in cal.component(.year, from: d) }, "yearly snapshot"),
        ]
        var remaining = rules.map(\.count)
        var lastKey = rules.map { _ in Int.min }
        let cutoff = within.flatMap { $0.isZero ? nil : $0.before(list[0].info.time) }
        var out: [Decision] = []
        for (nr, record) in list.enumerated() {
            var reasons: [String] = []
            for required in tags where !required.isEmpty && required.allSatisfy(record.info.tags.contains) {
                reasons.append("has tags \(required.joined(separator: ","))")
                break
            }
            if let cutoff, record.info.time > cutoff { reasons.append("within \(withinText)") }
            for (i, rule) in rules.enumerated() where remaining[i] != 0 {
                let key = rule.key(record.info.time, nr)
                if key != lastKey[i] {
                    lastKey[i] = key
                    reasons.append(rule.reason)
                    if remaining[i] > 0 { remaining[i] -= 1 }
                }
            }
            out.append(Decision(record: record, reasons: reasons))
        }
        return out
    }

    private var withinText: String {
        guard let w = within else { return "" }
        return "\(w.years)y\(w.months)m\(w.days)d\(w.hours)h"
    }
}

extension BlobStore {
    /// The blobs every one of `snapshots` uses: what prune must keep.
    public func usedBlobs(of snapshots: [SnapshotRecord]) async throws -> Set<UsedBlob> {
        var used = Set<UsedBlob>()
        for s in snapshots { try await usedBlobs(root: s.info.tree, into: &used) }
        return used
    }
}
