import CofferFormat
@testable import CofferRepository
import Foundation
import Testing

@Suite struct TreeTests {
    static let id1 = BlobID(bytes: [UInt8](repeating: 1, count: 32))
    static let id2 = BlobID(bytes: [UInt8](repeating: 2, count: 32))

    static func sample() throws -> Tree {
        try Tree(nodes: [
            TreeNode(name: Array("zeta".utf8), kind: .symlink, mode: 0o777, uid: 1000, gid: 1000, user: Array("u".utf8),
                     group: Array("g".utf8), mtimeNanos: -5, ctimeNanos: 7, size: 6, inode: 9, device: 2,
                     linkTarget: Array("../etc".utf8)),
            TreeNode(name: [0x61, 0x0a, 0xff, 0xfe], kind: .file, mode: 0o4755, mtimeNanos: 1_700_000_000_123_456_789,
                     size: 5, inode: 1, content: [id1, id2]),
            TreeNode(name: Array(repeating: 0x78, count: 255), kind: .file, mode: 0o600, size: 0),
            TreeNode(name: Array("dir".utf8), kind: .directory, mode: 0o1777, subtree: id2),
        ])
    }

    @Test func roundTripKeepsEveryField() throws {
        let tree = try Self.sample()
        #expect(tree.nodes.map(\.name) == tree.nodes.map(\.name).sorted { $0.lexicographicallyPrecedes($1) })
        let decoded = try Tree(decoding: tree.encoded())
        #expect(decoded == tree)
        #expect(decoded.node(named: Array("dir".utf8))?.subtree == Self.id2)
        #expect(decoded.node(named: [0x61, 0x0a, 0xff, 0xfe])?.mode == 0o4755)
        #expect(decoded.node(named: Array("nope".utf8)) == nil)
        // Encoding is deterministic: the same listing gives the same blob (and id).
        #expect(try Tree(nodes: tree.nodes.reversed()).encoded() == tree.encoded())
    }

    @Test func emptyTreeRoundTrips() throws {
        let empty = try Tree(nodes: [])
        #expect(empty.encoded() == Tree.magic + [0, 0, 0, 0])
        #expect(try Tree(decoding: empty.encoded()).nodes.isEmpty)
    }

    @Test(arguments: [[UInt8]("..".utf8), [UInt8](".".utf8), [UInt8]("a/b".utf8), [UInt8]("/".utf8), [0x61, 0x00], [],
                      [UInt8](repeating: 0x61, count: 256)])
    func badNamesAreRefused(name: [UInt8]) throws {
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: name, kind: .file)]) }
        // Built by hand (as an attacker would), the decoder refuses it too.
        let forged = Self.encodeRaw([(name, 1)])
        #expect(throws: TreeError.self) { try Tree(decoding: forged) }
    }

    /// A tree encoded without validation: each entry an empty file of the given kind byte.
    static func encodeRaw(_ entries: [([UInt8], UInt8)], trailer: [UInt8] = []) -> [UInt8] {
        var out = Tree.magic + [0, 0, 0, UInt8(entries.count)]
        for (name, kind) in entries {
            out += [UInt8(name.count >> 8), UInt8(name.count & 0xff)] + name + [kind]
            out += [UInt8](repeating: 0, count: 12) + [0, 0, 0, 0] + [UInt8](repeating: 0, count: 40)
            switch kind {
            case 1: out += [0, 0, 0, 0]
            case 2: out += [UInt8](repeating: 3, count: 32)
            default: out += [0, 1, 0x78]
            }
        }
        return out + trailer
    }

    @Test func duplicateAndUnsortedNamesAreRefused() throws {
        #expect(throws: TreeError.self) { try Tree(decoding: Self.encodeRaw([(Array("a".utf8), 1), (Array("a".utf8), 2)])) }
        #expect(throws: TreeError.self) { try Tree(decoding: Self.encodeRaw([(Array("b".utf8), 1), (Array("a".utf8), 1)])) }
        // A symbolic link and a directory of the same name (to write through the link): refused.
        #expect(throws: TreeError.self) { try Tree(decoding: Self.encodeRaw([(Array("x".utf8), 3), (Array("x".utf8), 2)])) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .file), TreeNode(name: [0x61], kind: .file)]) }
        #expect(try Tree(decoding: Self.encodeRaw([(Array("a".utf8), 1), (Array("b".utf8), 2), (Array("c".utf8), 3)])).nodes.count == 3)
    }

    @Test func truncatedTrailingAndForgedBlobsAreRefused() throws {
        let good = try Self.sample().encoded()
        for cut in [0, 4, 8, 11, 12, 40, good.count - 1] {
            #expect(throws: TreeError.self) { try Tree(decoding: Array(good.prefix(cut))) }
        }
        #expect(throws: TreeError.self) { try Tree(decoding: good + [0]) }
        var badMagic = good; badMagic[0] ^= 1
        #expect(throws: TreeError.self) { try Tree(decoding: badMagic) }
        // Unknown kind.
        #expect(throws: TreeError.self) { try Tree(decoding: Self.encodeRaw([(Array("a".utf8), 9)])) }
        // A huge entry count is refused before allocating.
        var huge = Tree.magic + [0xff, 0xff, 0xff, 0xff]
        huge += [UInt8](repeating: 0, count: 100)
        #expect(throws: TreeError.self) { try Tree(decoding: huge) }
        // A file claiming 2^32-1 blobs.
        var manyBlobs = Self.encodeRaw([(Array("a".utf8), 1)])
        manyBlobs.replaceSubrange(manyBlobs.count - 4..<manyBlobs.count, with: [0xff, 0xff, 0xff, 0xff])
        #expect(throws: TreeError.self) { try Tree(decoding: manyBlobs) }
    }

    @Test func fieldsMustFitTheKind() throws {
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .directory)]) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .symlink)]) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .file, size: 3)]) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .file, size: 1, content: [Self.id1, Self.id2])]) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .file, mode: 0o10644)]) }
        #expect(throws: TreeError.self) { try Tree(nodes: [TreeNode(name: [0x61], kind: .symlink, linkTarget: [0x61, 0])]) }
    }

    @Test func displayEscapesControlAndInvalidBytes() {
        #expect(TreeNode.display([0x61, 0x0a, 0xff]) == "a\\x0a\\xff")
        #expect(TreeNode.display(Array("é\\".utf8)) == "é\\\\")
    }

    @Test func usedBlobsCollectsTreesAndData() async throws {
        let store = MemoryBlobStore()
        let data = Array("hello".utf8)
        let dataID = store.idKey.id(of: data)
        _ = try await store.save(.data, id: dataID, plaintext: data)
        let inner = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("f".utf8), kind: .file, size: 5, content: [dataID])]))
        let outer = try await store.saveTree(try Tree(nodes: [TreeNode(name: Array("d".utf8), kind: .directory, subtree: inner.id),
                                                              TreeNode(name: Array("e".utf8), kind: .directory, subtree: inner.id)]))
        var used = Set<UsedBlob>()
        try await store.usedBlobs(root: outer.id, into: &used)
        #expect(used == [UsedBlob(kind: .tree, id: outer.id), UsedBlob(kind: .tree, id: inner.id), UsedBlob(kind: .data, id: dataID)])
    }
}
