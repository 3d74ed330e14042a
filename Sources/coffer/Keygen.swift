import ArgumentParser
import CofferFiles
import CofferFormat
import CofferKeys
import Crypto
import _CryptoExtras
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a key.",
        discussion: """
        --symmetric writes a random 256-bit key in Coffer's text form (# comment lines, then COFFER-SYMMETRIC-KEY-V1:<64 hex digits>) to -o FILE or standard output.

        --type writes a key pair: NAME.pub (the public key: share it, encrypt with -r NAME.pub) and NAME.key (the private key, mode 0600: decrypt with -i NAME.key).
          x25519    age's X25519 keys (age1… / AGE-SECRET-KEY-1…): interchangeable with age-keygen's
          pq        ML-KEM-768 + X25519 hybrid, post-quantum (age1pq1… / AGE-SECRET-KEY-PQ-1…)
          rsa-3072  RSA-OAEP, PEM (SubjectPublicKeyInfo / PKCS#8), like 'openssl genpkey'
          rsa-4096
          ed25519   a signing key pair, PEM (like 'openssl genpkey -algorithm ed25519'): sign with 'encrypt --sign NAME.key', check with 'decrypt|verify --signed-by NAME.pub'
          ml-dsa-65 a post-quantum signing key pair (FIPS 204), PEM (RFC 9881); signatures 3,309 bytes

        --protect encrypts NAME.key with a passphrase (scrypt), asked on the terminal or taken from --identity-passphrase-file / COFFER_IDENTITY_PASSPHRASE; every command that reads the key asks for it the same way.

        No file is ever overwritten unless --force. The key id, which encrypted files name in their header, is printed on standard error.

        --show-public FILE prints the public key of a private key file (age, post-quantum, PEM RSA, OpenSSH, or a signing key), the form '-r' and '--signed-by' take, and its key id on standard error.

        Examples:
          coffer keygen --type x25519 -o backup-host        # backup-host.pub, backup-host.key
          coffer keygen --type pq --protect -o recovery     # keep recovery.key offline
        """)

    enum KeyType: String, ExpressibleByArgument, CaseIterable {
        case x25519, pq, rsa3072 = "rsa-3072", rsa4096 = "rsa-4096", ed25519, mlDSA65 = "ml-dsa-65"
    }

    @Flag(help: "A symmetric key.")
    var symmetric = false

    @Option(help: ArgumentHelp("A key pair: x25519, pq, rsa-3072 or rsa-4096 (encryption), ed25519 or ml-dsa-65 (signing).", valueName: "type"))
    var type: KeyType?

    @Option(name: .shortAndLong, help: ArgumentHelp("Key file to write (--symmetric: standard output when omitted); with --type, the name NAME of NAME.pub and NAME.key.",
                                                    valueName: "file"))
    var output: String?

    @Flag(help: "With --type: encrypt the private key file with a passphrase.")
    var protect = false

    @Option(help: ArgumentHelp("With --protect: the scrypt work factor, log2(N) (default \(Passphrase.defaultWorkFactor)).", valueName: "n"))
    var workFactor: Int = Passphrase.defaultWorkFactor

    @Option(help: ArgumentHelp("With --protect: read the new passphrase from the first line of this file.", valueName: "file"))
    var identityPassphraseFile: String?

    @Flag(help: "Accept a passphrase file that group or others can read.")
    var allowInsecureKeyFile = false

    @Flag(help: "Replace existing key files. The old key is gone for good: files made with it no longer open with this file.")
    var force = false

    @Option(help: ArgumentHelp("Print the public key of this private key file (opened with its passphrase when protected) and exit.", valueName: "file"))
    var showPublic: String?

    func validate() throws {
        if showPublic != nil {
            guard !symmetric, type == nil, !protect, output == nil else {
                throw ValidationError("--show-public reads a key: it takes no --symmetric, --type, --protect or -o")
            }
            return
        }
        guard symmetric != (type != nil) else { throw ValidationError("choose one key type: --symmetric or --type \(KeyType.allCases.map(\.rawValue).joined(separator: "|"))") }
        if type != nil {
            guard let output, output != "-" else { throw ValidationError("--type writes two files: give their name with -o NAME") }
        } else if protect {
            throw ValidationError("--protect applies to --type key pairs")
        }
    }

    func run() throws {
        try Runtime.reporting {
            if let showPublic {
                try printPublicKey(of: showPublic)
                return
            }
            if let type {
                try writePair(type, name: output!)
                return
            }
            let key = SymmetricKeyFile.generate()
            let text = key.textEncoding()
            if let output, output != "-" {
                try write(text, to: output, mode: 0o600)
            } else {
                print(text, terminator: "")
            }
            Runtime.warn("key id: \(key.keyID)")
        }
    }

    func write(_ text: String, to path: String, mode: mode_t) throws {
        try write(Array(text.utf8), to: path, mode: mode)
    }

    func write(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        try AtomicOutputFile(path: path, mode: mode, overwrite: force).complete { sink in
            try bytes.withUnsafeBytes { try sink.write($0) }
        }
    }

    func writePair(_ type: KeyType, name: String) throws {
        let publicPath = name + ".pub", privatePath = name + ".key"
        if !force {
            for path in [publicPath, privatePath] where FileManager.default.fileExists(atPath: path) {
                throw KeyError.refused("\(path) exists; pass --force to replace it (the old key is then gone for good)")
            }
        }
        let stamp = ISO8601DateFormatter().string(from: Date())
        let publicText: String, privateText: String, keyID: String
        switch type {
        case .x25519:
            let identity = X25519Identity(privateKey: Curve25519.KeyAgreement.PrivateKey())
            keyID = identity.recipient.keyID
            publicText = identity.recipient.encoded + "\n"
            privateText = """
            # created: \(stamp)
            # public key: \(identity.recipient.encoded)
            # key id: \(keyID)
            \(AgeKeyEncoding.identity(privateKey: identity.privateKey))

            """
        case .pq:
            let identity = HybridIdentity.generate()
            keyID = identity.recipient.keyID
            publicText = identity.recipient.encoded + "\n"
            privateText = """
            # created: \(stamp)
            # post-quantum (ML-KEM-768 + X25519) key; the public key is in \((publicPath as NSString).lastPathComponent)
            # key id: \(keyID)
            \(identity.encoded)

            """
        case .rsa3072, .rsa4096:
            let key = try _RSA.Encryption.PrivateKey(keySize: type == .rsa3072 ? .bits3072 : .bits4096)
            let identity = try RSAIdentity(privateKey: key)
            keyID = identity.recipient.keyID
            publicText = key.publicKey.pemRepresentation + "\n"
            // Pure PEM, no comment lines, so that openssl and other tools read it too.
            privateText = key.pkcs8PEMRepresentation + "\n"
        case .ed25519:
            let signer = Ed25519Signer()
            keyID = signer.verifier.keyIDText
            publicText = signer.verifier.pem
            privateText = signer.pem
        case .mlDSA65:
            let signer = try MLDSA65Signer.generate()
            keyID = Hex.encode(signer.keyID)
            publicText = signer.verifier.pem
            privateText = signer.pem
        }
        var privateBytes = Array(privateText.utf8)
        if protect {
            let ring = KeyRing.forCommandLine()
            let secret = try KeyRing.identityPassphrase(for: privatePath, file: identityPassphraseFile, allowInsecure: allowInsecureKeyFile,
                                                        environment: ring.environment, prompt: ring.prompt, confirm: true)
            let passphrase = try Passphrase(secret, workFactor: workFactor)
            privateBytes = try ProtectedKeyFile.protect(privateText, passphrase: passphrase)
        }
        try write(privateBytes, to: privatePath, mode: 0o600)
        try write(publicText, to: publicPath, mode: 0o644)
        Runtime.warn("wrote \(publicPath) (public) and \(privatePath) (private\(protect ? ", passphrase-protected" : "")); key id: \(keyID)")
    }

    /// `--show-public FILE`: the public key of each key in a private key file, one a line (PEM
    /// blocks whole), and the key ids on standard error.
    func printPublicKey(of path: String) throws {
        var ring = KeyRing.forCommandLine()
        ring.identityPassphraseFile = identityPassphraseFile
        ring.allowInsecureKeyFiles = allowInsecureKeyFile
        let text = try ring.privateKeyText(path, what: "private key file")
        if text.contains("-----BEGIN PRIVATE KEY-----"), let signer = try? SigningKeyText.signer(text, source: path) {
            print((signer.publicVerifier as? any PEMEncodedKey)?.pem ?? "", terminator: "")
            Runtime.warn("key id: \(Hex.encode(signer.keyID))")
            return
        }
        for identity in try IdentityText.parse(text, source: path) {
            switch identity {
            case let key as X25519Identity:
                print(key.recipient.encoded)
                Runtime.warn("key id: \(key.recipient.keyID)")
            case let key as HybridIdentity:
                print(key.recipient.encoded)
                Runtime.warn("key id: \(key.recipient.keyID)")
            case let key as RSAIdentity:
                print(key.privateKey.publicKey.pemRepresentation)
                Runtime.warn("key id: \(key.recipient.keyID)")
            case let key as SSHIdentity:
                print("\(key.type) \(Data(key.publicWire).base64EncodedString())")
            default:
                throw KeyError.invalid("\(path) holds a symmetric key, which has no public key: share it only with those who may decrypt")
            }
        }
    }
}
