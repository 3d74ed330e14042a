/// The coarse class of a failure, shared by every module's error type so that the command-line tool
/// can map any error to its exit code without knowing the module it came from:
/// key 2, integrity 3, format 4, I/O 5, usage 64 (docs/ARCHITECTURE.md, "Errors").
public enum ErrorCategory: String, Sendable {
    case format, key, integrity, io, usage
}

/// An error that knows its ``ErrorCategory`` and can describe itself in one line a user can act on.
///
/// Each module has its own error type conforming to this protocol (format and integrity errors in
/// CofferFormat, key errors in CofferKeys, key-service errors in CofferCloud, file errors in
/// CofferFiles, storage errors in CofferRepository). Messages never name command-line flags: the
/// command-line tool adds such hints itself.
public protocol CategorizedError: Error, CustomStringConvertible, Sendable {
    var category: ErrorCategory { get }
}
