import CofferFormat
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Restoring PostgreSQL snapshots: each file goes from the repository (``Restorer/dump(root:path:to:)``,
/// every chunk authenticated) through a pipe into `pg_restore` or `psql`; no plaintext file.
/// `pg_restore -j` needs a seekable file, so one database is restored by one pg_restore; parallelism
/// is across databases (``RestoreDBOptions/jobs``).
enum PostgresRestore {
    /// Streams the snapshot file `path` of `root` into `argv`'s standard input. A repository error
    /// (damaged or missing data) is thrown as such; a tool failure with the tool's stderr.
    static func pipe(path: String, root: BlobID, store: any BlobStore, into argv: [String], name: String,
                     environment: [String]) async throws -> Child {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw DatabaseError.toolFailed(step: name, status: "no pipe", stderr: "") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let child: Child
        do {
            child = try Child(argv, name: name, environment: environment, stdin: fds[0], stdout: nil)
        } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[0])
        let writeEnd = fds[1]
        let components = path.split(separator: "/").map { Array($0.utf8) }
        do {
            _ = try await Restorer(store: store).dump(root: root, path: components, to: writeEnd)
        } catch let error as TreeError {
            close(writeEnd)
            if case .writeFailed = error {
                // The tool stopped reading: its own error says why.
                try await child.check()
            }
            child.terminate()
            _ = await child.wait()
            throw error
        } catch {
            close(writeEnd)
            child.terminate()
            _ = await child.wait()
            throw error
        }
        close(writeEnd)
        try await child.check()
        return child
    }

    /// Restores `globals.sql` with psql; statements that fail (roles that exist already) do not stop
    /// it. Returns the error lines psql printed.
    static func globals(info: SnapshotInfo, store: any BlobStore, conninfo: String, environment: [String]) async throws -> [String] {
        let argv = [try PostgresTools.client("psql"), "-X", "-q", "-d", conninfo, "-f", "-"]
        let child = try await pipe(path: "/postgres/globals.sql", root: info.tree, store: store, into: argv,
                                   name: "psql (global objects)", environment: environment)
        return child.stderrText.split(separator: "\n").filter { $0.contains("ERROR") }.map(String.init)
    }

    /// The databases of a snapshot, only `names` when not empty (unknown names refused).
    static func select(_ info: DatabaseInfo, _ names: [String]) throws -> [DatabaseInfo.Database] {
        if names.isEmpty { return info.databases }
        return try names.map { name in
            guard let db = info.databases.first(where: { $0.name == name }) else {
                throw DatabaseError.invalidRequest("the snapshot holds no database \"\(name)\" (it has: \(info.databases.map(\.name).joined(separator: ", ")))")
            }
            return db
        }
    }

    /// The file of a database, which must lie below /postgres/ (the snapshot is authenticated, but a
    /// path outside what PostgreSQL backups write is not followed).
    static func file(of db: DatabaseInfo.Database) throws -> String {
        guard let file = db.file, file.hasPrefix("/postgres/"), !file.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            throw DatabaseError.unsupported("the snapshot records no dump file for database \"\(db.name)\"")
        }
        return file
    }

    static func restoreDB(chain: [(id: String, info: SnapshotInfo)], from store: any BlobStore,
                          options: RestoreDBOptions) async throws -> [String] {
        guard let info = chain.last?.info, let database = info.database else { throw DatabaseError.unsupported("no database snapshot given") }
        guard let targetText = options.target else { throw DatabaseError.invalidRequest("no target server given") }
        let target = try PostgresConnInfo(parsing: targetText)
        let environment = PostgresTools.userEnvironment()
        let selected = try select(database, options.databases)
        let maintenance = target.dbname == nil ? target.string(database: "postgres") : target.string()
        var lines: [String] = []
        if options.globals {
            let errors = try await globals(info: info, store: store, conninfo: maintenance, environment: environment)
            lines.append("global objects restored" + (errors.isEmpty ? "" : " (\(counted(errors.count, "statement")) failed: \(errors.prefix(3).joined(separator: "; ")))"))
            options.log?(lines.last!)
        }
        let restoreTool = try PostgresTools.client("pg_restore")
        let jobs = max(1, options.jobs)
        let results: [(Int, String)] = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var out: [(Int, String)] = []
            for (index, db) in selected.enumerated() {
                if index >= jobs, let done = try await group.next() { out.append(done); options.log?(done.1) }
                let path = try file(of: db)
                var argv = [restoreTool, "--exit-on-error"]
                if options.noOwner { argv.append("--no-owner") }
                let into: String
                if options.create {
                    argv += ["--create", "-d", maintenance]
                    into = db.name
                } else {
                    into = (selected.count == 1 ? target.dbname : nil) ?? db.name
                    argv += ["-d", target.string(database: into)]
                }
                let args = argv
                group.addTask {
                    _ = try await pipe(path: path, root: info.tree, store: store, into: args,
                                       name: "pg_restore (database \(db.name))", environment: environment)
                    return (index, "database \(db.name) restored into \(into)\(options.create ? " (created)" : "")")
                }
            }
            for try await done in group { out.append(done); options.log?(done.1) }
            return out
        }
        return lines + results.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Restore test: global objects (failures ignored), then every database with `pg_restore
    /// --create` (the "postgres" database, which exists, without), stopping at the first error.
    static func restoreThrowaway(info: SnapshotInfo, store: any BlobStore, server: PostgresThrowaway) async throws {
        guard let database = info.database else { throw DatabaseError.unsupported("not a database snapshot") }
        let environment = server.clientEnvironment
        _ = try await globals(info: info, store: store, conninfo: server.conninfo("postgres"), environment: environment)
        let tool = try PostgresTools.client("pg_restore")
        for db in database.databases {
            let path = try file(of: db)
            var argv = [tool, "--exit-on-error", "--no-tablespaces"]
            if db.name == "postgres" { argv += ["-d", server.conninfo("postgres")] }
            else { argv += ["--create", "-d", server.conninfo("postgres")] }
            _ = try await pipe(path: path, root: info.tree, store: store, into: argv,
                               name: "pg_restore (database \(db.name))", environment: environment)
        }
    }
}

func counted(_ n: Int, _ singular: String) -> String { "\(n) \(n == 1 ? singular : singular + "s")" }
