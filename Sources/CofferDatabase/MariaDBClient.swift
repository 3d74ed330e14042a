import CofferRepository
import Foundation

/// How the tools reach a server. With an option file, it is passed to every tool as its FIRST
/// argument (`--defaults-file=F`: the tools read nothing else, and the password stays in the file);
/// without one, `--no-defaults` and the given connection arguments (by default Debian's socket).
public struct MariaDBConnection: Sendable, Equatable {
    /// A client option file (`[client]` user/password/socket; `[mariadb-backup]` options).
    public var defaultsFile: String?
    /// Connection arguments after the first one (never a password), e.g. `--socket=/run/x.sock`.
    public var arguments: [String]

    /// The socket Debian's packages use (the tools' compiled-in default too).
    public static let defaultSocket = "/run/mysqld/mysqld.sock"

    public init(defaultsFile: String?, arguments: [String]? = nil) {
        self.defaultsFile = defaultsFile
        self.arguments = arguments ?? (defaultsFile == nil ? ["--socket=\(Self.defaultSocket)"] : [])
    }

    /// The arguments every tool starts with.
    var toolArguments: [String] {
        (defaultsFile.map { ["--defaults-file=\($0)"] } ?? ["--no-defaults"]) + arguments
    }
}

/// SQL through the `mariadb` command-line client in batch mode (tab-separated rows, no column
/// names); the SQL goes to its standard input, never to its argv.
public struct MariaDBClient: Sendable {
    public let connection: MariaDBConnection

    public init(connection: MariaDBConnection) { self.connection = connection }

    /// The schemas that are the server's own, left out of row counts.
    static let systemSchemas: Set<String> = ["mysql", "information_schema", "performance_schema", "sys"]

    /// Runs `sql` and returns every row of every result, each column as text (NULL as "").
    public func query(_ sql: String, database: String? = nil, step: String = "mariadb") throws -> [[String]] {
        let client = try MariaDBTools.client()
        var arguments = connection.toolArguments + ["--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
        if let database { arguments.append("--database=\(database)") }
        let output = try MariaDBChild.run(step: step, client, arguments, stdin: .bytes(Array(sql.utf8)), stdout: .capture)
        return Self.parseBatch(output)
    }

    /// Parses the client's batch output: rows end with LF, columns are separated by TAB, and
    /// `\\`, `\t`, `\n`, `\r`, `\0` inside a value are escapes. The client prints NULL as `NULL`.
    static func parseBatch(_ bytes: [UInt8]) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field: [UInt8] = []
        var escaped = false
        func endField() {
            let text = String(decoding: field, as: UTF8.self)
            row.append(text == "NULL" ? "" : text)
            field.removeAll(keepingCapacity: true)
        }
        for byte in bytes {
            if escaped {
                switch byte {
                case UInt8(ascii: "t"): field.append(0x09)
                case UInt8(ascii: "n"): field.append(0x0A)
                case UInt8(ascii: "r"): field.append(0x0D)
                case UInt8(ascii: "0"): field.append(0)
                default: field.append(byte)
                }
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == 0x09 {
                endField()
            } else if byte == 0x0A {
                endField()
                rows.append(row)
                row = []
            } else {
                field.append(byte)
            }
        }
        if !field.isEmpty || !row.isEmpty { endField(); rows.append(row) }
        return rows
    }

    /// `VERSION()`, e.g. "10.11.19-MariaDB-0+deb12u1". Fails when the server cannot be reached.
    public func serverVersion() throws -> String {
        guard let version = try query("SELECT VERSION();", step: "connecting to the server (mariadb)").first?.first, !version.isEmpty else {
            throw MariaDBError.unexpectedOutput("the server did not report its version")
        }
        return version
    }

    /// A backquoted identifier (backquotes doubled).
    static func quoted(_ identifier: String) -> String { "`" + identifier.replacingOccurrences(of: "`", with: "``") + "`" }

    /// Every user database with its size and the exact row count of each base table
    /// (`SELECT COUNT(*)`), sorted by name. Views, system schemas and sequences are left out.
    public func rowCounts() throws -> [DatabaseInfo.Database] {
        let names = try query("SHOW DATABASES;", step: "listing databases (mariadb)").compactMap(\.first)
            .filter { !Self.systemSchemas.contains($0.lowercased()) }.sorted()
        let sizes = try query("""
            SELECT table_schema, COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables
            GROUP BY table_schema;
            """, step: "reading database sizes (mariadb)")
        var sizeOf: [String: Int64] = [:]
        for row in sizes where row.count == 2 { sizeOf[row[0]] = Int64(row[1]) ?? 0 }
        let tables = try query("""
            SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_type = 'BASE TABLE' ORDER BY table_schema, table_name;
            """, step: "listing tables (mariadb)")
            .filter { $0.count == 2 && !Self.systemSchemas.contains($0[0].lowercased()) }
        var counts: [Int64] = []
        var index = 0
        while index < tables.count {
            // One statement per 100 tables; each row says which table by its position, so no
            // table name is ever put into a string literal.
            let batch = tables[index..<min(index + 100, tables.count)]
            let sql = batch.enumerated().map { i, t in
                "SELECT \(i), COUNT(*) FROM \(Self.quoted(t[0])).\(Self.quoted(t[1]))"
            }.joined(separator: " UNION ALL ") + ";"
            var found = [Int64?](repeating: nil, count: batch.count)
            for row in try query(sql, step: "counting rows (mariadb)") where row.count == 2 {
                if let i = Int(row[0]), i >= 0, i < found.count { found[i] = Int64(row[1]) }
            }
            for (i, value) in found.enumerated() {
                guard let value else {
                    let t = batch[batch.startIndex + i]
                    throw MariaDBError.unexpectedOutput("no row count for table \(t[0]).\(t[1])")
                }
                counts.append(value)
            }
            index += batch.count
        }
        var byDatabase: [String: [DatabaseInfo.Table]] = [:]
        for (t, rows) in zip(tables, counts) {
            byDatabase[t[0], default: []].append(DatabaseInfo.Table(schema: t[0], name: t[1], rows: rows))
        }
        return names.map { DatabaseInfo.Database(name: $0, file: nil, sizeBytes: sizeOf[$0] ?? 0, tables: byDatabase[$0] ?? []) }
    }
}
