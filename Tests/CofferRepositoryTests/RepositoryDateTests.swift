@testable import CofferRepository
import Foundation
import Testing

/// The repository's JSON dates are written and read without ISO8601DateFormatter (ICU's data cost
/// every command ~5 MiB of resident memory): the text and the parsed dates must be exactly what that
/// formatter gives, or stored snapshots, locks and key events would read back differently.
@Suite struct RepositoryDates {
    static func reference(_ fractional: Bool) -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f
    }

    static func dates() -> [Date] {
        var rng = SystemRandomNumberGenerator()
        var out: [Date] = [Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1_764_720_000),
                           Date(timeIntervalSince1970: 1_764_720_000.9999), Date(timeIntervalSince1970: 951_782_400.5),  // 2000-02-29
                           Date(timeIntervalSince1970: 4_102_444_799.999), Date(), Date(timeIntervalSince1970: -1.25)]
        for _ in 0..<3000 { out.append(Date(timeIntervalSince1970: Double.random(in: 0..<4_102_444_800, using: &rng))) }
        for _ in 0..<500 { out.append(Date(timeIntervalSince1970: Double(Int.random(in: 0..<4_102_444_800, using: &rng)) + Double(Int.random(in: 0..<1000, using: &rng)) / 1000)) }
        return out
    }

    @Test("formatDate writes exactly what ISO8601DateFormatter (internet date-time, fractional seconds, UTC) writes")
    func formatMatchesFoundation() {
        let f = Self.reference(true)
        for date in Self.dates() {
            #expect(RepositoryJSON.formatDate(date) == f.string(from: date), "\(date.timeIntervalSince1970)")
        }
    }

    @Test("parseDate reads what formatDate and ISO8601DateFormatter write, to the same Date, with and without a fraction and with offsets")
    func parseMatchesFoundation() {
        let fractional = Self.reference(true), whole = Self.reference(false)
        for date in Self.dates() {
            let text = RepositoryJSON.formatDate(date)
            #expect(RepositoryJSON.parseDate(text) == fractional.date(from: text), "\(text)")
            let plain = whole.string(from: date)
            #expect(RepositoryJSON.parseDate(plain) == whole.date(from: plain), "\(plain)")
        }
        for text in ["2025-12-03T01:30:00+01:30", "2025-12-03T00:00:00.5-02:00"] {
            let expected = fractional.date(from: text) ?? whole.date(from: text)
            #expect(expected != nil)
            #expect(RepositoryJSON.parseDate(text) == expected, "\(text)")
        }
    }

    @Test("parseDate refuses malformed times: wrong separators, out-of-range fields, missing zone, trailing bytes, empty fraction")
    func parseRefusesMalformed() {
        for text in ["", "2025-12-03", "2025-12-03 00:00:00Z", "2025-13-03T00:00:00Z", "2025-02-30T00:00:00Z",
                     "2025-12-03T24:00:00Z", "2025-12-03T00:60:00Z", "2025-12-03T00:00:00", "2025-12-03T00:00:00.Z",
                     "2025-12-03T00:00:00Zx", "2025-12-03T00:00:00+0100", "２025-12-03T00:00:00Z", "2025-12-03T00:00:00.000z"] {
            #expect(RepositoryJSON.parseDate(text) == nil, "\(text)")
        }
    }
}
