import CofferCloud
import CofferFormat
import CofferInterop
import CofferKeys
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The fuzz targets: each feeds one input to the parsing functions the `coffer` CLI calls on
/// untrusted bytes. An input may be refused with any error; what must never happen is a trap
/// (overflow, out-of-range index, force unwrap), a sanitizer report, or a broken invariant checked
/// here with `fuzzCheck` (which traps, so that libFuzzer keeps the input).
public enum FuzzTargets {
    public static let names = [
        "header", "slots", "cofferfile", "signature", "age", "xbcrypt", "keyfile", "keyuri",
    ]

    /// Runs target `name` on one input. Unknown names trap (a driver built for a wrong name).
    public static func run(_ name: String, _ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        switch name {
        case "header": header(bytes)
        case "slots": slots(bytes)
        case "cofferfile": cofferFile(bytes)
        case "signature": signature(bytes)
        case "age": age(bytes)
        case "xbcrypt": xbcrypt(bytes)
        case "keyfile": keyFile(bytes)
        case "keyuri": keyURI(bytes)
        default: fatalError("no fuzz target named \(name); targets: \(names.joined(separator: " "))")
        }
    }

    // MARK: Coffer headers

    /// A version-1 header as `HeaderReading.read` collects it, then `Header.parse`; what parses
    /// must re-encode to the same bytes (the parser's promise: only the canonical form is accepted).
    /// An input that starts with "-> " is stanza lines instead (see ``stanzas(_:)``).
    static func header(_ bytes: [UInt8]) {
        if bytes.starts(with: Array("-> ".utf8)) { return stanzas(bytes) }
        if let header = try? Header.parse(bytes) {
            fuzzCheck(header.encoded() == bytes, "Header.parse accepted a header that does not re-encode to its bytes")
        }
        _ = try? HeaderReading.read(from: Input.source(bytes))
    }

    /// Stanza lines as both header readers (Coffer and age) hand them to `StanzaGrammar.parse`:
    /// checked characters, split at LF; every stanza parsed re-encodes to the lines it consumed.
    static func stanzas(_ bytes: [UInt8]) {
        guard (try? Header.checkCharacters(bytes)) != nil else { return }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        var index = 0
        while index < lines.count, lines[index].hasPrefix("-> ") {
            guard let (stanza, after) = try? StanzaGrammar.parse(lines: lines, at: index) else { return }
            fuzzCheck(after > index && after <= lines.count, "StanzaGrammar.parse returned an index outside the lines")
            let consumed = Array((lines[index..<after].joined(separator: "\n") + "\n").utf8)
            fuzzCheck(stanza.encoded() == consumed, "StanzaGrammar.parse accepted a stanza that does not re-encode to its lines")
            index = after
        }
    }

    /// A version-2 file's start (`coffer/v2 SIZE`, two slots, nonce) through `HeaderReading.read`,
    /// and the whole input as one slot through `Header.parseSlot`, which must re-encode exactly.
    static func slots(_ bytes: [UInt8]) {
        if let reading = try? HeaderReading.read(from: Input.source(bytes)) {
            fuzzCheck(reading.payloadStart <= UInt64(bytes.count), "HeaderReading.read claims more bytes than the input has")
            if case .slots = reading.header.layout {
                for index in 0..<2 {
                    fuzzCheck(reading.slotOffset(index).map { $0 < reading.payloadStart } ?? false, "slot offset outside the header")
                }
            }
        }
        if !bytes.isEmpty, let header = try? Header.parseSlot(bytes, size: bytes.count) {
            fuzzCheck(header.encodedSlot() == bytes, "Header.parseSlot accepted a slot that does not re-encode to its bytes")
        }
    }

