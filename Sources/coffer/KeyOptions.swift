import ArgumentParser
import CofferFormat
import CofferKeys
import Foundation

/// Where keys come from. No option takes a secret as its value.
struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("key-file"),
            help: ArgumentHelp("A symmetric key file (from 'coffer keygen --symmetric', or 32 raw bytes). Repeatable.",
                               valueName: "file"))
    var keyFiles: [String] = []

    @Option(name: .customLong("key-fd"),
            help: ArgumentHelp("Read a key file's content from this open file descriptor. Repeatable.", valueName: "n"))
    var keyDescriptors: [Int32] = []

    @Flag(name: [.customShort("p"), .long],
          help: "Use a passphrase, from --passphrase-file, COFFER_PASSPHRASE, or a prompt on the terminal.")
    var passphrase = false

    @Option(help: ArgumentHelp("Read the passphrase from the first line of this file (implies --passphrase).",
                               valueName: "file"))
    var passphraseFile: String?

    @Flag(help: "Accept key and passphrase files that group or others can read.")
    var allowInsecureKeyFile = false

    static let environmentKey = "COFFER_KEY"
    static let environmentPassphrase = "COFFER_PASSPHRASE"

    static let howToGiveAKey = """
    no key given. Give at least one of:
      --key-file FILE        a key file (make one with 'coffer keygen --symmetric -o FILE')
      --key-fd N             a key file's content on descriptor N
      COFFER_KEY             environment variable holding a key file's text form
      --passphrase           a passphrase, asked on the terminal (or COFFER_PASSPHRASE, --passphrase-file FILE)
    """

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    var wantsPassphrase: Bool {
        passphrase || passphraseFile != nil || environment[Self.environmentPassphrase] != nil
    }

    /// Key files from every source, in the order given.
    func symmetricKeys() throws -> [SymmetricKeyFile] {
        var keys = try keyFiles.map { try KeySources.keyFile(path: $0, allowInsecure: allowInsecureKeyFile) }
        keys += try keyDescriptors.map { try KeySources.keyFile(fd: $0) }
        if let text = environment[Self.environmentKey] { keys.append(try KeySources.keyFromEnvironment(text)) }
        return keys
    }

    /// The passphrase from the file, the environment or the terminal (asked twice when `confirm`).
    func readPassphrase(confirm: Bool) throws -> [UInt8] {
        if let path = passphraseFile {
            let content = try KeySources.readSecretFile(path, what: "passphrase file", allowInsecure: allowInsecureKeyFile)
            return try KeySources.passphrase(fromFileContent: content, source: path)
        }
        if let value = environment[Self.environmentPassphrase] {
            guard !value.isEmpty else { throw CofferError.invalidKey("\(Self.environmentPassphrase) is empty") }
            return Array(value.utf8)
        }
        let first = try TerminalPrompt.readPassphrase(prompt: "Passphrase: ")
        guard !first.isEmpty else { throw CofferError.invalidKey("the passphrase is empty") }
        if confirm {
            let second = try TerminalPrompt.readPassphrase(prompt: "Passphrase (again): ")
            guard first == second else { throw CofferError.invalidKey("the two passphrases differ") }
        }
        return first
    }

    /// Everything to encrypt to; fails with the list of ways to give a key when there is none.
    func recipients(workFactor: Int) throws -> [Recipient] {
        var recipients: [Recipient] = try symmetricKeys()
        if wantsPassphrase {
            recipients.append(try Passphrase(try readPassphrase(confirm: true), workFactor: workFactor))
        }
        guard !recipients.isEmpty else { throw CofferError.noKeyGiven(Self.howToGiveAKey) }
        return recipients
    }

    /// Everything to decrypt with. With no key given and a passphrase stanza in `header`, asks on
    /// the terminal when there is one.
    func identities(for header: Header?) throws -> [Identity] {
        var identities: [Identity] = try symmetricKeys()
        let headerWantsPassphrase = header?.stanzas.contains { $0.type == Passphrase.stanzaType } ?? false
        if wantsPassphrase || (identities.isEmpty && headerWantsPassphrase && TerminalPrompt.isAvailable) {
            identities.append(try Passphrase(try readPassphrase(confirm: false), workFactor: Passphrase.maxWorkFactor))
        }
        guard !identities.isEmpty else {
            if let header {
                let needed = header.stanzas.map(StanzaDescriptions.describe)
                throw CofferError.noMatchingKey(needed: needed, tried: [])
            }
            throw CofferError.noKeyGiven(Self.howToGiveAKey)
        }
        return identities
    }
}

extension KeyOptions {
    static let environmentXbcryptKey = "XBCRYPT_ENCRYPTION_KEY"

    /// The key of an XtraBackup .xbcrypt file, read exactly as xbcrypt reads it: a key file's raw
    /// bytes (a trailing newline included), a descriptor's, or XBCRYPT_ENCRYPTION_KEY.
    func xbcryptKey() throws -> (bytes: [UInt8], source: String) {
        if let path = keyFiles.first {
            return (try KeySources.readSecretFile(path, what: "key file", allowInsecure: allowInsecureKeyFile), path)
        }
        if let fd = keyDescriptors.first {
            return (try KeySources.readAll(fd: fd, name: "descriptor \(fd)"), "descriptor \(fd)")
        }
        if let value = environment[Self.environmentXbcryptKey] {
            return (Array(value.utf8), Self.environmentXbcryptKey)
        }
        throw CofferError.noKeyGiven(
            "an XtraBackup .xbcrypt file needs its key: --key-file FILE (its raw bytes, as xbcrypt reads them), --key-fd N, or \(Self.environmentXbcryptKey)")
    }
}

/// Options of the parallel engine.
struct EngineOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Threads for encryption and decryption (default: the number of cores).", valueName: "n"))
    var threads: Int = StreamEngine.defaultThreads

    @Flag(name: .shortAndLong, help: "No progress line.")
    var quiet = false

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1...256") }
    }
}

/// Parses sizes such as 65536, 64K, 64KiB, 1M, 1MiB (powers of 1024).
func parseSize(_ text: String) -> Int? {
    let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                  ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("k", 1 << 10), ("", 1)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        let digits = text.dropLast(suffix.count)
        guard !digits.isEmpty, digits.allSatisfy(\.isNumber), let value = Int(digits),
              value <= Int.max / factor else { continue }
        return value * factor
    }
    return nil
}
