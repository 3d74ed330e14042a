import CofferFormat

/// What can go wrong reading or writing the other formats (age's ASCII armor, age's rules for
/// recipients) beyond what Coffer's own format errors (``CofferError``) describe: an age header or
/// payload that fails is reported with those, since the grammar and the checks are shared.
public enum InteropError: CategorizedError, Equatable {
    /// ASCII armor (an armored age file) that breaks its strict PEM form.
    case malformedArmor(String)
    /// Recipients that age's rules do not allow together (a passphrase with others; post-quantum
    /// with classic keys).
    case recipientsNotAllowed(String)

    public var category: ErrorCategory {
        switch self {
        case .malformedArmor: return .integrity
        case .recipientsNotAllowed: return .usage
        }
    }

    public var description: String {
        switch self {
        case .malformedArmor(let reason): return "malformed ASCII armor: \(reason)"
        case .recipientsNotAllowed(let reason): return reason
        }
    }
}
