import CofferFormat
import Foundation

/// What went wrong in a repository, named so that a user knows which object is affected.
/// Messages never name command-line flags.
public enum RepositoryError: CategorizedError, Equatable {
    /// An object failed authentication or does not parse after authenticating: tampered, truncated
    /// or swapped. `object` is "KIND/NAME".
    case damaged(object: String, reason: String)
    /// An object that must exist is missing (a pack an index entry names, the config).
    case missing(object: String, reason: String)
    /// Not a repository this build reads (unknown version, malformed config before authentication).
    case unsupported(String)
    /// No given key opens any key object, or a key is unusable.
    case key(String)
    /// The repository was opened with a writer key, which cannot decrypt what this operation reads.
    case writerKeyCannotRead(String)
    /// A lock held by another process stands in the way.
    case locked(String)
    /// A request that is refused (removing the last key, an ambiguous snapshot prefix, ...).
    case refused(String)
    /// A blob or snapshot that is not in the repository.
    case notFound(String)
    /// `check` found this many problems (each reported on its own).
    case checkFailed(problems: Int)

    public var category: ErrorCategory {
        switch self {
        case .damaged, .checkFailed: return .integrity
        case .missing: return .integrity
        case .unsupported: return .format
        case .key, .writerKeyCannotRead: return .key
        case .locked: return .io
        case .refused, .notFound: return .usage
        }
    }

    public var description: String {
        switch self {
        case .damaged(let object, let reason): return "repository object \(object) is damaged: \(reason)"
        case .missing(let object, let reason): return "repository object \(object) is missing: \(reason)"
        case .unsupported(let why): return "unsupported repository: \(why)"
        case .key(let why): return why
        case .writerKeyCannotRead(let what): return "a writer key cannot read \(what): it holds no key that decrypts the repository's data"
        case .locked(let why): return "repository is locked: \(why)"
        case .refused(let why): return why
        case .notFound(let what): return what
        case .checkFailed(let n): return "check found \(n) problem\(n == 1 ? "" : "s") in the repository"
        }
    }
}

extension StorageError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .invalidName: return .usage
        case .notFound, .alreadyExists, .rangeOutOfBounds, .unexpectedEntry, .io: return .io
        }
    }
}

extension CompressionError: CategorizedError {
    public var category: ErrorCategory { .integrity }
}