    /// A whole Coffer file as `coffer decrypt --key-file K --signed-by P` reads it: header, slots,
    /// stanzas unwrapped with the test vectors' key file, payload, signature trailer; then a range;
    /// and `coffer verify --signed-by P`, which checks the signature with no key to the file.
    static func cofferFile(_ bytes: [UInt8]) {
        func open() -> (ByteSource, OpenedFile)? {
            let source = Input.source(bytes)
            guard let reading = try? HeaderReading.read(from: source),
                  let opened = try? reading.open(with: Keys.cofferIdentities) else { return nil }
            return (source, opened)
        }
        // `coffer verify --signed-by`: the signature is checked without any key to the file.
        let unkeyed = Input.source(bytes)
        if let reading = try? HeaderReading.read(from: unkeyed) {
            _ = try? reading.verifySignature(in: unkeyed, verifiers: [Keys.verifier], engine: StreamEngine(threads: 1))
        }
        guard let (source, opened) = open() else { return }
        let sink = CountingSink()
        if let count = try? opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: 1)) {
            fuzzCheck(count == sink.count, "decrypt reported \(count) bytes but wrote \(sink.count)")
        }
        // The signed and the ranged reads start over from the header, as the CLI does.
        if let (source, opened) = open() {
            _ = try? opened.decrypt(from: source, to: DiscardingSink(), engine: StreamEngine(threads: 1),
                                    signedBy: [Keys.verifier])
        }
        if let (source, opened) = open() {
            let offset = UInt64(bytes.count % 5000), length = UInt64(bytes.count % 7000)
            let sink = CountingSink()
            if let count = try? opened.decryptRange(from: source, offset: offset, length: length, to: sink,
                                                    engine: StreamEngine(threads: 1),
                                                    signedBy: bytes.count % 2 == 0 ? [Keys.verifier] : []) {
                fuzzCheck(count == sink.count && count <= length, "decryptRange wrote \(sink.count) bytes, reported \(count), asked \(length)")
            }
        }
    }

    /// The signature trailer: the first byte picks the header's `signed` parameters, the rest is
    /// the trailer, parsed (it must re-encode exactly) and its signers checked against the test
    /// vectors' Ed25519 key. Verifying a trailer against a payload is in `cofferfile`.
    static func signature(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let algorithms = SignatureParameters.Algorithm.allCases, digests = SignatureParameters.PayloadDigest.allCases
        let parameters = SignatureParameters(algorithm: algorithms[Int(first) % algorithms.count],
                                             digest: digests[Int(first / 16) % digests.count])
        let rest = Array(bytes.dropFirst())
        guard let trailer = try? PayloadSignatureTrailer.parse(rest, parameters: parameters) else { return }
        fuzzCheck(trailer.encoded(parameters) == rest, "the signature trailer does not re-encode to its bytes")
        _ = try? trailer.checkSigners([Keys.verifier])
    }

    // MARK: age

    /// An age file as `coffer decrypt` reads one: binary or armored as `AgeFile.kind` tells (the
    /// armor reader first when armored), header, stanzas unwrapped with the age test vectors'
    /// X25519 and post-quantum identities and an ssh-ed25519 key, MAC, nonce, STREAM payload.
    static func age(_ bytes: [UInt8]) {
        let kind = AgeFile.kind(of: Array(bytes.prefix(AgeFile.sniffLength))) ?? .binary
        let input: AgeInput = kind == .armored ? AgeArmor.Reader(source: Input.source(bytes)) : Input.source(bytes)
        if let header = try? AgeHeader.read(from: input) {
            _ = try? header.checkScryptAlone()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while let n = try? buffer.withUnsafeMutableBytes({ try input.readFully(into: $0) }), n > 0 {}
        }
        let sink = CountingSink()
        if let count = try? AgeFile.decrypt(from: Input.source(bytes), kind: kind, identities: Keys.ageIdentities,
                                            to: sink, threads: 1) {
            fuzzCheck(count == sink.count, "AgeFile.decrypt reported \(count) bytes but wrote \(sink.count)")
        }
    }

    // MARK: XtraBackup

    /// An `.xbcrypt` file as `coffer migrate` reads it, with the test vectors' AES-256 key.
    static func xbcrypt(_ bytes: [UInt8]) {
        let sink = CountingSink()
        if let summary = try? Xbcrypt.decrypt(from: Input.source(bytes), to: sink, key: Keys.xbcrypt, threads: 1) {
            fuzzCheck(summary.plaintextBytes == sink.count, "xbcrypt summary says \(summary.plaintextBytes) bytes, wrote \(sink.count)")
        }
    }

    // MARK: Keys

    /// A key file's content through every reader the CLI has for one: --key-file, --identity,
    /// --recipients-file, --sign, --signed-by, --passphrase-file.
    static func keyFile(_ bytes: [UInt8]) {
        _ = try? SymmetricKeyFile.parse(bytes, source: "fuzz")
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? IdentityText.parse(text, source: "fuzz")
        _ = try? RecipientText.parseFile(text, source: "fuzz")
        _ = try? RecipientText.parse(text, source: "fuzz")
        _ = try? SigningKeyText.verifier(text, source: "fuzz")
        _ = try? SigningKeyText.signer(text, source: "fuzz")
        _ = try? KeySources.passphrase(fromFileContent: bytes, source: "fuzz")
        _ = ProtectedKeyFile.isProtected(bytes)
    }

    /// A `--kms` key URI: parsed, printed (redacted) and made into a recipient (no request is made).
    static func keyURI(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let uri = try? KMSKeyURI.parse(text) {
            _ = uri.description
            _ = uri.redacted
            _ = try? KMSKeyURI.parse(uri.description)
        }
        _ = try? KMSRecipient(parsing: text, environment: [:])
    }
}

