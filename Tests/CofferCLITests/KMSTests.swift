import CofferCloud
import CofferTestServers
import Foundation
import Testing

/// `coffer` with KMS keys, against real moto_server and `bao server -dev` processes on 127.0.0.1.
///
/// moto does not enforce disabled keys or key policies, and mishandles multi-region (`mrk-`) keys
/// (docs in shared/COMPONENTS.md), so "key disabled / access revoked" is tested with OpenBao:
/// a retired key version (min_decryption_version) and a wrong token.
@Suite("KMS keys on the command line", .serialized)
struct KMSCLITests {
    /// A clean environment: moto's test credentials, a HOME with no ~/.aws or ~/.vault-token,
    /// two attempts per call so outages fail quickly.
    static func environment(_ dir: Scratch, _ extra: [String: String] = [:]) -> [String: String] {
        var env = ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "HOME": dir.path,
                   "COFFER_KMS_ATTEMPTS": "2", "VAULT_TOKEN": "", "VAULT_ADDR": "", "AWS_PROFILE": "",
                   "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_KMS": "", "AWS_SESSION_TOKEN": ""]
        env.merge(extra) { $1 }
        return env
    }

    static func awsURI(_ key: String, _ server: TestServer, region: String = "us-east-1") -> String {
        "aws:///\(key)?REGION=\(region)&AWS_ENDPOINT=\(server.endpoint)"
    }

    static func vaultURI(_ key: String, _ server: TestServer) -> String {
        "vault:///\(key)?ADDR=\(server.endpoint)"
    }

    @Test("two regions on two servers: either decrypts; with both down the error lists both attempts")
    func regionalOutage() async throws {
        let east = try TestServer.moto()
        let west = try TestServer.moto()
        defer { east.stop(); west.stop() }
        let eastARN = try await Moto.createKey(east, region: "us-east-1", alias: "backups")
        let westARN = try await Moto.createKey(west, region: "eu-west-1", alias: "backups")
        let dir = Scratch()
        let env = Self.environment(dir)
        let plaintext = pseudoRandom(70_000)
        let input = try dir.write(plaintext, "dump.sql")
        let kms = ["--kms", Self.awsURI("alias/backups", east), "--kms", Self.awsURI("alias/backups", west, region: "eu-west-1")]
        let encrypted = try coffer(["encrypt"] + kms + ["-o", dir.file("dump.sql.cof"), input], environment: env)
        try #require(encrypted.status == 0, "\(encrypted.stderr)")
        let inspected = try coffer(["inspect", dir.file("dump.sql.cof")], environment: env).stdoutText
        #expect(inspected.contains(eastARN) && inspected.contains(westARN))

        east.stop()
        // The URIs given: the first region fails, the second opens the file.
        let viaWest = try coffer(["decrypt"] + kms + ["-o", dir.file("out1"), dir.file("dump.sql.cof")], environment: env)
        #expect(viaWest.status == 0, "\(viaWest.stderr)")
        #expect(try dir.read("out1") == plaintext)
        // No URI given: the stanzas' own keys, with the credentials found, at an endpoint the
        // user gives (a stanza's ENDPOINT alone is not trusted: the east one is not tried).
        let implicit = try coffer(["decrypt", "-o", dir.file("out2"), dir.file("dump.sql.cof")],
                                  environment: Self.environment(dir, ["AWS_ENDPOINT_URL_KMS": west.endpoint]))
        #expect(implicit.status == 0, "\(implicit.stderr)")
        #expect(try dir.read("out2") == plaintext)
        let untrusted = try coffer(["decrypt", "-o", dir.file("out4"), dir.file("dump.sql.cof")], environment: env)
        #expect(untrusted.status == Exit.key)
        #expect(untrusted.stderr.contains("not tried"), "\(untrusted.stderr)")
        #expect(!dir.exists("out4"))

        west.stop()
        let none = try coffer(["decrypt"] + kms + ["-o", dir.file("out3"), dir.file("dump.sql.cof")], environment: env)
        #expect(none.status == Exit.key)
        #expect(none.stderr.contains("\(eastARN) (us-east-1): unreachable"), "\(none.stderr)")
        #expect(none.stderr.contains("\(westARN) (eu-west-1): unreachable"), "\(none.stderr)")
        #expect(dir.absent("out3"))
    }

    @Test("a directory run: one wrap call per URI, one unwrap call per run")
    func directoryRunCalls() async throws {
        let moto = try TestServer.moto()
        let bao = try TestServer.openBao()
        defer { moto.stop(); bao.stop() }
        _ = try await Moto.createKey(moto, alias: "run")
        try await Bao.createKey(bao, "run")
        let dir = Scratch()
        let env = Self.environment(dir, ["COFFER_KMS_STATS": "1", "VAULT_TOKEN": "root"])
        for i in 0..<40 { _ = try dir.write(pseudoRandom(100 + i, seed: UInt64(i)), "tree/sub\(i % 3)/file\(i)") }
        let encrypted = try coffer(["encrypt", "-q", "--recursive", "--remove-original", "--kms", Self.awsURI("alias/run", moto),
                                    "--kms", Self.vaultURI("run", bao), dir.file("tree")], environment: env)
        #expect(encrypted.status == 0, "\(encrypted.stderr)")
        #expect(encrypted.stderr.contains("kms calls: 2 (aws-kms Encrypt=1, vault encrypt=1)"), "\(encrypted.stderr)")
        let decrypted = try coffer(["decrypt", "-q", "--recursive", "--kms", Self.vaultURI("run", bao), dir.file("tree")], environment: env)
        #expect(decrypted.status == 0, "\(decrypted.stderr)")
        #expect(decrypted.stderr.contains("kms calls: 1 (vault decrypt=1)"), "\(decrypted.stderr)")
        #expect(try dir.read("tree/sub1/file7") == pseudoRandom(107, seed: 7))
        let verified = try coffer(["verify", "-q", "--recursive", dir.file("tree")], environment: env.merging(["AWS_ENDPOINT_URL_KMS": moto.endpoint]) { $1 })
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stderr.contains("kms calls: 1 (aws-kms Decrypt=1)"), "\(verified.stderr)")
    }

    @Test("OpenBao: rotation, rewrap --rotate-kms, a retired version refused while the rewrapped stanza works")
    func vaultRotation() async throws {
        let bao = try TestServer.openBao()
        defer { bao.stop() }
        try await Bao.createKey(bao, "kek")
        let dir = Scratch()
        let env = Self.environment(dir, ["VAULT_TOKEN": "root"])
        let input = try dir.write(Array("pg_dump output\n".utf8), "db.sql")
        let uri = Self.vaultURI("kek", bao)
        #expect(try coffer(["encrypt", "--kms", uri, "-o", dir.file("db.cof"), input], environment: env).status == 0)
        try FileManager.default.copyItem(atPath: dir.file("db.cof"), toPath: dir.file("db-old.cof"))
        #expect(try coffer(["inspect", dir.file("db.cof")], environment: env).stdoutText.contains("transit/kek v1"))

        _ = try await Bao.client("kek", bao).raw("POST", "transit/keys/kek/rotate")
        let rewrapped = try coffer(["rewrap", "--rotate-kms", "--kms", uri, dir.file("db.cof")], environment: env)
        #expect(rewrapped.status == 0, "\(rewrapped.stderr)")
        #expect(rewrapped.stderr.contains("1 re-wrapped under the newest key version"), "\(rewrapped.stderr)")
        #expect(try coffer(["inspect", dir.file("db.cof")], environment: env).stdoutText.contains("transit/kek v2"))

        _ = try await Bao.client("kek", bao).raw("POST", "transit/keys/kek/config", ["min_decryption_version": "2"])
        let old = try coffer(["decrypt", "--kms", uri, dir.file("db-old.cof")], environment: env)
        #expect(old.status == Exit.key)
        #expect(old.stderr.contains("key disabled") && old.stderr.contains("too old"), "\(old.stderr)")
        let new = try coffer(["decrypt", "--kms", uri, dir.file("db.cof")], environment: env)
        #expect(new.status == 0, "\(new.stderr)")
        #expect(new.stdoutText == "pg_dump output\n")

        let wrongToken = try coffer(["decrypt", "--kms", uri, dir.file("db.cof")], environment: Self.environment(dir, ["VAULT_TOKEN": "wrong"]))
        #expect(wrongToken.status == Exit.key)
        #expect(wrongToken.stderr.contains("access denied"), "\(wrongToken.stderr)")
        // Without --kms the token goes only to VAULT_ADDR.
        let untrusted = try coffer(["decrypt", dir.file("db.cof")], environment: env)
        #expect(untrusted.status == Exit.key)
        #expect(untrusted.stderr.contains("the token is sent only to VAULT_ADDR"), "\(untrusted.stderr)")
        let trusted = try coffer(["decrypt", dir.file("db.cof")], environment: Self.environment(dir, ["VAULT_TOKEN": "root", "VAULT_ADDR": bao.endpoint]))
        #expect(trusted.status == 0, "\(trusted.stderr)")
    }

    @Test("reencrypt --to-kms: a key-file backup moves under a fresh file key to a Transit key, signed; the old key no longer opens it")
    func reencryptToKMS() async throws {
        let bao = try TestServer.openBao()
        defer { bao.stop() }
        try await Bao.createKey(bao, "kek")
        let dir = Scratch()
        let env = Self.environment(dir, ["VAULT_TOKEN": "root"])
        let key = try dir.keygen("old.key")
        #expect(try coffer(["keygen", "--type", "ed25519", "-o", dir.file("producer")]).status == 0)
        let plaintext = pseudoRandom(50_000)
        let input = try dir.write(plaintext, "db.sql")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("db.cof"), input]).status == 0)
        let uri = Self.vaultURI("kek", bao)
        let moved = try coffer(["reencrypt", "--key-file", key, "--to-kms", uri, "--sign", dir.file("producer.key"), dir.file("db.cof")],
                               environment: env)
        #expect(moved.status == 0, "\(moved.stderr)")
        #expect(try coffer(["decrypt", "--key-file", key, dir.file("db.cof")], environment: env).status == Exit.key)
        let out = try coffer(["decrypt", "--kms", uri, "--signed-by", dir.file("producer.pub"), dir.file("db.cof")], environment: env)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == plaintext)
        #expect(try coffer(["reencrypt", "--key-file", key, "--to-kms", "vault:///kek", dir.file("db.cof")], environment: env).status == Exit.usage)
    }

    @Test("KMS plus an X25519 recovery recipient: with the KMS down the recovery key alone decrypts")
    func recoveryWithKMSDown() async throws {
        let moto = try TestServer.moto()
        defer { moto.stop() }
        _ = try await Moto.createKey(moto, alias: "prod")
        let dir = Scratch()
        let env = Self.environment(dir, ["COFFER_KMS_STATS": "1"])
        #expect(try coffer(["keygen", "--type", "x25519", "-o", dir.file("recovery")], environment: env).status == 0)
        let input = try dir.write(pseudoRandom(5000), "data")
        let encrypted = try coffer(["encrypt", "--kms", Self.awsURI("alias/prod", moto), "--recovery-recipient", dir.file("recovery.pub"),
                                    "-o", dir.file("data.cof"), input], environment: env)
        #expect(encrypted.status == 0, "\(encrypted.stderr)")
        moto.stop()
        let withoutRecovery = try coffer(["decrypt", "-o", dir.file("a"), dir.file("data.cof")],
                                         environment: env.merging(["AWS_ENDPOINT_URL_KMS": moto.endpoint]) { $1 })
        #expect(withoutRecovery.status == Exit.key)
        #expect(withoutRecovery.stderr.contains("unreachable"), "\(withoutRecovery.stderr)")
        let recovered = try coffer(["decrypt", "-i", dir.file("recovery.key"), "-o", dir.file("b"), dir.file("data.cof")], environment: env)
        #expect(recovered.status == 0, "\(recovered.stderr)")
        #expect(try dir.read("b") == pseudoRandom(5000))
        // The local key opened the file first: the KMS was not even asked.
        #expect(recovered.stderr.contains("kms calls: 0"), "\(recovered.stderr)")
    }

    @Test("rewrap --kms adds a stanza, --remove drops one by the key id inspect shows")
    func rewrapAddRemove() async throws {
        let moto = try TestServer.moto()
        defer { moto.stop() }
        _ = try await Moto.createKey(moto, alias: "new")
        let dir = Scratch()
        let env = Self.environment(dir)
        let key = try dir.keygen()
        let input = try dir.write(Array("rows\n".utf8), "t")
        #expect(try coffer(["encrypt", "--key-file", key, "-o", dir.file("t.cof"), input], environment: env).status == 0)
        let added = try coffer(["rewrap", "--key-file", key, "--kms", Self.awsURI("alias/new", moto), dir.file("t.cof")], environment: env)
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stderr.contains("+1"), "\(added.stderr)")
        let json = try coffer(["inspect", "--json", dir.file("t.cof")], environment: env).stdoutText
        let stanzas = try #require((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["stanzas"] as? [[String: Any]])
        let kms = try #require(stanzas.first { $0["type"] as? String == "aws-kms" })
        let keyFileID = try #require(stanzas.first { $0["type"] as? String == "keyfile" }?["key_id"] as? String)
        #expect((kms["uri"] as? String)?.hasPrefix("aws-kms:///arn:aws:kms:us-east-1:123456789012:key/") == true)
        // The KMS stanza alone now opens the file.
        let removed = try coffer(["rewrap", "--remove", keyFileID, dir.file("t.cof")], environment: Self.environment(dir, ["AWS_ENDPOINT_URL_KMS": moto.endpoint]))
        #expect(removed.status == 0, "\(removed.stderr)")
        let opened = try coffer(["decrypt", "--kms", Self.awsURI("alias/new", moto), dir.file("t.cof")], environment: env)
        #expect(opened.status == 0 && opened.stdoutText == "rows\n", "\(opened.stderr)")
        let withKeyFile = try coffer(["decrypt", "--key-file", key, dir.file("t.cof")], environment: Self.environment(dir, ["AWS_ACCESS_KEY_ID": ""]))
        #expect(withKeyFile.status == Exit.key)
    }

    @Test("a malformed --kms URI is refused naming the part; AUTH=specified warns and never shows its secret")
    func uriHandling() async throws {
        let dir = Scratch()
        let env = Self.environment(dir)
        let input = try dir.write([1, 2, 3], "x")
        let bad = try coffer(["encrypt", "--kms", "aws:///alias/x?REGON=us-east-1", "-o", dir.file("x.cof"), input], environment: env)
        #expect(bad.status == Exit.usage)
        #expect(bad.stderr.contains("parameter REGON is not known"), "\(bad.stderr)")
        #expect(dir.absent("x.cof"))
        let noRegion = try coffer(["encrypt", "--kms", "aws:///alias/x", "-o", dir.file("x.cof"), input], environment: env)
        #expect(noRegion.status == Exit.usage)
        #expect(noRegion.stderr.contains("REGION is missing"), "\(noRegion.stderr)")

        let moto = try TestServer.moto()
        defer { moto.stop() }
        _ = try await Moto.createKey(moto, alias: "spec")
        let uri = Self.awsURI("alias/spec", moto) + "&AUTH=specified&AWS_ACCESS_KEY_ID=testing&AWS_SECRET_ACCESS_KEY=VerySecretValue123"
        let specified = try coffer(["encrypt", "--kms", uri, "-o", dir.file("x.cof"), input],
                                   environment: Self.environment(dir, ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""]))
        #expect(specified.status == 0, "\(specified.stderr)")
        #expect(specified.stderr.contains("AUTH=specified") && specified.stderr.contains("shell history"), "\(specified.stderr)")
        #expect(!specified.stderr.contains("VerySecretValue123"))
        let inspected = try coffer(["inspect", dir.file("x.cof")], environment: env)
        #expect(inspected.stdoutText.contains("uri: aws-kms:///arn:aws:kms:us-east-1:123456789012:key/"))
        let fileBytes = try dir.read("x.cof")
        #expect(!inspected.stdoutText.contains("VerySecretValue123"))
        #expect(!fileBytes.containsBytes(Array("VerySecretValue123".utf8)))
    }

    /// moto verifies SigV4 only in IAM mode: the first three calls (user, access key, policy) pass
    /// unauthenticated, every later one is checked against that user's key.
    @Test("a server that checks signatures: the profile's key works, a wrong secret is refused as bad credentials")
    func signaturesChecked() async throws {
        let moto = try TestServer.moto(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"])
        defer { moto.stop() }
        let user = try await Moto.createSigningUser(moto)
        let id = user.accessKeyID, secret = user.secretAccessKey
        _ = try await Moto.createKey(moto, alias: "signed", environment: ["AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret])

        // The key comes from a profile in ~/.aws/credentials (AUTH=implicit, AWS_PROFILE).
        let dir = Scratch()
        _ = try dir.write(Array("[backup]\naws_access_key_id = \(id)\naws_secret_access_key = \(secret)\n".utf8), ".aws/credentials")
        let profile = Self.environment(dir, ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "backup"])
        let input = try dir.write(Array("signed\n".utf8), "x")
        let uri = Self.awsURI("alias/signed", moto)
        let encrypted = try coffer(["encrypt", "--kms", uri, "-o", dir.file("x.cof"), input], environment: profile)
        #expect(encrypted.status == 0, "\(encrypted.stderr)")
        let decrypted = try coffer(["decrypt", "--kms", uri, dir.file("x.cof")], environment: profile)
        #expect(decrypted.status == 0 && decrypted.stdoutText == "signed\n", "\(decrypted.stderr)")

        let wrongSecret = Self.environment(dir, ["AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret + "x"])
        let refused = try coffer(["decrypt", "--kms", uri, dir.file("x.cof")], environment: wrongSecret)
        #expect(refused.status == Exit.key)
        #expect(refused.stderr.contains("bad credentials") && refused.stderr.contains("SignatureDoesNotMatch"), "\(refused.stderr)")
        #expect(!refused.stderr.contains(secret))
    }

    @Test("a KMS retry that recovers: the server fails twice, then answers; encrypt and decrypt succeed after exactly 3 requests each")
    func retryRecovers() async throws {
        let moto = try TestServer.moto()
        defer { moto.stop() }
        _ = try await Moto.createKey(moto, alias: "flaky")
        // Requests 0, 1 get HTTP 500; 2 goes to moto; then the same again.
        let flaky = try LoggingListener { index, _ in index % 3 == 2 ? .forward(port: moto.port) : .answer(status: 500, headers: [], body: []) }
        defer { flaky.stop() }
        let dir = Scratch()
        let env = Self.environment(dir, ["COFFER_KMS_ATTEMPTS": "4", "COFFER_KMS_STATS": "1"])
        let input = try dir.write(pseudoRandom(3000), "x")
        let uri = Self.awsURI("alias/flaky", moto).replacingOccurrences(of: moto.endpoint, with: flaky.endpoint)
        let encrypted = try coffer(["encrypt", "--kms", uri, "-o", dir.file("x.cof"), input], environment: env)
        #expect(encrypted.status == 0, "\(encrypted.stderr)")
        #expect(flaky.requests.count == 3)
        #expect(encrypted.stderr.contains("http requests: 3"), "\(encrypted.stderr)")
        let decrypted = try coffer(["decrypt", "--kms", uri, "-o", dir.file("out"), dir.file("x.cof")], environment: env)
        #expect(decrypted.status == 0, "\(decrypted.stderr)")
        #expect(try dir.read("out") == pseudoRandom(3000))
        #expect(flaky.requests.count == 6)
        #expect(flaky.requests.map { $0.header("X-Amz-Target") ?? "" } == Array(repeating: "TrentService.Encrypt", count: 3) + Array(repeating: "TrentService.Decrypt", count: 3))
    }

    @Test("a mistyped secret parameter on the command line is never shown, whatever its spelling")
    func mistypedSecretNotShown() throws {
        let dir = Scratch()
        let input = try dir.write([1], "x")
        for parameter in ["aws_secret_access_key=Hunter2Secret", "AWS_SECRET_ACCESS_KEY%20=Hunter2Secret", "Aws_Session_Token=Hunter2Secret",
                          "AWS%5FSECRET%5FACCESS%5FKEY=Hunter2Secret", "token=Hunter2Secret", "AWS_SECRET_ACCESS_KEY:Hunter2Secret"] {
            for base in ["aws:///alias/x?REGION=us-east-1&AUTH=specified&AWS_ACCESS_KEY_ID=AKID&", "vault:///k?ADDR=http://127.0.0.1:1&"] {
                let result = try coffer(["encrypt", "--kms", base + parameter, "-o", dir.file("x.cof"), input], environment: Self.environment(dir))
                #expect(result.status == Exit.usage, "\(parameter): \(result.stderr)")
                #expect(!result.stderr.contains("Hunter2Secret") && !result.stdoutText.contains("Hunter2Secret"), "\(result.stderr)")
            }
        }
        #expect(!dir.exists("x.cof"))
    }

    @Test("no credentials and an unknown key: clear errors, nothing written")
    func credentialsAndMissingKey() async throws {
        let moto = try TestServer.moto()
        defer { moto.stop() }
        let dir = Scratch()
        let input = try dir.write([1], "x")
        let noCredentials = try coffer(["encrypt", "--kms", Self.awsURI("alias/any", moto), "-o", dir.file("x.cof"), input],
                                       environment: Self.environment(dir, ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""]))
        #expect(noCredentials.status == Exit.key)
        #expect(noCredentials.stderr.contains("no AWS credentials"), "\(noCredentials.stderr)")
        let missing = try coffer(["encrypt", "--kms", Self.awsURI("alias/missing", moto), "-o", dir.file("x.cof"), input],
                                 environment: Self.environment(dir))
        #expect(missing.status == Exit.key)
        #expect(missing.stderr.contains("key not found") && missing.stderr.contains("alias/missing"), "\(missing.stderr)")
        #expect(dir.absent("x.cof"))
    }
}

extension Array where Element == UInt8 {
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { Array(self[$0..<($0 + needle.count)]) == needle }
    }
}
