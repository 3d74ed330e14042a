import ArgumentParser
import CofferFormat
import CofferRepository
import Foundation

struct RepoLs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List the files of a snapshot (below PATH, if given).",
        discussion: "Reads only the snapshot's trees, never file content: type, permission bits, size, modification time and path of every file and directory, or with --json one object per line.")

    @OptionGroup var repo: RepoOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var signers: SnapshotSignerOptions

    @Flag(name: [.short, .customLong("long")], help: "Show mode, owner, size and time.")
    var long = false

    @Argument(help: ArgumentHelp("A snapshot: id, unique prefix, or 'latest'.", valueName: "snapshot"))
    var snapshot: String

    @Argument(help: ArgumentHelp("A path in the snapshot.", valueName: "path"))
    var path: String?

    struct NodeJSON: Encodable {
        let name: String
        let type: String
        let path: String
        let uid: UInt32
        let gid: UInt32
        let size: UInt64?
        let mode: UInt32
        let mtime: Date
        /// Names of the recorded extended attributes (absent when none; values are not shown).
        let xattrs: [String]?
        /// A file's link count when it had hard links at backup time (absent otherwise).
        let links: UInt32?
        let struct_type = "node"
    }

    func run() throws {
        try Runtime.reporting {
            let (repository, chosen, _) = try openSnapshots("ls", repo: repo, keys: keys, signers: signers, references: [snapshot])
            let record = chosen[0]
            let start = path.map(pathComponents) ?? []
            let (json, long) = (repo.json, self.long)
            if json { try printJSON(SnapshotJSON(record)) } else {
                TreeFormat.out("snapshot \(record.shortID) of \(DisplayText.escape(record.info.paths.joined(separator: " "))) at \(TreeFormat.time.string(from: record.info.time)):")
            }
            try runBlocking {
                try await TreeWalk.list(store: repository.store, root: record.info.tree, start: start) { path, node in
                    let shown = TreeNode.display(path)
                    if json {
                        let type = node.kind == .file ? "file" : node.kind == .directory ? "dir" : "symlink"
                        try printJSON(NodeJSON(name: TreeNode.display(node.name), type: type, path: shown, uid: node.uid, gid: node.gid,
                                               size: node.kind == .file ? node.size : nil, mode: node.mode,
                                               mtime: Date(timeIntervalSince1970: Double(node.mtimeNanos) / 1e9),
                                               xattrs: node.xattrs.isEmpty ? nil : node.xattrs.map { TreeNode.display($0.name) },
                                               links: node.links == 0 ? nil : node.links))
                    } else if long {
                        let kind = node.kind == .directory ? "d" : node.kind == .symlink ? "l" : "-"
                        let mode = kind + RepoLs.permissions(node.mode)
                        let owner = node.user.isEmpty ? "\(node.uid)" : TreeNode.display(node.user)
                        let group = node.group.isEmpty ? "\(node.gid)" : TreeNode.display(node.group)
                        let time = TreeFormat.time.string(from: Date(timeIntervalSince1970: Double(node.mtimeNanos) / 1e9))
                        var line = "\(mode) \(owner) \(group) \(String(node.size).leftPadded(10)) \(time) \(shown)"
                        if node.kind == .symlink { line += " -> \(TreeNode.display(node.linkTarget))" }
                        TreeFormat.out(line)
                    } else {
                        TreeFormat.out(shown)
                    }
                }
            }
        }
    }

    static func permissions(_ mode: UInt32) -> String {
        var out = ""
        for (i, c) in "rwxrwxrwx".enumerated() { out.append(mode & (0o400 >> UInt32(i)) != 0 ? c : "-") }
        return out
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: " ", count: max(0, n - count)) + self }
}
