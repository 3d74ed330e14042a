import CofferFormat
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads secrets from files and descriptors, never from command-line arguments.
public enum KeySources {
    /// Reads a whole file, refusing one that group or others may read unless `allowInsecure`.
    public static func readSecretFile(_ path: String, what: String, allowInsecure: Bool) throws -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw CofferError.readFailed(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFIFO || (st.st_mode & S_IFMT) == S_IFCHR else {
            throw CofferError.readFailed(path: path, reason: "not a regular file")
        }
        let mode = st.st_mode & 0o777
        if (st.st_mode & S_IFMT) == S_IFREG && mode & 0o044 != 0 && !allowInsecure {
            throw KeyError.insecureKeyFile(path: path, what: what, mode: UInt32(mode))
        }
        return try readAll(path: path)
    }

    public static func readAll(path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.readFailed(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        return try readAll(fd: fd, name: path)
    }

    /// Reads a descriptor to its end (at most 1 MiB: no key or passphrase is larger).
    public static func readAll(fd: Int32, name: String) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 4096) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CofferError.readFailed(path: name, reason: String(cString: strerror(errno)))
            }
            if n == 0 { return out }
            out += buffer[0..<n]
            guard out.count <= 1 << 20 else { throw KeyError.invalid("\(name) is larger than 1 MiB: not a key") }
        }
    }

    public static func keyFile(path: String, allowInsecure: Bool) throws -> SymmetricKeyFile {
        try SymmetricKeyFile.parse(try readSecretFile(path, what: "key file", allowInsecure: allowInsecure), source: path)
    }

    public static func keyFile(fd: Int32) throws -> SymmetricKeyFile {
        try SymmetricKeyFile.parse(try readAll(fd: fd, name: "descriptor \(fd)"), source: "descriptor \(fd)")
    }

    /// The value of `COFFER_KEY` (``KeyRing/environmentKey``): the text form of a key file (one line; comments not needed).
    public static func keyFromEnvironment(_ value: String) throws -> SymmetricKeyFile {
        try SymmetricKeyFile.parse(Array(value.utf8), source: "COFFER_KEY")
    }

    /// The passphrase on the first line of a passphrase file (permissions checked like a key file's).
    public static func passphrase(file path: String, allowInsecure: Bool) throws -> [UInt8] {
        try passphrase(fromFileContent: try readSecretFile(path, what: "passphrase file", allowInsecure: allowInsecure), source: path)
    }

    /// A passphrase file holds one line; one trailing LF or CRLF is not part of the passphrase
    /// (the convention of `openssl -pass file:` and most tools). More lines are refused.
    public static func passphrase(fromFileContent content: [UInt8], source: String) throws -> [UInt8] {
        var bytes = content
        if bytes.last == 0x0A { bytes.removeLast(); if bytes.last == 0x0D { bytes.removeLast() } }
        guard !bytes.contains(0x0A) else {
            throw KeyError.invalid("\(source) holds more than one line; a passphrase file holds exactly one")
        }
        guard !bytes.isEmpty else { throw KeyError.invalid("\(source) holds an empty passphrase") }
        return bytes
    }
}
