import CofferRepository
import Foundation
import Testing

@Suite struct DatabaseInfoTests {
    /// A snapshot without database information encodes exactly as before (the field is omitted), and
    /// one with it round-trips.
    @Test func snapshotFieldIsOptional() throws {
        var info = SnapshotInfo(time: Date(timeIntervalSince1970: 0), tree: ChunkID(bytes: Array(repeating: 1, count: 32)),
                                paths: ["/x"], hostname: "h", username: "u", tags: [], parent: nil,
                                programVersion: "t", summary: .init())
        let plain = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        #expect(!plain.contains("database"))
        info.database = DatabaseInfo(engine: .postgresql, method: "pg_dump", serverVersion: "15.8",
                                     databases: [.init(name: "shop", file: "/postgres/shop.dump", sizeBytes: 10,
                                                       tables: [.init(schema: "public", name: "orders", rows: 3)])])
        let back = try JSONDecoder().decode(SnapshotInfo.self, from: try JSONEncoder().encode(info))
        #expect(back == info)
        #expect(back.database?.databases.first?.tables.first?.rows == 3)
    }
}
