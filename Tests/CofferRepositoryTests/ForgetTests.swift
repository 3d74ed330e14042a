@testable import CofferRepository
import Foundation
import Testing

@Suite struct ForgetTests {
    nonisolated(unsafe) static let formatter: ISO8601DateFormatter = { let f = ISO8601DateFormatter(); f.timeZone = TimeZone(identifier: "UTC"); return f }()

    static func record(_ n: Int, _ time: String, host: String = "h", paths: [String] = ["/data"], tags: [String] = []) -> SnapshotRecord {
        SnapshotRecord(id: String(format: "%064x", n),
                       info: SnapshotInfo(time: formatter.date(from: time)!, tree: TreeTests.id1, paths: paths, hostname: host,
                                          username: "u", tags: tags, parent: nil, programVersion: "t", summary: .init()))
    }

    /// Two snapshots a day (03:00 and 15:00) from 2024-01-01 to 2024-03-31 (UTC): 182 snapshots.
    static let series: [SnapshotRecord] = {
        var out: [SnapshotRecord] = []
        let start = formatter.date(from: "2024-01-01T03:00:00Z")!
        for i in 0..<182 {
            let t = start.addingTimeInterval(Double(i) * 12 * 3600)
            out.append(SnapshotRecord(id: String(format: "%064x", i + 1),
                                      info: SnapshotInfo(time: t, tree: TreeTests.id1, paths: ["/data"], hostname: "h", username: "u",
                                                         tags: i == 10 ? ["important"] : [], parent: nil, programVersion: "t", summary: .init())))
        }
        return out
    }()

    func kept(_ policy: ForgetPolicy, _ records: [SnapshotRecord] = series) throws -> [String] {
        try policy.apply(to: records).flatMap { $0.keep }.map { Self.formatter.string(from: $0.info.time) }
    }

    @Test func emptyPolicyIsRefused() {
        #expect(throws: TreeError.self) { try ForgetPolicy().apply(to: Self.series) }
    }

    @Test func keepLast() throws {
        var p = ForgetPolicy(); p.last = 3
        #expect(try kept(p) == ["2024-03-31T15:00:00Z", "2024-03-31T03:00:00Z", "2024-03-30T15:00:00Z"])
    }

    @Test func keepDailyTakesTheNewestOfEachDay() throws {
        var p = ForgetPolicy(); p.daily = 3
        #expect(try kept(p) == ["2024-03-31T15:00:00Z", "2024-03-30T15:00:00Z", "2024-03-29T15:00:00Z"])
    }

    @Test func keepHourly() throws {
        var p = ForgetPolicy(); p.hourly = 2
        #expect(try kept(p) == ["2024-03-31T15:00:00Z", "2024-03-31T03:00:00Z"])
    }

    @Test func keepWeeklyUsesISOWeeks() throws {
        var p = ForgetPolicy(); p.weekly = 3
        // 2024-03-31 is a Sunday (end of ISO week 13); Sundays of weeks 12 and 11 follow.
        #expect(try kept(p) == ["2024-03-31T15:00:00Z", "2024-03-24T15:00:00Z", "2024-03-17T15:00:00Z"])
    }

    @Test func keepMonthlyAndYearly() throws {
        var p = ForgetPolicy(); p.monthly = 5
        #expect(try kept(p) == ["2024-03-31T15:00:00Z", "2024-02-29T15:00:00Z", "2024-01-31T15:00:00Z"])
        var y = ForgetPolicy(); y.yearly = -1
        #expect(try kept(y) == ["2024-03-31T15:00:00Z"])
    }

    @Test func rulesCombineAndTagsAndWithin() throws {
        var p = ForgetPolicy(); p.last = 1; p.daily = 2; p.tags = [["important"]]
        let k = try kept(p)
        #expect(k == ["2024-03-31T15:00:00Z", "2024-03-30T15:00:00Z", "2024-01-06T03:00:00Z"])
        var w = ForgetPolicy(); w.within = try ForgetDuration(parsing: "1d12h")
        // Within 36 h of the newest (strictly after 2024-03-30T03:00): 2 of the 31st, 30th 15:00.
        #expect(try kept(w) == ["2024-03-31T15:00:00Z", "2024-03-31T03:00:00Z", "2024-03-30T15:00:00Z"])
    }

    @Test func groupsByHostAndPaths() throws {
        let records = [Self.record(1, "2024-01-01T00:00:00Z"), Self.record(2, "2024-01-02T00:00:00Z"),
                       Self.record(3, "2024-01-01T00:00:00Z", host: "other"),
                       Self.record(4, "2024-01-03T00:00:00Z", paths: ["/etc"])]
        var p = ForgetPolicy(); p.last = 1
        let groups = try p.apply(to: records)
        #expect(groups.count == 3)
        let keptIDs = Set(groups.flatMap { $0.keep }.map(\.id))
        #expect(keptIDs == [records[1].id, records[2].id, records[3].id])
        #expect(groups.flatMap { $0.remove }.map(\.id) == [records[0].id])
    }

    @Test func durationParsing() throws {
        #expect(try ForgetDuration(parsing: "1y2m3d4h") == ForgetDuration(years: 1, months: 2, days: 3, hours: 4))
        #expect(try ForgetDuration(parsing: "5d") == ForgetDuration(days: 5))
        for bad in ["", "5", "d", "1w", "-1d", "1d2"] {
            #expect(throws: TreeError.self) { try ForgetDuration(parsing: bad) }
        }
    }
}
