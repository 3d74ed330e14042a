import CofferCloud
import CofferFormat
import CofferKeys
import CofferTestServers
import Crypto
import Foundation
import Testing

/// A header is attacker-controlled until its MAC is checked, and anyone can write a valid one: a
/// file forged with hostile KMS stanzas must never make `coffer` send a token, a signature or a
/// request to an address the user did not give (docs/KEYS.md, "Where KMS credentials go").
///
/// The attacker's server is a ``LoggingListener`` on 127.0.0.1 that records everything it gets
/// and answers as a cooperating KMS would: the plaintext is the forged file's key. Every command
/// that reads a header runs over each forged file with a Vault token and AWS credentials in its
/// environment; the listener must see no connection at all.
@Suite("Credentials go only where the user said", .serialized)
struct ExfiltrationTests {
    static let token = "hvs.VICTIM-VAULT-TOKEN-0123456789"
    static let accessKey = "AKIAVICTIMACCESSKEY0"
    static let secretKey = "victim/secret+access/key0123456789abcdef"
    static let sessionToken = "VICTIM-SESSION-TOKEN-abcdef"
    static let wrapID = String(repeating: "ab", count: 16)
    static let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    static let forgedPlaintext = Array("ATTACKER-CHOSEN PLAINTEXT\n".utf8)

    /// A victim's environment: every kind of ambient credential, one attempt per call.
    static func environment(_ dir: Scratch, _ extra: [String: String] = [:]) -> [String: String] {
        var env = ["HOME": dir.path, "VAULT_TOKEN": token, "VAULT_ADDR": "", "AWS_ACCESS_KEY_ID": accessKey,
                   "AWS_SECRET_ACCESS_KEY": secretKey, "AWS_SESSION_TOKEN": sessionToken, "AWS_PROFILE": "",
                   "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_KMS": "", "COFFER_KMS_ATTEMPTS": "1", "COFFER_KMS_TIMEOUT": "3"]
        env.merge(extra) { $1 }
        return env
    }

    /// The attacker's server: answers any KMS Decrypt or Transit decrypt with the forged file key
    /// (and, for Transit, the context hash a real server would have sealed with it).
    static func attacker(fileKey: [UInt8]) throws -> LoggingListener {
        let vaultPlaintext = fileKey + Array(SHA256.hash(data: Array("coffer/v1 vault-transit context".utf8) + [0] + Array(wrapID.utf8)))
        return try LoggingListener { _, request in
            if request.header("X-Amz-Target") != nil {
                return .json(200, ["Plaintext": Data(fileKey).base64EncodedString(), "KeyId": arn])
            }
            return .json(200, ["data": ["plaintext": Data(vaultPlaintext).base64EncodedString()]])
        }
    }

