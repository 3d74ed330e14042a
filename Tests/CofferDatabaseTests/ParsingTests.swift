@testable import CofferDatabase
import Foundation
import Testing

/// Connection strings and check files: parsed without a server.
@Suite struct ParsingTests {
    @Test func connInfoRefusesPasswordsAndURIs() throws {
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp password=x") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp PASSWORD = 'a b'") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "postgresql://u:pw@h/db") }  // a password in a URI
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp dbname='unterminated") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host") }
        do {
            _ = try PostgresConnInfo(parsing: "password=hunter2")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "the refusal must not repeat the password")
        }
    }

    @Test("postgresql:// URIs become keyword pairs (percent-decoded, IPv6, several hosts, parameters); a password in one is refused without being repeated")
    func connInfoURIs() throws {
        func pairs(_ text: String) throws -> [String] { try PostgresConnInfo(parsing: text).pairs.map { "\($0.0)=\($0.1)" } }
        #expect(try pairs("postgresql://backup@%2Frun%2Fpostgresql:5433/shop?sslmode=disable&application_name=coffer")
                == ["user=backup", "host=/run/postgresql", "port=5433", "dbname=shop", "sslmode=disable", "application_name=coffer"])
        #expect(try pairs("postgres://") == [])
        #expect(try pairs("postgresql://db1/it%27s") == ["host=db1", "dbname=it's"])
        #expect(try pairs("postgresql://[::1]:5432,db2:6543/x") == ["host=::1,db2", "port=5432,6543", "dbname=x"])
        #expect(try pairs("postgresql:///shop?host=/run/postgresql") == ["dbname=shop", "host=/run/postgresql"])
        let c = try PostgresConnInfo(parsing: "postgresql://u@h/db")
        #expect(c.string(database: "other") == "user='u' host='h' dbname='other'")
        for bad in ["postgresql://u:hunter2@h/db", "postgresql://h/db?password=hunter2", "postgres://u:@h", "postgresql://h/db?PassWord=hunter2",
                    "postgresql://h:port/db", "postgresql://h/db?noequals", "postgresql://[::1/db", "postgresql://h/db#frag", "postgresql://h/%zz"] {
            let error = #expect(throws: DatabaseError.self, "\(bad)") { try PostgresConnInfo(parsing: bad) }
            #expect(!"\(error.map { "\($0)" } ?? "")".contains("hunter2"), "the refusal must not repeat the password")
            #expect(error?.category == .usage)
        }
    }

    @Test func connInfoQuotesAndReplacesTheDatabase() throws {
        let c = try PostgresConnInfo(parsing: "host='/run/my sockets' port=5432 user=backup dbname=shop")
        #expect(c.dbname == "shop")
        #expect(c.pairs.first?.1 == "/run/my sockets")
        let other = c.string(database: "it's")
        #expect(other == "host='/run/my sockets' port='5432' user='backup' dbname='it\\'s'")
        let back = try PostgresConnInfo(parsing: other)
        #expect(back.dbname == "it's")
        #expect(back.pairs.first?.1 == "/run/my sockets")
    }

    @Test func checkFileFormat() throws {
        let text = """
        -- a comment
        -- database: shop
        -- name: orders count
        -- expect: 60000
        SELECT count(*) FROM orders;

        -- expect: paid | 20000
        -- expect: pending | 20000
        SELECT status, count(*)
          FROM orders GROUP BY 1 ORDER BY 1
          LIMIT 2;
        -- database: postgres
        -- expect-empty
        SELECT 1 WHERE false;
        """
        let f = try CheckFile(parsing: text, path: "c.sql")
        #expect(f.queries.count == 3)
        #expect(f.queries[0] == .init(line: 5, name: "orders count", database: "shop", sql: "SELECT count(*) FROM orders;", expected: [["60000"]]))
        #expect(f.queries[1].expected == [["paid", "20000"], ["pending", "20000"]])
        #expect(f.queries[1].line == 9)
        #expect(f.queries[1].database == "shop")
        #expect(f.queries[1].name == nil)
        #expect(f.queries[2].expected == [])
        #expect(f.queries[2].database == "postgres")
        #expect(CheckFile.matches([["paid", "20000"], ["pending", "20000"]], f.queries[1].expected))
        #expect(!CheckFile.matches([["paid", "19999"], ["pending", "20000"]], f.queries[1].expected))
        #expect(!CheckFile.matches([], f.queries[0].expected))
    }

    @Test func checkFileErrors() {
        for bad in ["SELECT 1;", "-- expect: 1\nSELECT 1", "-- expect: 1\n", "", "-- expect: 1\n-- expect-empty\nSELECT 1;"] {
            #expect(throws: DatabaseError.self, "\(bad)") { try CheckFile(parsing: bad, path: "x.sql") }
        }
    }

    @Test func csvAsPsqlPrintsIt() {
        #expect(CSV.parse("1,a\n2,\"b,\"\"c\"\"\nd\"\n3,\n") == [["1", "a"], ["2", "b,\"c\"\nd"], ["3", ""]])
        #expect(CSV.parse("") == [])
    }
}
