@_spi(TestVectors) import CofferFormat
@testable import CofferKeys
import CofferCloud
import Foundation
import Testing

/// The key ring as a library user sees it: an injected environment and prompt, no command line.
@Suite struct KeyRings {
    static let key = try! SymmetricKeyFile(keyBytes: Array(0..<32))

    /// A prompt that answers from a list and records the prompts it was shown.
    final class ScriptedPrompt: @unchecked Sendable {
        var answers: [String]
        var shown: [String] = []
        init(_ answers: [String]) { self.answers = answers }
        func ask(_ text: String) throws -> [UInt8] {
            shown.append(text)
            return Array(answers.removeFirst().utf8)
        }
    }

    static func temporaryFile(_ text: String, mode: Int) throws -> String {
        let path = NSTemporaryDirectory() + "keyring-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test("COFFER_KEY from an injected environment is a recipient and an identity; the real environment is not read")
    func environmentKey() throws {
        let ring = KeyRing(environment: [KeyRing.environmentKey: Self.key.textEncoding()])
        let recipients = try ring.recipients(workFactor: 10)
        #expect(recipients.count == 1 && (recipients[0] as? SymmetricKeyFile) == Self.key)
        let identities = try ring.identities(for: nil)
        #expect(identities.count == 1 && identities[0].label == Self.key.label)
        #expect(KeyRing(environment: [:]).anyKeyGiven == false)
    }

    @Test("no key at all is a key error saying what is missing, without naming a flag")
    func noKey() throws {
        let ring = KeyRing(environment: [:])
        #expect(throws: KeyError.noKeyGiven(.anyKey)) { _ = try ring.recipients(workFactor: 10) }
        // Decrypting a directory with no local key: its KMS stanzas (found later) are the only hope.
        let identities = try ring.identities(for: nil)
        #expect(identities.count == 1 && identities[0] is KMSIdentity)
        #expect(!"\(KeyError.noKeyGiven(.anyKey))".contains("--"))
        #expect(KeyError.noKeyGiven(.anyKey).category == .key)
    }

    @Test("a header with no key given names what opens it")
    func noKeyForHeader() throws {
        let fileKey = FileKey.random()
        let header = try Header.sealed(parameters: HeaderParameters(), stanzas: try Self.key.wrap(fileKey: fileKey.bytes),
                                       fileKey: fileKey)
        #expect(throws: AccessError.noMatchingKey(needed: ["key file \(Self.key.keyID)"], tried: [])) {
            _ = try KeyRing(environment: [:]).identities(for: header)
        }
    }

    @Test("the passphrase comes from the injected prompt, asked twice when encrypting; a mismatch or no prompt is refused")
    func prompts() throws {
        var ring = KeyRing(environment: [:])
        ring.usePassphrase = true
        let prompt = ScriptedPrompt(["pw", "pw"])
        ring.prompt = prompt.ask
        let recipients = try ring.recipients(workFactor: 10)
        #expect(prompt.shown == ["Passphrase: ", "Passphrase (again): "])
        let fileKey = FileKey.random().bytes
        let stanzas = try recipients[0].wrap(fileKey: fileKey)
        #expect(try Passphrase(Array("pw".utf8), workFactor: 10).unwrap(stanzas: stanzas) == fileKey)

        ring.prompt = ScriptedPrompt(["pw", "other"]).ask
        #expect(throws: KeyError.invalid("the two passphrases differ")) { _ = try ring.recipients(workFactor: 10) }
        ring.prompt = nil
        #expect(throws: KeyError.noKeyGiven(.passphrase)) { _ = try ring.recipients(workFactor: 10) }
        // COFFER_PASSPHRASE in the injected environment needs no prompt.
        ring.environment = [KeyRing.environmentPassphrase: "pw"]
        #expect(try ring.identities(for: nil).count == 1)
    }

    @Test("the recovery policy: the recovery key comes last and must be kept; on without a recovery key, it refuses")
    func recoveryPolicy() throws {
        let recovery = X25519Identity(privateKey: .init()).recipient
        let other = X25519Identity(privateKey: .init()).recipient
        var ring = KeyRing(environment: [:])
        ring.recipients = [other.encoded]
        ring.recovery = KeyRing.RecoveryPolicy(recipient: recovery.encoded, required: true)
        let keys = try ring.publicKeys()
        #expect(keys.count == 2 && (keys[1] as? X25519Recipient)?.keyID == recovery.keyID)
        #expect(try ring.recoveryPolicy().mustKeep == recovery.keyID)
        ring.recovery.required = false
        #expect(try ring.recoveryPolicy().mustKeep == nil)

        var missing = KeyRing(environment: [KeyRing.environmentRequireRecovery: "1"])
        missing.recipients = [other.encoded]
        #expect(throws: KeyError.noKeyGiven(.recoveryKey)) { _ = try missing.publicKeys() }
        missing.environment[KeyRing.environmentRecovery] = recovery.encoded
        #expect(try missing.publicKeys().count == 2)
        missing.environment[KeyRing.environmentRecovery] = Self.key.textEncoding()
        #expect(throws: (any Error).self) { _ = try missing.publicKeys() }
    }

    @Test("a key file readable by others is refused with its mode; allowed when asked")
    func insecureKeyFile() throws {
        let path = try Self.temporaryFile(Self.key.textEncoding(), mode: 0o644)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var ring = KeyRing(environment: [:])
        ring.keyFiles = [path]
        #expect(throws: KeyError.insecureKeyFile(path: path, what: "key file", mode: 0o644)) { _ = try ring.symmetricKeys() }
        #expect("\(KeyError.insecureKeyFile(path: path, what: "key file", mode: 0o644))".contains("chmod 600"))
        ring.allowInsecureKeyFiles = true
        #expect(try ring.symmetricKeys() == [Self.key])
    }

