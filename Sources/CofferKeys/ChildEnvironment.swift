import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The environment Coffer gives a child process (a decompressor, `backup --stdin-from-command`):
/// its own, less every variable that may hold a secret (docs/KEYS.md, "Secrets and child processes").
public enum ChildEnvironment {
    /// `NAME=value` entries of this process's environment that a child may see.
    public static func entries() -> [String] {
        var out: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            let name = String(text.prefix { $0 != "=" })
            if !isSecret(name) { out.append(text) }
            entry += 1
        }
        return out
    }

    /// True for variables never passed to a child process: everything Coffer reads (`COFFER_*`,
    /// `XBCRYPT_ENCRYPTION_KEY`), cloud and Vault credentials (`AWS_*`, `VAULT_*`, `BAO_*`), and any
    /// name that says it holds a secret (SECRET, TOKEN, PASSWORD, PASSPHRASE, CREDENTIAL, any case).
    public static func isSecret(_ name: String) -> Bool {
        let upper = name.uppercased()
        if ["COFFER_", "XBCRYPT_", "AWS_", "VAULT_", "BAO_"].contains(where: upper.hasPrefix) { return true }
        return ["SECRET", "TOKEN", "PASSWORD", "PASSPHRASE", "CREDENTIAL"].contains(where: upper.contains)
    }
}
