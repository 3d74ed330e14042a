import CofferFormat
import CofferKeys
import CofferRepository
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where the PostgreSQL tools are: client tools from PATH first (Debian's wrapper picks the right
/// version), server tools (initdb, pg_ctl) from the newest /usr/lib/postgresql/N/bin first.
public enum PostgresTools {
    static var serverDirectories: [String] {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted(by: >)
        return versions.map { "\(base)/\($0)/bin" }
    }

    public static func client(_ tool: String) throws -> String {
        do { return try ChildProcess.find(tool) } catch { return try ChildProcess.find(tool, in: serverDirectories) }
    }

    public static func server(_ tool: String) throws -> String { try ChildProcess.find(tool, in: serverDirectories) }

    /// The environment for a client tool talking to the user's server: no Coffer secrets, the
    /// user's PG* variables (PGPASSFILE, PGPASSWORD, PGSSLMODE, ...) kept.
    static func userEnvironment() -> [String] { ChildProcess.environment(keeping: ["PG"]) }

    /// psql reading no startup file, quiet, unaligned, tuples only, stopping at the first error.
    static func psql(_ conninfo: String) throws -> [String] {
        [try client("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo]
    }
}

/// Text as hex digits (names go through SQL as `encode(convert_to(name,'UTF8'),'hex')`, so no name can
/// break the line format) and back.
enum HexText {
    static func decode(_ hex: Substring) throws -> String {
        guard let bytes = Hex.decode(String(hex)) else { throw DatabaseError.unexpectedOutput("psql printed \"\(hex.prefix(40))\" where hex text was expected") }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// An open psql session fed through a pipe: statements go in, output comes back up to a marker
/// line. Used to hold a REPEATABLE READ transaction (and its exported snapshot) while pg_dump runs.
final class PsqlSession: @unchecked Sendable {
    private let child: Child
    private let input: Int32
    private let output: Int32
    private var buffer: [UInt8] = []
    private var counter = 0
    /// Whether `input` is still open. `kill()` (another task, when the backup fails) and `run`
    /// may both end the session: the descriptor is closed once, under the lock, and never written
    /// after (a second close, or a write, could hit a descriptor another thread has opened under
    /// the same number since: a test run once closed a number twice here).
    private let inputLock = NSLock()
    private var inputOpen = true
    let name: String

    init(conninfo: String, name: String, environment: [String]) throws {
        self.name = name
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0 else { throw DatabaseError.toolFailed(step: name, status: "no pipe", stderr: "") }
        for fd in inPipe + outPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        do {
            child = try Child(try PostgresTools.psql(conninfo), name: name, environment: environment, stdin: inPipe[0], stdout: outPipe[1])
        } catch {
            (inPipe + outPipe).forEach { close($0) }
            throw error
        }
        close(inPipe[0]); close(outPipe[1])
        input = inPipe[1]
        output = outPipe[0]
    }

    deinit { closeInput(); close(output) }

    private func closeInput() {
        inputLock.withLock {
            if inputOpen { close(input) }
            inputOpen = false
        }
    }

    /// Sends `sql` (statements and psql meta-commands, one or more lines) and returns the lines it
    /// printed. A failing statement ends psql (ON_ERROR_STOP): its error is thrown.
    func run(_ sql: String) async throws -> [String] {
        counter += 1
        let marker = "__coffer_done_\(counter)_\(UInt64.random(in: 0...UInt64.max))__"
        let text = sql + "\n\\echo \(marker)\n"
        // Written under the lock: `kill()` stops psql first (a blocked write then fails with EPIPE),
        // then waits for the lock to close the descriptor.
        var ok = inputLock.withLock { inputOpen }
        if ok {
            inputLock.withLock {
                guard inputOpen else { ok = false; return }
                text.utf8CString.withUnsafeBytes { raw in
                    var done = 0
                    let total = raw.count - 1
                    while done < total {
                        let n = write(input, raw.baseAddress! + done, total - done)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { ok = false; break }
                        done += n
                    }
                }
            }
        }
        var lines: [String] = []
        while ok {
            guard let line = readLine() else { ok = false; break }
            if line == marker { return lines }
            lines.append(line)
        }
        closeInput()
        let status = await child.wait()
        throw DatabaseError.toolFailed(step: name, status: ChildProcess.describe(status), stderr: child.stderrText)
    }

    private func readLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
    }

    /// Ends the session (its transaction is committed by psql's end of input) and checks its status.
    func finish() async throws {
        closeInput()
        try await child.check()
    }

    func kill() {
        child.terminate()
        closeInput()
        Task { _ = await child.wait() }
    }
}

extension PostgresTools {
    /// SQL printing one line per user table of the current database: hex schema|hex name|exact
    /// row count (tables and partitioned tables; the system schemas left out).
    static let countRowsSQL = """
    SELECT format('SELECT %L, %L, count(*) FROM %I.%I', encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex'), n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' ORDER BY n.nspname, c.relname \\gexec
    """

    static func parseCounts(_ lines: [String]) throws -> [DatabaseInfo.Table] {
        try lines.filter { !$0.isEmpty }.map { line in
            let parts = line.split(separator: "|", omittingEmptySubsequences: false)
            guard parts.count == 3, let rows = Int64(parts[2]) else {
                throw DatabaseError.unexpectedOutput("psql printed an unexpected row count line")
            }
            return DatabaseInfo.Table(schema: try HexText.decode(parts[0]), name: try HexText.decode(parts[1]), rows: rows)
        }.sorted { ($0.schema, $0.name) < ($1.schema, $1.name) }
    }

    /// The databases of a server (not templates, connectable ones), with their sizes, and its version.
    static func listDatabases(conninfo: String, environment: [String]) async throws -> (version: String, databases: [(String, Int64)]) {
        let sql = "SELECT 'v|' || current_setting('server_version') UNION ALL (SELECT 'd|' || encode(convert_to(datname, 'UTF8'), 'hex') || '|' || pg_database_size(oid) FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname)"
        let out = try await ChildProcess.checked(try psql(conninfo) + ["-c", sql], name: "psql (listing the databases)", environment: environment)
        var version = ""
        var databases: [(String, Int64)] = []
        for line in out.text.split(separator: "\n") {
            let parts = line.split(separator: "|", omittingEmptySubsequences: false)
            if parts.first == "v" { version = parts.dropFirst().joined(separator: "|") }
            else if parts.count == 3, parts[0] == "d" { databases.append((try HexText.decode(parts[1]), Int64(parts[2]) ?? 0)) }
        }
        guard !version.isEmpty else { throw DatabaseError.unexpectedOutput("psql did not print the server version") }
        return (version, databases)
    }
}

/// `pg_dump -Fc` of one database, consistent with the row counts recorded for it: a psql session
/// holds a REPEATABLE READ transaction, exports its snapshot (`pg_export_snapshot()`), pg_dump runs
/// with `--snapshot=` that snapshot while the session counts every table's rows in it; the session
/// ends after pg_dump and the counting did.
final class PostgresDumpProducer: StreamProducer, @unchecked Sendable {
    let database: String
    let conninfo: String
    let environment: [String]
    private let lock = NSLock()
    private var counted: [DatabaseInfo.Table]?

    init(database: String, conninfo: String, environment: [String]) {
        self.database = database; self.conninfo = conninfo; self.environment = environment
    }

    var tables: [DatabaseInfo.Table] { lock.withLock { counted ?? [] } }

    func start(writingTo fd: Int32) async throws -> any RunningStream {
        let session = try PsqlSession(conninfo: conninfo, name: "psql (database \(database))", environment: environment)
        do {
            let snapshot = try await session.run("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();")
            guard let id = snapshot.last, !id.isEmpty, id.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
                throw DatabaseError.unexpectedOutput("pg_export_snapshot() printed no snapshot id")
            }
            let dump = try Child([try PostgresTools.client("pg_dump"), "-Fc", "--snapshot=\(id)", "-d", conninfo],
                                 name: "pg_dump (database \(database))", environment: environment, stdout: fd)
            // The rows are counted in the exporting transaction while pg_dump runs in the same
            // snapshot: the counts match the dump, and their table scans overlap the dump's.
            let counting = Task { [self] in
                let tables = try PostgresTools.parseCounts(try await session.run(PostgresTools.countRowsSQL))
                lock.withLock { counted = tables }
            }
            return PostgresDumpStream(dump: dump, session: session, counting: counting)
        } catch {
            session.kill()
            throw error
        }
    }
}

struct PostgresDumpStream: RunningStream {
    let dump: Child
    let session: PsqlSession
    let counting: Task<Void, Error>
    func finish() async throws {
        do { try await dump.check() } catch {
            counting.cancel()
            session.kill()
            _ = await counting.result
            throw error
        }
        do { try await counting.value } catch {
            session.kill()
            throw error
        }
        try await session.finish()
    }
    func cancel() {
        counting.cancel()
        dump.terminate()
        Task { _ = await dump.wait() }
        session.kill()
    }
}

/// `coffer backup --postgres`: one snapshot holding `/postgres/globals.sql` (pg_dumpall
/// --globals-only) and `/postgres/NAME.dump` (pg_dump -Fc) per database, with ``DatabaseInfo``.
public enum PostgresBackup {
    /// The path of a database's dump in the snapshot: its name when that is a valid file name, else
    /// its hex (the real name is in ``DatabaseInfo``).
    static func file(for database: String) -> String {
        let plain = database + ".dump"
        if TreeNode.invalidNameReason(Array(plain.utf8)) == nil, !database.hasPrefix(".") { return "/postgres/" + plain }
        return "/postgres/db-" + Hex.encode(Array(database.utf8)) + ".dump"
    }

    /// Backs up the server `conninfo` connects to: `databases` (all non-template databases when
    /// empty) and the global objects. Fails, with the failing tool's stderr, if any tool fails.
    public static func backup(conninfo: String, databases: [String], archiver: Archiver) async throws -> ArchiveResult {
        let connection = try PostgresConnInfo(parsing: conninfo)
        let environment = PostgresTools.userEnvironment()
        let listing = connection.dbname == nil ? connection.string(database: "postgres") : connection.string()
        let (version, available) = try await PostgresTools.listDatabases(conninfo: listing, environment: environment)
        var chosen: [(String, Int64)] = []
        if databases.isEmpty {
            chosen = available
        } else {
            for name in databases {
                guard let found = available.first(where: { $0.0 == name }) else {
                    throw DatabaseError.invalidRequest("the server has no database \"\(name)\" that can be backed up (not a template, connections allowed)")
                }
                if !chosen.contains(where: { $0.0 == name }) { chosen.append(found) }
            }
        }
        guard !chosen.isEmpty else { throw DatabaseError.invalidRequest("the server has no database to back up") }
        var specs = [StreamSpec(path: "/postgres/globals.sql",
                                producer: CommandStreamProducer(argv: [try PostgresTools.client("pg_dumpall"), "--globals-only", "-d", listing],
                                                                name: "pg_dumpall --globals-only", environment: environment))]
        var producers: [(String, Int64, String, PostgresDumpProducer)] = []
        for (name, size) in chosen {
            let producer = PostgresDumpProducer(database: name, conninfo: connection.string(database: name), environment: environment)
            let path = file(for: name)
            producers.append((name, size, path, producer))
            specs.append(StreamSpec(path: path, producer: producer))
        }
        var result = try await archiver.backup(streams: specs)
        result.info.database = DatabaseInfo(engine: .postgresql, method: "pg_dump", serverVersion: version,
                                            databases: producers.map { .init(name: $0.0, file: $0.2, sizeBytes: $0.1, tables: $0.3.tables) })
        return result
    }
}
