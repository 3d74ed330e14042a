import CofferFormat

// Each signer's own public key, for re-signing (Sources/CofferFiles/Rewrap.swift): a signer's
// earlier signature on a file is checked before it signs the file again.

extension Ed25519Signer {
    public var publicVerifier: SignatureVerifier { verifier }
}

extension MLDSA65Signer {
    public var publicVerifier: SignatureVerifier { verifier }
}