    /// A file anyone can write: the attacker picks the file key, writes the stanzas (the victim's
    /// public key among them when given) and the header MAC.
    static func forge(_ dir: Scratch, _ name: String, fileKey: [UInt8], stanzas: [Stanza], publicKeyFile: String? = nil) throws -> String {
        let key = try FileKey(bytes: fileKey)
        var all = stanzas
        if let publicKeyFile {
            let text = try String(contentsOfFile: publicKeyFile, encoding: .utf8)
            all += try RecipientText.parseFile(text, source: publicKeyFile).flatMap { try $0.wrap(fileKey: key.bytes) }
        }
        let encryptor = CofferEncryptor(fileKey: key, stanzas: all)
        let path = dir.file(name)
        let sink = MemorySink()
        let plainPath = try dir.write(forgedPlaintext, name + ".plain")
        let fd = open(plainPath, O_RDONLY)
        defer { close(fd) }
        _ = try encryptor.encrypt(from: ByteSource(fd: fd, path: plainPath), to: sink, parameters: HeaderParameters(), engine: StreamEngine(threads: 1))
        try Data(sink.bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func vault(address: String, mount: String = "transit", key: String = "k", namespace: String? = nil) -> Stanza {
        Stanza(type: "vault-transit", arguments: [address, mount, key, "1", wrapID] + (namespace.map { [$0] } ?? []),
               body: Array(repeating: 0xE2, count: 60))
    }

    static func aws(region: String = "us-east-1", arn: String = ExfiltrationTests.arn, endpoint: String? = nil) -> Stanza {
        Stanza(type: "aws-kms", arguments: [region, arn, wrapID] + (endpoint.map { [$0] } ?? []), body: Array(repeating: 0xE1, count: 96))
    }

    /// Every command that reads a header, each with its own output names.
    static func commands(_ dir: Scratch, _ file: String, keyFile: String, otherKeyFile: String) -> [[String]] {
        [["decrypt", "-o", dir.file("out-plain"), file],
         ["decrypt", file],
         ["decrypt", "--key-file", keyFile, "-o", dir.file("out-keyfile"), file],
         ["verify", file],
         ["verify", "--key-file", keyFile, file],
         ["inspect", file],
         ["inspect", "--json", file],
         ["rewrap", "--add-key-file", otherKeyFile, file],
         ["rewrap", "--key-file", keyFile, "--add-key-file", otherKeyFile, file],
         ["rewrap", "--rotate-kms", file],
         ["reencrypt", "--to-key-file", otherKeyFile, file],
         ["reencrypt", "--key-file", keyFile, "--to-key-file", otherKeyFile, file]]
    }

    /// Runs every command over `file` and checks: no connection reached the attacker, no
    /// command printed the forged plaintext or succeeded through the hostile stanza, and no
    /// command but inspect exited 0. Returns the failures' messages.
    @discardableResult
    static func runAll(_ dir: Scratch, _ file: String, attacker: LoggingListener, environment: [String: String],
                       sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        let keyFile = dir.exists("victim.key") ? dir.file("victim.key") : try dir.keygen("victim.key")
        let otherKeyFile = dir.exists("other.key") ? dir.file("other.key") : try dir.keygen("other.key")
        let original = try dir.read(URL(fileURLWithPath: file).lastPathComponent)
        var messages: [String] = []
        for command in commands(dir, file, keyFile: keyFile, otherKeyFile: otherKeyFile) {
            let result = try coffer(command, environment: environment)
            messages.append(result.stderr)
            let name = command.joined(separator: " ")
            #expect(attacker.connections == 0, "\(name): the attacker's server got \(attacker.connections) connection(s): \(attacker.requests.map(\.text))",
                    sourceLocation: sourceLocation)
            #expect(!result.stdout.containsBytes(forgedPlaintext), "\(name) printed the forged plaintext", sourceLocation: sourceLocation)
            if command[0] != "inspect" {
                #expect(result.status != 0, "\(name) succeeded: \(result.stderr)", sourceLocation: sourceLocation)
            }
            for secret in [token, secretKey, sessionToken] {
                #expect(!result.stderr.contains(secret) && !result.stdout.containsBytes(Array(secret.utf8)), "\(name) showed a secret",
                        sourceLocation: sourceLocation)
            }
        }
        #expect(!dir.exists("out-plain") && !dir.exists("out-keyfile"), sourceLocation: sourceLocation)
        #expect(try dir.read(URL(fileURLWithPath: file).lastPathComponent) == original, "the forged file was rewritten", sourceLocation: sourceLocation)
        for request in attacker.requests {
            for secret in [token, accessKey, sessionToken] {
                #expect(!request.text.contains(secret), "the attacker received \(secret)", sourceLocation: sourceLocation)
            }
        }
        return messages
    }