/// Traps when an invariant does not hold (libFuzzer then keeps the input as a crash).
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("fuzz invariant broken: \(message())") }
}

/// Fixed keys of the test vectors, so that seeds made from them get past the key check.
enum Keys {
    /// Tests/CofferFormatTests/VectorTests.swift: key file bytes 0x01...0x20.
    static let cofferIdentities: [Identity] = [try! SymmetricKeyFile(keyBytes: Array(0x01...0x20))]
    /// The Ed25519 key of the signed Coffer vectors (seed 0x60...0x7F).
    static let verifier: SignatureVerifier = try! Ed25519Signer(seed: Array(0x60...0x7F)).verifier
    /// The identities of ../shared/vectors/age (X25519 and post-quantum) and an OpenSSH key
    /// (Fuzz/Seeds/keyfile), read as `coffer decrypt -i FILE` reads an identity file.
    static let ageIdentities: [Identity] = KeyRing.ageIdentities(among: try! IdentityText.parse("""
        AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0
        AGE-SECRET-KEY-143WN7DCXU4G8R5AXQSSYD9AEPYDNT3HXSLWSPK36CDU6E8M59SSSAGZ3KG
        AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG
        -----BEGIN OPENSSH PRIVATE KEY-----
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
        QyNTUxOQAAACCmJ70soYHj9I9XuIpC38X/gIkVFmVEOCytg+tEZkd7sgAAAIg5B5TTOQeU
        0wAAAAtzc2gtZWQyNTUxOQAAACCmJ70soYHj9I9XuIpC38X/gIkVFmVEOCytg+tEZkd7sg
        AAAEBs8wHBab7kyIa6gFhobP16lII+rR2hHUlKPb/vxurFkaYnvSyhgeP0j1e4ikLfxf+A
        iRUWZUQ4LK2D60RmR3uyAAAABGZ1enoB
        -----END OPENSSH PRIVATE KEY-----
        """, source: "fuzz identities"))
    /// ../shared/vectors/xbcrypt/MANIFEST.txt: the AES-256 key of the aes256_* vectors.
    static let xbcrypt = try! Xbcrypt.key(Array("xbcrypt-test-vectors-key-aes-256".utf8), source: "fuzz")
}

/// Counts what a reader writes.
final class CountingSink: ByteSink {
    var count: UInt64 = 0
    func write(_ bytes: UnsafeRawBufferPointer) throws { count += UInt64(bytes.count) }
}

/// The input as a regular file, as the CLI sees one: an unlinked temporary file rewritten for
/// each input (a `ByteSource` reads a descriptor; positioned reads need a regular file).
enum Input {
    static let fd: Int32 = {
        var template = Array("/tmp/coffer-fuzz-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        precondition(fd >= 0, "cannot create the fuzz input file")
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }()

    /// The input from its first byte.
    static func source(_ bytes: [UInt8]) -> ByteSource {
        precondition(ftruncate(fd, 0) == 0)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(done)) }
            precondition(n > 0, "cannot write the fuzz input file")
            done += n
        }
        precondition(lseek(fd, 0, SEEK_SET) == 0)
        return ByteSource(fd: fd, path: "fuzz input")
    }
}