    @Test("age identities are the X25519, post-quantum and OpenSSH keys; a key file cannot open an age file")
    func ageKeys() throws {
        let x25519 = X25519Identity(privateKey: .init())
        let among = KeyRing.ageIdentities(among: [Self.key, x25519, HybridIdentity.generate()])
        #expect(among.count == 2 && among[0] is X25519Identity && among[1] is HybridIdentity)
        var ring = KeyRing(environment: [:])
        ring.keyFiles = ["/nonexistent"]
        #expect(throws: KeyError.self) { _ = try ring.ageIdentities() }
        #expect(throws: KeyError.noKeyGiven(.ageKey)) { _ = try KeyRing(environment: [:]).ageIdentities() }
    }
}

/// One key abstraction for Coffer and age stanzas.
@Suite struct OneKeyAbstraction {
    @Test("one X25519 identity opens Coffer's named stanza (32-byte key) and age's one-argument stanza (16-byte key)")
    func x25519BothFormats() throws {
        let identity = X25519Identity(privateKey: .init())
        let coffer = try identity.recipient.wrap(fileKey: FileKey.random().bytes)
        #expect(coffer[0].arguments.count == 2 && coffer[0].body.count == 48)
        #expect(try identity.unwrap(stanzas: coffer)?.count == 32)
        let ageKey = Array(repeating: UInt8(7), count: 16)
        let age = try identity.recipient.wrap(fileKey: ageKey)
        #expect(age[0].arguments.count == 1 && age[0].body.count == 32)
        #expect(try identity.unwrap(stanzas: age) == ageKey)
        #expect(try X25519Identity(privateKey: .init()).unwrap(stanzas: age) == nil)
        var cut = age[0]
        cut.body.removeLast()
        #expect(throws: CofferError.self) { _ = try identity.unwrap(stanzas: [cut]) }
    }

    @Test("the post-quantum identity opens both formats too")
    func hybridBothFormats() throws {
        let identity = HybridIdentity.generate()
        let ageKey = Array(repeating: UInt8(9), count: 16)
        let age = try identity.recipient.wrap(fileKey: ageKey)
        #expect(age[0].arguments.count == 1)
        #expect(try identity.unwrap(stanzas: age) == ageKey)
        let cofferKey = FileKey.random().bytes
        #expect(try identity.unwrap(stanzas: try identity.recipient.wrap(fileKey: cofferKey)) == cofferKey)
    }

    @Test("key types age does not have refuse age's 16-byte file key; age's scrypt refuses Coffer's 32 bytes")
    func formatOnlyTypes() throws {
        let ageKey = [UInt8](repeating: 1, count: 16)
        #expect(throws: KeyError.self) { _ = try SymmetricKeyFile.generate().wrap(fileKey: ageKey) }
        #expect(throws: KeyError.self) { _ = try Passphrase(Array("pw".utf8), workFactor: 10).wrap(fileKey: ageKey) }
        #expect(throws: KeyError.self) { _ = try AgeScrypt(passphrase: Array("pw".utf8), workFactor: 10).wrap(fileKey: FileKey.random().bytes) }
        let kms = try KMSRecipient(parsing: "vault:///k?ADDR=http://127.0.0.1:1", environment: [:])
        #expect(throws: KeyError.self) { _ = try kms.wrap(fileKey: ageKey) }
    }

    @Test("every stanza type is named from the one compile-time table; an unknown type gets a generic name")
    func descriptions() throws {
        let key = SymmetricKeyFile.generate()
        let fileKey = FileKey.random().bytes
        #expect(KeyTypes.describe(try key.wrap(fileKey: fileKey)[0]) == "key file \(key.keyID)")
        #expect(KeyTypes.describe(try Passphrase(Array("p".utf8), workFactor: 10).wrap(fileKey: fileKey)[0]) == "passphrase (scrypt 2^10)")
        let x = X25519Identity(privateKey: .init()).recipient
        #expect(KeyTypes.describe(try x.wrap(fileKey: fileKey)[0]) == "X25519 key \(x.keyID)")
        #expect(KeyTypes.describe(try x.wrap(fileKey: Array(fileKey.prefix(16)))[0]) == "an X25519 (age) key")
        #expect(KeyTypes.describe(Stanza(type: "ssh-ed25519", arguments: ["tag0", "share"], body: [])) == "ssh-ed25519 key tag0")
        #expect(KeyTypes.describe(Stanza(type: "future", arguments: [], body: [])) == "a 'future' key")
        #expect(KeyTypes.keyID(of: try key.wrap(fileKey: fileKey)[0]) == key.keyID)
        #expect(KeyTypes.keyID(of: key) == key.keyID)
        #expect(KeyTypes.all.count == Set(KeyTypes.all.flatMap { $0.stanzaTypes }).count - 1)  // SSH has two stanza types
    }

    @Test("a key-service failure keeps its cause")
    func serviceCause() {
        let cause = KeyServiceError(.accessDenied, "Decrypt with key k: AccessDeniedException", httpStatus: 400, serviceCode: "AccessDeniedException")
        let error = KeyError.service(context: "cannot wrap the file key with aws:///k", cause: cause)
        guard case .service(_, let kept) = error else { Issue.record("not a service error"); return }
        #expect(kept.httpStatus == 400 && kept.serviceCode == "AccessDeniedException" && kept.kind == .accessDenied)
        #expect("\(error)".contains("access denied"))
        #expect(error.category == .key)
    }
}
