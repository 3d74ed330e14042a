import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The compressors XtraBackup names in file suffixes (`NAME.zst.xbcrypt`, `NAME.qp.xbcrypt`,
/// `NAME.lz4.xbcrypt`), run as the installed command-line tools: the decrypted stream goes to the
/// tool's standard input and the tool writes straight into Coffer's temporary output file, so the
/// compressed plaintext never lands on disk.
public struct Decompressor: Sendable {
    public let suffix: String
    public let tool: String
    public let arguments: [String]
    public let package: String

    public static let known: [Decompressor] = [
        Decompressor(suffix: ".zst", tool: "zstd", arguments: ["-d", "-q", "-c"], package: "zstd"),
        Decompressor(suffix: ".lz4", tool: "lz4", arguments: ["-d", "-q", "-c"], package: "lz4"),
        Decompressor(suffix: ".qp", tool: "qpress", arguments: ["-dio"], package: "qpress (Percona's repository)"),
    ]

    /// The decompressor for a name such as `t1.ibd.zst`, if any.
    public static func forName(_ name: String) -> Decompressor? {
        known.first { name.hasSuffix($0.suffix) }
    }

    /// The tool's path on PATH, or a clear error naming the package to install.
    func executable() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(tool)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw FileError.toolUnavailable(tool: tool, reason: "decompressing \(suffix) files needs it: install \(package)")
    }

    /// Starts the tool reading `input` and writing `output` through ``ChildSpawn`` (no shell,
    /// descriptors 3 and up closed, default signal dispositions, the environment of
    /// ``ChildEnvironment``: no Coffer secrets); returns a function that waits for it and throws
    /// unless it succeeded.
    func start(input: Int32, output: Int32) throws -> () throws -> Void {
        let executable = try executable()
        let pid: pid_t
        do {
            pid = try ChildSpawn.start([executable] + arguments, stdin: .fd(input), stdout: .fd(output), stderr: .inherit).pid
        } catch let failure as ChildSpawn.Failure {
            throw FileError.toolUnavailable(tool: executable, reason: String(cString: strerror(failure.code)))
        }
        let tool = self.tool
        return {
            let status = ChildSpawn.wait(pid)
            guard status == 0 else {
                throw CofferError.writeFailed(path: "\(tool) output",
                                              reason: "\(tool) failed (\(ChildSpawn.describe(status))): the decrypted data is not valid \(tool) input")
            }
        }
    }
}

/// A pipe whose ends are close-on-exec from the start, so that a tool spawned by another thread
/// at the same moment never inherits them (it would hold the pipe open and the reader would
/// never see its end).
func makePipe(for path: String) throws -> (read: Int32, write: Int32) {
    do { return try ChildSpawn.pipe() } catch let failure as ChildSpawn.Failure {
        throw CofferError.writeFailed(path: path, reason: "cannot create a pipe: \(String(cString: strerror(failure.code)))")
    }
}
