import CofferFormat

/// What can go wrong while working on files and directories, beyond reading and writing a Coffer
/// file itself (``CofferError``): outputs that exist, a replacement that does not hold what it
/// should, a helper tool that is missing. Messages name no command-line flag: the command-line
/// tool adds its hints (``hint``).
public enum FileError: CategorizedError, Equatable {
    /// The output exists and replacing it was not asked for.
    case alreadyExists(path: String)
    /// A run's root is not a directory.
    case notADirectory(path: String)
    /// The input changed size while it was being encrypted.
    case changedWhileReading(path: String)
    /// A new file (read back from disk, or as it was written) does not hold exactly the plaintext
    /// it should: nothing was replaced or removed.
    case notAsExpected(path: String, reason: String)
    /// An output that exists from an earlier run holds other data than the original it would
    /// replace: nothing was converted or removed.
    case existingOutputDiffers(path: String, original: String)
    /// Decompressing needs a tool that is not installed, or that cannot be started.
    case toolUnavailable(tool: String, reason: String)
    /// A file whose name this operation does not take (migrating `NAME.age` from xbcrypt, say).
    case wrongName(path: String, expectedSuffix: String)

    public var category: ErrorCategory {
        switch self {
        case .alreadyExists, .notADirectory, .changedWhileReading, .notAsExpected, .existingOutputDiffers: return .io
        // A missing tool was reported as a refusal (exit code 2) before this type existed; kept.
        case .toolUnavailable: return .key
        case .wrongName: return .usage
        }
    }

    public var description: String {
        switch self {
        case .alreadyExists(let path):
            return "cannot write \(path): it already exists"
        case .notADirectory(let path):
            return "cannot read \(path): not a directory"
        case .changedWhileReading(let path):
            return "cannot read \(path): the file changed size while it was being encrypted"
        case .notAsExpected(let path, let reason):
            return "cannot write \(path): \(reason); nothing was replaced or removed"
        case .existingOutputDiffers(let path, let original):
            return "cannot write \(path): it already exists and holds other data than \(original) (an older conversion, or an unrelated file): nothing was converted or removed; move one of the two away and run again"
        case .toolUnavailable(let tool, let reason):
            return "cannot run '\(tool)': \(reason)"
        case .wrongName(let path, let suffix):
            return "\(path): only NAME\(suffix) files are taken by this operation"
        }
    }
}
