import CofferTestServers
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `key remove` in an object-locked s3:// repository, through the real binary against moto: the
/// key object cannot be destroyed before its date (a DELETE only adds a delete marker and the locked
/// version keeps opening the repository), so the command explains that and refuses unless --force.
@Suite("key remove in an object-locked s3:// repository", .serialized)
struct RepoS3KeyRemoveTests {
    /// `coffer key SUB …` with the setup's key and repository.
    func key(_ s: RepoS3Tests.Setup, _ args: [String], keyFile: String? = nil) throws -> RunResult {
        try coffer(["key", args[0], "--key-file", keyFile ?? s.key, "--repo", s.uri()] + args.dropFirst(), environment: s.environment)
    }

    /// The body of an unsigned `GET path` to moto (it does not check signatures unless told to).
    static func motoGet(_ port: Int, _ path: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) == request.count else { throw POSIXError(.EIO) }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            response += buffer[..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }

    @Test("a retained key object: refused with its date and why (nothing removed, the key still opens); --force warns, hides it, and its locked version stays in the bucket")
    func retainedKeyObject() throws {
        let s = try RepoS3Tests.Setup(files: 1)
        defer { s.moto.stop() }
        let initialized = try s.run(["init", "--object-lock-days", "2"])
        #expect(initialized.status == 0, "init: \(initialized.stderr)")
        #expect(try s.run(["backup", s.source]).status == 0)
        let second = try s.scratch.keygen("second.key")
        let added = try key(s, ["add", "--new-key-file", second, "--json"])
        #expect(added.status == 0, "key add: \(added.stderr)")
        let id = try #require(((try? JSONSerialization.jsonObject(with: Data(added.stdout))) as? [String: Any])?["id"] as? String)

        // Refused before anything is done: the date, what stays possible, how to go on.
        let refused = try key(s, ["remove", String(id.prefix(12))])
        #expect(refused.status == 64, "\(refused.status) \(refused.stderr)")
        for part in ["under object lock (compliance) until", "delete marker", "ring key", "data-key rotation", "Nothing was removed", "--force"] {
            #expect(refused.stderr.contains(part), "\(part): \(refused.stderr)")
        }
        #expect(try key(s, ["list", "--json"]).stdoutText.contains(id))
        #expect(try s.run(["snapshots"]).status == 0)
        let viaSecond = try coffer(["snapshots", "--key-file", second, "--repo", s.uri()], environment: s.environment)
        #expect(viaSecond.status == 0, "the second key still opens: \(viaSecond.stderr)")
        #expect(!(try key(s, ["log"]).stdoutText.contains("remove")), "no remove event")

        // --force: the same explanation as a warning first, then the removal.
        let forced = try key(s, ["remove", "--force", String(id.prefix(12)), "--json"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("warning:") && forced.stderr.contains("under object lock"), "\(forced.stderr)")
        let result = (try? JSONSerialization.jsonObject(with: Data(forced.stdout))) as? [String: Any]
        #expect(result?["removed"] as? String == id)
        #expect(result?["retained_until"] is String, "\(forced.stdoutText)")
        #expect(!(try key(s, ["list", "--json"]).stdoutText.contains(id)), "no longer listed")
        let gone = try coffer(["snapshots", "--key-file", second, "--repo", s.uri()], environment: s.environment)
        #expect(gone.status == 2, "the current version is gone: \(gone.status) \(gone.stderr)")
        #expect(try key(s, ["log"]).stdoutText.contains("remove"))

        // The bucket still holds the locked version, behind a delete marker: what the warning said.
        let versions = try Self.motoGet(s.moto.port, "/coffer-cli?versions&prefix=repo/keys/\(id)")
        #expect(versions.contains("<DeleteMarker>"), "\(versions)")
        #expect(versions.contains("<Version>"), "\(versions)")

        // The key that opened the repository is refused as before, --force or not.
        let current = try key(s, ["list", "--json"])
        let currentID = try #require(((try? JSONSerialization.jsonObject(with: Data(current.stdout))) as? [[String: Any]])?
            .first { $0["current"] as? Bool == true }?["id"] as? String)
        let own = try key(s, ["remove", "--force", currentID])
        #expect(own.status == 64 && own.stderr.contains("opened the repository"), "\(own.stderr)")
    }
}
