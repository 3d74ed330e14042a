import Foundation

/// A libpq connection string in keyword=value form ("host=/run/postgresql port=5432 user=backup
/// dbname=shop"), checked so that no password travels on a command line: passwords come only from
/// PGPASSFILE, ~/.pgpass or PGPASSWORD. URIs (postgresql://…) are refused (they are easy to write
/// with a password in them); the keyword form says the same.
public struct PostgresConnInfo: Sendable, Equatable {
    /// The keyword/value pairs in order.
    public let pairs: [(String, String)]

    public static func == (a: PostgresConnInfo, b: PostgresConnInfo) -> Bool {
        a.pairs.map { $0.0 } == b.pairs.map { $0.0 } && a.pairs.map { $0.1 } == b.pairs.map { $0.1 }
    }

    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("postgresql://") || trimmed.hasPrefix("postgres://") {
            throw DatabaseError.invalidRequest("give the connection as keyword=value pairs (host=… port=… user=… dbname=…), not as a URI")
        }
        var pairs: [(String, String)] = []
        var chars = Array(text.unicodeScalars)[...]
        func skipSpace() { while let c = chars.first, c.properties.isWhitespace { chars.removeFirst() } }
        while true {
            skipSpace()
            guard !chars.isEmpty else { break }
            var keyword = ""
            while let c = chars.first, c != "=", !c.properties.isWhitespace { keyword.unicodeScalars.append(c); chars.removeFirst() }
            skipSpace()
            guard chars.first == "=" else {
                throw DatabaseError.invalidRequest("connection string: \"\(keyword)\" is not followed by \"=\"")
            }
            chars.removeFirst()
            skipSpace()
            var value = ""
            if chars.first == "'" {
                chars.removeFirst()
                var closed = false
                while let c = chars.popFirst() {
                    if c == "\\" { if let n = chars.popFirst() { value.unicodeScalars.append(n) }; continue }
                    if c == "'" { closed = true; break }
                    value.unicodeScalars.append(c)
                }
                guard closed else { throw DatabaseError.invalidRequest("connection string: unterminated quoted value of \(keyword)") }
            } else {
                while let c = chars.first, !c.properties.isWhitespace {
                    chars.removeFirst()
                    if c == "\\" { if let n = chars.popFirst() { value.unicodeScalars.append(n) }; continue }
                    value.unicodeScalars.append(c)
                }
            }
            let key = keyword.lowercased()
            guard !key.isEmpty else { throw DatabaseError.invalidRequest("connection string: a value without a keyword") }
            if key == "password" {
                throw DatabaseError.invalidRequest("a password in the connection string is refused (it would be visible in the process list): use PGPASSFILE, ~/.pgpass or PGPASSWORD")
            }
            pairs.append((key, value))
        }
        self.pairs = pairs
    }

    public var dbname: String? { pairs.last { $0.0 == "dbname" }?.1 }

    /// The connection string for `database` (or this one's own database when nil): the pairs with
    /// dbname replaced.
    public func string(database: String? = nil) -> String {
        var out = pairs.filter { database == nil || $0.0 != "dbname" }
        if let database { out.append(("dbname", database)) }
        return out.map { "\($0.0)=\(Self.quote($0.1))" }.joined(separator: " ")
    }

    static func quote(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}
