import Foundation

/// A `--check-sql` file: queries, each with the result rows it must return, run against the
/// restored databases by `restore-test` (docs/DATABASES.md, "Check files"). Engine-neutral:
///
///     -- database: shop                  (the database of the following queries; default: the
///                                         engine's default database)
///     -- name: orders are there          (optional label of the next query)
///     -- expect: 1000                    (one expected row; columns separated by " | ")
///     -- expect: paid | 12
///     -- expect-empty                    (the query must return no row)
///     SELECT count(*) FROM orders;       (the query: lines up to one ending with ";")
///
/// Every query needs at least one `-- expect` line or `-- expect-empty` before it (a query nobody
/// checks is refused). Rows are compared in order, each value as the text the engine's client
/// prints (NULL as the empty string), after trimming spaces around values. Other `--` lines and
/// blank lines are ignored.
public struct CheckFile: Sendable, Equatable {
    public struct Query: Sendable, Equatable {
        public var line: Int
        public var name: String?
        public var database: String?
        public var sql: String
        public var expected: [[String]]
    }

    public var path: String
    public var queries: [Query]

    public init(path: String, queries: [Query]) { self.path = path; self.queries = queries }

    /// Parses a check file's text; `path` names it in messages.
    public init(parsing text: String, path: String) throws {
        self.path = path
        var queries: [Query] = []
        var database: String?
        var name: String?
        var expected: [[String]]? = nil
        var sql: [String] = []
        var sqlLine = 0
        for (index, raw) in text.components(separatedBy: "\n").enumerated() {
            let number = index + 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if sql.isEmpty && line.isEmpty { continue }
            if sql.isEmpty, line.hasPrefix("--") {
                let comment = line.dropFirst(2).trimmingCharacters(in: .whitespaces)
                if let value = Self.directive(comment, "database:") {
                    guard !value.isEmpty else { throw DatabaseError.invalidRequest("\(path):\(number): \"-- database:\" needs a name") }
                    database = value
                } else if let value = Self.directive(comment, "name:") {
                    name = value
                } else if let value = Self.directive(comment, "expect:") {
                    expected = (expected ?? []) + [value.components(separatedBy: "|").map { $0.trimmingCharacters(in: .whitespaces) }]
                } else if comment == "expect-empty" {
                    guard expected == nil || expected!.isEmpty else {
                        throw DatabaseError.invalidRequest("\(path):\(number): \"-- expect-empty\" after \"-- expect:\" lines")
                    }
                    expected = []
                }
                continue
            }
            if sql.isEmpty { sqlLine = number }
            sql.append(raw)
            if line.hasSuffix(";") {
                guard let rows = expected else {
                    throw DatabaseError.invalidRequest("\(path):\(sqlLine): a query without \"-- expect:\" or \"-- expect-empty\" before it")
                }
                queries.append(Query(line: sqlLine, name: name, database: database, sql: sql.joined(separator: "\n"), expected: rows))
                sql = []; name = nil; expected = nil
            }
        }
        if !sql.isEmpty { throw DatabaseError.invalidRequest("\(path):\(sqlLine): the last query does not end with \";\"") }
        if expected != nil { throw DatabaseError.invalidRequest("\(path): \"-- expect\" lines at the end with no query after them") }
        guard !queries.isEmpty else { throw DatabaseError.invalidRequest("\(path): no query in the check file") }
        self.queries = queries
    }

    public static func load(_ path: String) throws -> CheckFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatabaseError.invalidRequest("cannot read the check file \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw DatabaseError.invalidRequest("\(path) is not UTF-8 text") }
        return try CheckFile(parsing: text, path: path)
    }

    private static func directive(_ comment: String, _ key: String) -> String? {
        guard comment.lowercased().hasPrefix(key) else { return nil }
        return comment.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
    }

    /// Whether `got` (values as the engine printed them) matches `expected` (values trimmed).
    public static func matches(_ got: [[String]], _ expected: [[String]]) -> Bool {
        got.map { $0.map { $0.trimmingCharacters(in: .whitespaces) } } == expected
    }
}
