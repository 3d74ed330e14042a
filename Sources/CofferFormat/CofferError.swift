/// Everything that can go wrong while reading or writing a Coffer file, as the format sees it:
/// format, integrity, I/O and parameter errors. Keys that do not open a file or signers that are
/// not accepted are ``AccessError``s; errors of keys themselves are CofferKeys' `KeyError`.
///
/// Each case carries enough context for a one-line message a user can act on;
/// ``category`` groups the cases for exit codes.
public enum CofferError: CategorizedError, Equatable {
    /// The input does not start with a Coffer version line. `hint` names what it looks like instead.
    case notCofferFile(hint: String?)
    /// A Coffer file of a version this reader does not know.
    case unsupportedVersion(String)
    /// The header text breaks the grammar or a limit of FORMAT.md.
    case malformedHeader(String)
    /// A stanza that the key type recognises but whose arguments or body are invalid.
    case malformedStanza(type: String, reason: String)
    /// The header MAC does not match: a header line, stanza or the MAC itself was altered.
    case headerMACMismatch
    /// The file's recorded object name differs from where it was found (two files swapped).
    case objectMismatch(expected: String, found: String)
    /// A file in a directory that is not part of the directory's run (another file key, no object
    /// name, or a run that cannot be told apart): docs/FORMAT.md, "Directory runs".
    case notInRun(String)
    /// A payload chunk failed authentication.
    case chunkAuthenticationFailed(chunk: UInt64, reason: String)
    /// The payload ends before its final chunk, or has no payload at all.
    case truncated(String)
    /// Bytes follow the final chunk.
    case trailingData(afterChunk: UInt64)
    /// A parameter (chunk size, work factor, range) outside the allowed range.
    case invalidParameter(String)
    /// Reading the input failed.
    case readFailed(path: String, reason: String)
    /// Writing the output failed.
    case writeFailed(path: String, reason: String)
    /// The device holding the output is full.
    case diskFull(path: String)
    /// A rewrap's new header does not fit in the file's header slot.
    case headerSpaceExhausted(needed: Int, available: Int)
    /// A signature by an accepted signer is there but does not verify: the file was altered after signing.
    case signatureInvalid(String)

    /// Coarse classes, used for exit codes and by tests to check "the right error".
    public typealias Category = ErrorCategory

    public var category: Category {
        switch self {
        case .notCofferFile, .unsupportedVersion: return .format
        case .malformedHeader, .malformedStanza, .headerMACMismatch, .objectMismatch, .notInRun,
             .chunkAuthenticationFailed, .truncated, .trailingData, .signatureInvalid: return .integrity
        case .readFailed, .writeFailed, .diskFull: return .io
        case .invalidParameter, .headerSpaceExhausted: return .usage
        }
    }

    public var description: String {
        switch self {
        case .notCofferFile(let hint):
            return "not a Coffer file" + (hint.map { " (\($0))" } ?? "")
        case .unsupportedVersion(let line):
            return "unsupported Coffer version '\(line)': this reader knows \(Limits.versionLine)"
        case .malformedHeader(let reason):
            return "malformed header: \(reason)"
        case .malformedStanza(let type, let reason):
            return "malformed '\(type)' stanza: \(reason)"
        case .headerMACMismatch:
            return "header authentication failed: the header (a stanza, parameter or the MAC) was altered"
        case .objectMismatch(let expected, let found):
            return "file was encrypted as '\(found)' but found at '\(expected)': files were swapped or renamed"
        case .chunkAuthenticationFailed(let chunk, let reason):
            return "payload chunk \(chunk) failed authentication: \(reason)"
        case .truncated(let reason):
            return "file is truncated: \(reason)"
        case .trailingData(let chunk):
            return "unexpected data after the final chunk (chunk \(chunk))"
        case .invalidParameter(let reason):
            return reason
        case .readFailed(let path, let reason):
            return "cannot read \(path): \(reason)"
        case .writeFailed(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .diskFull(let path):
            return "no space left on device while writing \(path)"
        case .notInRun(let reason):
            return "not part of this directory's run: \(reason)"
        case .headerSpaceExhausted(let needed, let available):
            return "the new header needs \(needed) bytes but the file's header slot holds \(available): the keys cannot be changed in place"
        case .signatureInvalid(let reason):
            return "signature check failed: \(reason)"
        }
    }
}
