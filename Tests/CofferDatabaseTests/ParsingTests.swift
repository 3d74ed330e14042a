@testable import CofferDatabase
import Foundation
import Testing

/// Connection strings and check files: parsed without a server.
@Suite struct ParsingTests {
    @Test func connInfoRefusesPasswordsAndURIs() throws {
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp password=x") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp PASSWORD = 'a b'") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "postgresql://u:pw@h/db") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host=/tmp dbname='unterminated") }
        #expect(throws: DatabaseError.self) { try PostgresConnInfo(parsing: "host") }
        do {
            _ = try PostgresConnInfo(parsing: "password=hunter2")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "the refusal must not repeat the password")
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
