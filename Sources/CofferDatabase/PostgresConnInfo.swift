import Foundation

/// A libpq connection string in keyword=value form ("host=/run/postgresql port=5432 user=backup
/// dbname=shop"), checked so that no password travels on a command line: passwords come only from
/// PGPASSFILE, ~/.pgpass or PGPASSWORD. A URI (postgresql://…, postgres://…) is turned into the
/// same pairs; one with a password (user:password@, or a password parameter) is refused.
public struct PostgresConnInfo: Sendable, Equatable {
    /// The keyword/value pairs in order.
    public let pairs: [(String, String)]

    public static func == (a: PostgresConnInfo, b: PostgresConnInfo) -> Bool {
        a.pairs.map { $0.0 } == b.pairs.map { $0.0 } && a.pairs.map { $0.1 } == b.pairs.map { $0.1 }
    }

    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for scheme in ["postgresql://", "postgres://"] where trimmed.hasPrefix(scheme) {
            self.pairs = try Self.parseURI(String(trimmed.dropFirst(scheme.count)))
            return
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
            if key == "password" { throw DatabaseError.invalidRequest(Self.passwordRefused) }
            pairs.append((key, value))
        }
        self.pairs = pairs
    }

    static let passwordRefused = "a password in the connection string is refused (it would be visible in the process list): use PGPASSFILE, ~/.pgpass or PGPASSWORD"

    /// The part of a libpq URI after the scheme: `[user[:password]@][host[:port][,host[:port]]…][/dbname][?keyword=value&…]`,
    /// percent-decoded; hosts in brackets are IPv6 addresses; several hosts give comma-separated
    /// host and port lists (as libpq takes them). A password anywhere is refused, and never
    /// repeated in a message.
    static func parseURI(_ rest: String) throws -> [(String, String)] {
        func decode(_ part: Substring, _ what: String) throws -> String {
            guard let value = String(part).removingPercentEncoding else {
                throw DatabaseError.invalidRequest("connection URI: the \(what) is not valid percent-encoding")
            }
            return value
        }
        var main = Substring(rest)
        var query: Substring?
        if let q = main.firstIndex(of: "?") { query = main[main.index(after: q)...]; main = main[..<q] }
        if main.contains("#") || query?.contains("#") == true { throw DatabaseError.invalidRequest("connection URI: a fragment (#…) is not allowed") }
        var authority = main
        var database: Substring?
        if let slash = main.firstIndex(of: "/") { authority = main[..<slash]; database = main[main.index(after: slash)...] }
        var pairs: [(String, String)] = []
        if let at = authority.lastIndex(of: "@") {
            let user = authority[..<at]
            if user.contains(":") { throw DatabaseError.invalidRequest(passwordRefused) }
            if !user.isEmpty { pairs.append(("user", try decode(user, "user name"))) }
            authority = authority[authority.index(after: at)...]
        }
        if !authority.isEmpty {
            var hosts: [String] = [], ports: [String] = []
            for item in authority.split(separator: ",", omittingEmptySubsequences: false) {
                var host = item, port: Substring = ""
                if item.hasPrefix("[") {
                    guard let close = item.firstIndex(of: "]") else { throw DatabaseError.invalidRequest("connection URI: an IPv6 host without \"]\"") }
                    host = item[item.index(after: item.startIndex)..<close]
                    let after = item[item.index(after: close)...]
                    if after.hasPrefix(":") { port = after.dropFirst() } else if !after.isEmpty {
                        throw DatabaseError.invalidRequest("connection URI: unexpected text after an IPv6 host")
                    }
                } else if let colon = item.lastIndex(of: ":") {
                    host = item[..<colon]; port = item[item.index(after: colon)...]
                }
                guard port.allSatisfy(\.isASCII) && port.allSatisfy(\.isNumber) else { throw DatabaseError.invalidRequest("connection URI: a port is not a number") }
                hosts.append(try decode(host, "host"))
                ports.append(String(port))
            }
            if hosts.contains(where: { !$0.isEmpty }) { pairs.append(("host", hosts.joined(separator: ","))) }
            if ports.contains(where: { !$0.isEmpty }) { pairs.append(("port", ports.joined(separator: ","))) }
        }
        if let database, !database.isEmpty { pairs.append(("dbname", try decode(database, "database name"))) }
        for item in (query ?? "").split(separator: "&") {
            guard let eq = item.firstIndex(of: "=") else { throw DatabaseError.invalidRequest("connection URI: a parameter without \"=\"") }
            let key = try decode(item[..<eq], "parameter name").lowercased()
            if key == "password" { throw DatabaseError.invalidRequest(passwordRefused) }
            guard !key.isEmpty, key.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || $0 == "_") }) else {
                throw DatabaseError.invalidRequest("connection URI: invalid parameter name")
            }
            let value = try decode(item[item.index(after: eq)...], "value of \(key)")
            pairs.removeAll { $0.0 == key }
            pairs.append((key, value))
        }
        return pairs
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