    static func randomKey() -> [UInt8] { SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) } }

    @Test("vault-transit: a key name carrying '?ADDR=…&NAMESPACE=' is a malformed stanza, not a new address")
    func vaultKeyInjection() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        // The stanza's ADDR is the victim's VAULT_ADDR, so the address check passes; the key name
        // carries the attacker's address.
        let trusted = "http://127.0.0.1:9"
        let file = try Self.forge(dir, "forged.cof", fileKey: fileKey,
                                  stanzas: [Self.vault(address: trusted, key: "k?ADDR=\(attacker.endpoint)&NAMESPACE=")])
        let messages = try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir, ["VAULT_ADDR": trusted]))
        #expect(messages[0].contains("KEY must be a name"), "\(messages[0])")
    }

    @Test("vault-transit: other fields (mount, namespace) cannot carry a query, a fragment or a percent sign")
    func vaultFieldInjection() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        let trusted = "http://127.0.0.1:9"
        for (index, stanza) in [Self.vault(address: trusted, mount: "transit?x=1"),
                                Self.vault(address: trusted, mount: "transit#"),
                                Self.vault(address: trusted, mount: "..%2F..%2Fsys"),
                                Self.vault(address: trusted, namespace: "ns&ADDR=\(attacker.endpoint)"),
                                Self.vault(address: "\(trusted)/#@127.0.0.1:\(attacker.port)")].enumerated() {
            let file = try Self.forge(dir, "forged\(index).cof", fileKey: fileKey, stanzas: [stanza])
            try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir, ["VAULT_ADDR": trusted]))
        }
    }

    @Test("vault-transit: an ADDR that is not VAULT_ADDR gets no token (VAULT_ADDR unset, or another server)")
    func vaultOtherAddress() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        let file = try Self.forge(dir, "forged.cof", fileKey: fileKey, stanzas: [Self.vault(address: attacker.endpoint)])
        try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir))
        // The same host and port over https, or with a path, is another address.
        try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir, ["VAULT_ADDR": "https://127.0.0.1:\(attacker.port)"]))
        try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir, ["VAULT_ADDR": "\(attacker.endpoint)/proxy"]))
    }

    @Test("aws-kms: an ENDPOINT the user did not give is never called with the ambient credentials")
    func awsEndpoint() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        let file = try Self.forge(dir, "forged.cof", fileKey: fileKey, stanzas: [Self.aws(endpoint: attacker.endpoint)])
        let messages = try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir))
        #expect(messages[0].contains("not tried") && messages[0].contains("AWS_ENDPOINT_URL_KMS"), "\(messages[0])")
        // http where the user gave https (same host and port) is another endpoint.
        try Self.runAll(dir, file, attacker: attacker,
                        environment: Self.environment(dir, ["AWS_ENDPOINT_URL": "https://127.0.0.1:\(attacker.port)"]))
        // The endpoint the user gave for KMS wins over a general one; the stanza's must equal one of them.
        let other = try Self.forge(dir, "forged-https.cof", fileKey: fileKey, stanzas: [Self.aws(endpoint: "https://127.0.0.1:\(attacker.port)")])
        try Self.runAll(dir, other, attacker: attacker, environment: Self.environment(dir, ["AWS_ENDPOINT_URL_KMS": attacker.endpoint]))
    }

    @Test("aws-kms: a REGION or KEY_ARN carrying a query or a fragment is a malformed stanza")
    func awsFieldInjection() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        let stanzas = [
            Self.aws(region: "us-east-1&AWS_ENDPOINT=\(attacker.endpoint)"),
            Self.aws(arn: Self.arn + "?REGION=us-east-1&AWS_ENDPOINT=\(attacker.endpoint)/#"),
            Self.aws(region: "127.0.0.1:\(attacker.port)#", arn: "arn:aws:kms:127.0.0.1:\(attacker.port)#:123456789012:key/x"),
            Self.aws(region: "US-EAST-1"),
            Self.aws(endpoint: "\(attacker.endpoint)?x=1"),
        ]
        for (index, stanza) in stanzas.enumerated() {
            let file = try Self.forge(dir, "forged\(index).cof", fileKey: fileKey, stanzas: [stanza])
            try Self.runAll(dir, file, attacker: attacker, environment: Self.environment(dir))
        }
    }

    @Test("redirects are not followed: a server the user gave that redirects to another origin sends nothing there")
    func redirects() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        let redirector = try LoggingListener { _, request in .redirect(to: "\(attacker.endpoint)\(request.path)") }
        defer { redirector.stop() }
        // Vault: the stanza's ADDR is VAULT_ADDR, a legitimate-looking server that redirects.
        let vaultFile = try Self.forge(dir, "vault.cof", fileKey: fileKey, stanzas: [Self.vault(address: redirector.endpoint)])
        try Self.runAll(dir, vaultFile, attacker: attacker, environment: Self.environment(dir, ["VAULT_ADDR": redirector.endpoint]))
        #expect(!redirector.requests.isEmpty, "the user's server was not even asked")
        let viaURI = try coffer(["decrypt", "--kms", "vault:///k?ADDR=\(redirector.endpoint)", vaultFile], environment: Self.environment(dir))
        #expect(viaURI.status == Exit.key && viaURI.stderr.contains("redirect"), "\(viaURI.stderr)")
        // AWS: the endpoint is the user's AWS_ENDPOINT_URL.
        let awsFile = try Self.forge(dir, "aws.cof", fileKey: fileKey, stanzas: [Self.aws()])
        try Self.runAll(dir, awsFile, attacker: attacker, environment: Self.environment(dir, ["AWS_ENDPOINT_URL": redirector.endpoint]))
        for permanent in [301, 302, 303, 308] {
            let redirecting = try LoggingListener { _, request in .redirect(to: "\(attacker.endpoint)\(request.path)", status: permanent) }
            defer { redirecting.stop() }
            let result = try coffer(["decrypt", "--kms", "aws:///\(Self.arn)?REGION=us-east-1&AWS_ENDPOINT=\(redirecting.endpoint)", awsFile],
                                    environment: Self.environment(dir))
            #expect(result.status == Exit.key, "\(permanent): \(result.stderr)")
            #expect(attacker.connections == 0, "HTTP \(permanent) was followed")
        }
    }

    @Test("a file the victim's own key opens is opened by it: hostile KMS stanzas before it are never called")
    func localKeyFirst() throws {
        let dir = Scratch()
        let fileKey = Self.randomKey()
        let attacker = try Self.attacker(fileKey: fileKey)
        defer { attacker.stop() }
        #expect(try coffer(["keygen", "--type", "x25519", "-o", dir.file("victim")]).status == 0)
        // Stanzas the user's keys could be tricked into: the listener is the trusted address here,
        // so only the order of the identities keeps it from being asked.
        let env = Self.environment(dir, ["VAULT_ADDR": attacker.endpoint, "AWS_ENDPOINT_URL": attacker.endpoint, "COFFER_KMS_STATS": "1"])
        let file = try Self.forge(dir, "signed.cof", fileKey: fileKey,
                                  stanzas: [Self.vault(address: attacker.endpoint), Self.aws(endpoint: attacker.endpoint)],
                                  publicKeyFile: dir.file("victim.pub"))
        for command in [["decrypt", "-i", dir.file("victim.key"), file], ["verify", "-i", dir.file("victim.key"), file]] {
            let result = try coffer(command, environment: env)
            #expect(result.status == 0, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("kms calls: 0"), "\(result.stderr)")
        }
        #expect(attacker.connections == 0)
    }

    @Test("the stanzas a real KMS wrote still open through the addresses the user gave (moto, bao)")
    func legitimateStillWorks() async throws {
        let moto = try TestServer.moto()
        let bao = try TestServer.openBao()
        defer { moto.stop(); bao.stop() }
        _ = try await Moto.createKey(moto, alias: "real")
        try await Bao.createKey(bao, "real")
        let dir = Scratch()
        let env = Self.environment(dir, ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
                                         "VAULT_TOKEN": "root"])
        let input = try dir.write(Array("real rows\n".utf8), "t")
        let aws = "aws:///alias/real?REGION=us-east-1&AWS_ENDPOINT=\(moto.endpoint)"
        #expect(try coffer(["encrypt", "--kms", aws, "-o", dir.file("aws.cof"), input], environment: env).status == 0)
        #expect(try coffer(["encrypt", "--kms", "vault:///real?ADDR=\(bao.endpoint)", "-o", dir.file("vault.cof"), input], environment: env).status == 0)
        // Without --kms: the stanza's ENDPOINT is moto's, which the user gives as AWS_ENDPOINT_URL_KMS.
        let refused = try coffer(["decrypt", dir.file("aws.cof")], environment: env)
        #expect(refused.status == Exit.key && refused.stderr.contains("not tried"), "\(refused.stderr)")
        let viaEnvironment = try coffer(["decrypt", dir.file("aws.cof")], environment: env.merging(["AWS_ENDPOINT_URL_KMS": moto.endpoint + "/"]) { $1 })
        #expect(viaEnvironment.status == 0 && viaEnvironment.stdoutText == "real rows\n", "\(viaEnvironment.stderr)")
        let viaURI = try coffer(["decrypt", "--kms", aws, dir.file("aws.cof")], environment: env)
        #expect(viaURI.status == 0 && viaURI.stdoutText == "real rows\n", "\(viaURI.stderr)")
        let vault = try coffer(["decrypt", dir.file("vault.cof")], environment: env.merging(["VAULT_ADDR": bao.endpoint]) { $1 })
        #expect(vault.status == 0 && vault.stdoutText == "real rows\n", "\(vault.stderr)")
    }
}
