import ArgumentParser
import CofferFormat
import CofferKeys
import Foundation

/// `--sign`: the producer's signing key (encrypt, rewrap).
struct SignOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Sign with this private signing key (coffer keygen --type ed25519|ml-dsa-65 -o NAME: NAME.key; an Ed25519 PEM key from 'openssl genpkey -algorithm ed25519' works). Readers check it with --signed-by NAME.pub.",
                               valueName: "key"))
    var sign: String?

    @Option(help: ArgumentHelp("What the signature hashes: chunk-sha256 (default: every ciphertext byte, so even a holder of a decryption key cannot alter the file under the signature) or chunk-tags (the chunks' AEAD tags only: nearly free, but proves origin only against those who cannot decrypt).",
                               valueName: "kind"))
    var signatureDigest: String = SignatureParameters.PayloadDigest.chunkSHA256.rawValue

    func validate() throws {
        guard SignatureParameters.PayloadDigest(rawValue: signatureDigest) != nil else {
            throw ValidationError("--signature-digest must be chunk-sha256 or chunk-tags")
        }
    }

    var digest: SignatureParameters.PayloadDigest { SignatureParameters.PayloadDigest(rawValue: signatureDigest)! }

    /// The signing key, opened with its passphrase when protected (the same way as -i files).
    func signer(keys: KeyOptions) throws -> PayloadSigner? {
        guard let sign else { return nil }
        return try SigningKeyText.signer(try keys.privateKeyText(sign, what: "signing key"), source: sign)
    }
}

/// `--signed-by`: the signers a reader accepts (decrypt, verify).
struct SignedByOptions: ParsableArguments {
    @Option(name: .customLong("signed-by"),
            help: ArgumentHelp("Require a valid signature by this signing public key (NAME.pub, Ed25519 or ML-DSA-65); repeatable: any one listed signer is enough. Unsigned files, other signers and files altered after signing are refused.",
                               valueName: "pub"))
    var signedBy: [String] = []

    func verifiers() throws -> [SignatureVerifier] {
        try signedBy.map { path in
            try SigningKeyText.verifier(String(decoding: try KeySources.readAll(path: path), as: UTF8.self), source: path)
        }
    }

    /// Formats that cannot carry a Coffer signature (age, .xbcrypt) are refused when one is required.
    func refuseUnsignedFormat(_ format: String) throws {
        guard signedBy.isEmpty else {
            throw AccessError.signerNotAccepted(found: [], accepted: try verifiers().map(\.label) + ["(\(format) files carry no signature)"])
        }
    }
}
