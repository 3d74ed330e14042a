import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Key lifecycle through the real binary: init --max-key-age, key list (kind, id, created,
/// generation, status, overdue), key policy, key log (--json) and an edited history refused.
@Suite struct RepoKeyHistoryTests {
    @Test("init --max-key-age, key add/rotate/policy: key list shows kinds, generations and status; key log lists every event; an edited event is refused")
    func lifecycle() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let repo = dir.file("repo")
        func run(_ command: [String], _ rest: [String] = []) throws -> RunResult {
            try coffer(command + ["--repo", repo, "--key-file", key] + rest)
        }
        #expect(try run(["init"], ["--max-key-age", "90d"]).status == Exit.ok)
        let second = try dir.keygen("second.key")
        #expect(try run(["key", "add"], ["--new-key-file", second]).status == Exit.ok)
        #expect(try run(["key", "rotate"]).status == Exit.ok)

        let list = try run(["key", "list"], ["--json"])
        #expect(list.status == Exit.ok, "\(list.stderr)")
        let keys = (try JSONSerialization.jsonObject(with: Data(list.stdout)) as? [[String: Any]]) ?? []
        #expect(keys.filter { $0["kind"] as? String == "key object" }.count == 2)
        #expect(keys.filter { $0["kind"] as? String == "key object" }.allSatisfy { $0["created"] != nil && $0["status"] as? String == "active" })
        let data = keys.filter { $0["kind"] as? String == "data key" }
        #expect(data.map { $0["id"] as? String } == ["data-1", "data-2"])
        #expect(data.map { $0["status"] as? String } == ["retired", "active"])
        #expect(data.map { $0["generation"] as? Int } == [1, 2])
        #expect(keys.allSatisfy { $0["overdue"] as? Bool == false })
        #expect(!list.stderr.contains("older than the rotation period"))
        let text = try run(["key", "list"])
        #expect(text.stdoutText.contains("rotation period 90 days"), "\(text.stdoutText)")

        // A rotation period of 0 days... is "off"; 1h makes nothing overdue yet either.
        #expect(try run(["key", "policy"], ["--max-key-age", "off"]).status == Exit.ok)
        #expect(try run(["key", "policy"], ["--max-key-age", "bogus"]).status == Exit.usage)

        let log = try run(["key", "log"], ["--json"])
        #expect(log.status == Exit.ok, "\(log.stderr)")
        let object = (try JSONSerialization.jsonObject(with: Data(log.stdout)) as? [String: Any]) ?? [:]
        let events = (object["events"] as? [[String: Any]]) ?? []
        #expect(events.map { $0["event"] as? String } == ["init", "add", "rotate", "policy"])
        #expect(events.first?["max_key_age"] as? Int == 90 * 86400)
        #expect((object["head"] as? String)?.count == 64)
        let plain = try run(["key", "log"])
        #expect(plain.stdoutText.contains("4 events; head "))

        // An edited event: key log and check refuse (integrity).
        let path = repo + "/keys/log-0000000002"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 3] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let edited = try run(["key", "log"])
        #expect(edited.status == Exit.integrity, "\(edited.stderr)")
        #expect(edited.stderr.contains("keys/log-0000000002"))
        #expect(try run(["check"]).status == Exit.integrity)
    }
}
