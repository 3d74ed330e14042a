import ArgumentParser
import CofferCloud
import CofferFormat
import CofferKeys
import Foundation

/// `coffer kms-bench --kms URI`: the latency of one wrap and one unwrap call, measured in-process
/// (no process start-up in the figure). Hidden: for scripts/bench-kms.sh.
struct KMSBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms-bench",
        abstract: "Measure KMS wrap/unwrap latency per call (for scripts/bench-kms.sh).",
        shouldDisplay: false)

    @Option(name: .customLong("kms"), help: ArgumentHelp("The KMS key to measure.", valueName: "uri"))
    var uri: String

    @Option(help: "Calls of each kind (after 5 warm-up calls).")
    var calls: Int = 200

    func run() throws {
        try Runtime.reporting {
            let recipient = try KMSRecipient(parsing: uri)
            let identity = KMSIdentity(uris: [recipient.uri])
            let key = FileKey.random()
            for _ in 0..<5 { _ = try identity.unwrap(stanzas: try recipient.wrap(fileKey: key.bytes)) }
            var stanzas: [[Stanza]] = []
            var wrapTimes: [Double] = []
            for _ in 0..<calls {
                let start = DispatchTime.now().uptimeNanoseconds
                stanzas.append(try recipient.wrap(fileKey: key.bytes))
                wrapTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            var unwrapTimes: [Double] = []
            for stanza in stanzas {
                let start = DispatchTime.now().uptimeNanoseconds
                guard let opened = try identity.unwrap(stanzas: stanza), opened == key.bytes else {
                    throw KeyError.service(context: "unwrap failed: \(identity.attempts.last ?? "")",
                                           cause: identity.lastServiceError ?? KeyServiceError(.invalidResponse, "no file key"))
                }
                unwrapTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            print("\(recipient.uri.redacted)")
            print(Self.line("wrap", wrapTimes))
            print(Self.line("unwrap", unwrapTimes))
        }
    }

    static func line(_ name: String, _ times: [Double]) -> String {
        let sorted = times.sorted()
        let mean = times.reduce(0, +) / Double(max(times.count, 1))
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return "  " + name.padding(toLength: 7, withPad: " ", startingAt: 0) + String(format: "%d calls: mean %.2f ms, p50 %.2f ms, p95 %.2f ms, max %.2f ms",
                      times.count, mean, percentile(0.5), percentile(0.95), sorted.last ?? 0)
    }
}
