import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The deploy examples of docs/DATABASES.md ("MariaDB"): checked with the checkers this machine
/// has (systemd-analyze; a YAML parser when python3 has one), plus the fields they rely on.
@Suite struct RepoMariaDBDeployTests {
    /// The repository's root (this file is Tests/CofferCLITests/…).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func text(_ path: String) throws -> String { try String(contentsOfFile: Self.root + "/" + path, encoding: .utf8) }

    /// `Key=value` lines of one section of a unit file.
    func section(_ unit: String, _ name: String) -> [String: [String]] {
        var out: [String: [String]] = [:]
        var current = ""
        for raw in unit.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("[") { current = line; continue }
            guard current == "[\(name)]", let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq]), default: []].append(String(line[line.index(after: eq)...]))
        }
        return out
    }

    @Test func systemdUnitsVerifyAndRunTheDocumentedCommands() throws {
        let scratch = Scratch()
        for name in ["full", "incremental"] {
            let service = try text("deploy/systemd/coffer-mariadb-\(name).service")
            let timer = try text("deploy/systemd/coffer-mariadb-\(name).timer")
            let exec = try #require(section(service, "Service")["ExecStart"]?.first)
            let args = exec.split(separator: " ").map(String.init)
            #expect(args.first == "/usr/local/bin/coffer")
            #expect(Array(args.dropFirst().prefix(1)) == ["backup"])
            #expect(args.contains("--mariadb"))
            // The option file is the only way a password reaches the tools.
            #expect(args.contains("--mariadb-defaults-file"))
            #expect(!exec.lowercased().contains("password"))
            #expect(args.contains("--mariadb-incremental") == (name == "incremental"))
            #expect(section(service, "Service")["Type"] == ["oneshot"])
            #expect(section(service, "Service")["UMask"] == ["0077"])
            #expect(section(timer, "Timer")["Persistent"] == ["true"])
            #expect(section(timer, "Install")["WantedBy"] == ["timers.target"])

            // The flags parse: the same command with the built binary stops only at the missing
            // key file (exit 64 would mean a flag coffer does not know).
            let r = try coffer(Array(args.dropFirst()).map { $0 == "/etc/coffer/repository.key" ? scratch.file("none.key") : $0 }
                                 .map { $0 == "/etc/coffer/mariadb.cnf" ? "/dev/null" : $0 },
                               environment: ["COFFER_REPOSITORY": scratch.file("repo")])
            #expect(!r.stderr.contains("Unknown option"), "\(r.stderr)")

            guard let analyze = (["/usr/bin/systemd-analyze", "/bin/systemd-analyze"] as [String]).first(where: { access($0, X_OK) == 0 }) else { continue }
            // systemd-analyze checks that ExecStart exists: point it at the built binary.
            let dir = scratch.file("units-\(name)")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let servicePath = "\(dir)/coffer-mariadb-\(name).service"
            try service.replacingOccurrences(of: "/usr/local/bin/coffer", with: cofferBinary).write(toFile: servicePath, atomically: true, encoding: .utf8)
            try timer.write(toFile: "\(dir)/coffer-mariadb-\(name).timer", atomically: true, encoding: .utf8)
            let verify = try spawn([analyze, "verify", "--man=no", servicePath, "\(dir)/coffer-mariadb-\(name).timer"], environment: mariaDBTestEnvironment, stdin: nil)
            #expect(verify.status == 0, "systemd-analyze verify: \(verify.stderr)")
            #expect(!verify.stderr.contains("Unknown"), "\(verify.stderr)")
        }
    }

    @Test func kubernetesCronJobHasTheFieldsItReliesOn() throws {
        let manifest = try text("deploy/kubernetes/coffer-mariadb-backup-cronjob.yaml")
        #expect(!manifest.contains("\t"), "YAML must not be indented with tabs")
        // Parsed by a real YAML parser when python3 has one (PyYAML).
        let script = "import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
        let python = (["/usr/bin/python3", "/usr/local/bin/python3"] as [String]).first { access($0, X_OK) == 0 }
        var documents: [[String: Any]]?
        if let python {
            let r = try spawn([python, "-c", script, Self.root + "/deploy/kubernetes/coffer-mariadb-backup-cronjob.yaml"], environment: mariaDBTestEnvironment, stdin: nil)
            if r.status == 0 {
                documents = try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [[String: Any]]
            } else {
                #expect(r.stderr.contains("No module named"), "the YAML does not parse: \(r.stderr)")
            }
        }
        guard let documents else {
            // No YAML parser here: the key lines at least.
            for line in ["kind: CronJob", "apiVersion: batch/v1", "concurrencyPolicy: Forbid", "- --mariadb", "readOnly: true"] {
                #expect(manifest.contains(line), "missing: \(line)")
            }
            return
        }
        #expect(documents.map { $0["kind"] as? String } == ["Secret", "Secret", "CronJob"])
        let cron = documents[2]
        #expect(cron["apiVersion"] as? String == "batch/v1")
        let spec = try #require(cron["spec"] as? [String: Any])
        #expect((spec["schedule"] as? String)?.split(separator: " ").count == 5)
        #expect(spec["concurrencyPolicy"] as? String == "Forbid")
        let podSpec = try #require(((((spec["jobTemplate"] as? [String: Any])?["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"]) as? [String: Any])
        #expect(podSpec["restartPolicy"] as? String == "Never")
        let container = try #require((podSpec["containers"] as? [[String: Any]])?.first)
        let command = try #require(container["command"] as? [String])
        #expect(command.prefix(2) == ["/usr/local/bin/coffer", "backup"])
        #expect(command.contains("--mariadb") && command.contains("--mariadb-defaults-file"))
        // Secrets are files, never environment variables.
        let env = (container["env"] as? [[String: Any]]) ?? []
        #expect(!env.contains { $0["valueFrom"] != nil })
        #expect(!env.contains { ($0["name"] as? String).map { $0.contains("PASSWORD") || $0.contains("KEY") } ?? false })
        // Every file the command names is mounted; the data volume read-only.
        let mounts = (container["volumeMounts"] as? [[String: Any]]) ?? []
        let mountPaths = mounts.compactMap { $0["mountPath"] as? String }
        for file in command where file.hasPrefix("/etc/coffer/") {
            #expect(mountPaths.contains { file.hasPrefix($0 + "/") }, "\(file) is not mounted")
        }
        let data = try #require(mounts.first { $0["mountPath"] as? String == "/var/lib/mysql" })
        #expect(data["readOnly"] as? Bool == true)
        let volumes = (podSpec["volumes"] as? [[String: Any]]) ?? []
        for mount in mounts {
            #expect(volumes.contains { $0["name"] as? String == mount["name"] as? String }, "volume \(mount["name"] ?? "?") is not defined")
        }
        for volume in volumes {
            if let secret = volume["secret"] as? [String: Any] {
                let name = secret["secretName"] as? String
                #expect(documents.prefix(2).contains { ($0["metadata"] as? [String: Any])?["name"] as? String == name })
                // 0440 (YAML reads 0440 as octal: 288); readable by the fsGroup, not by others.
                #expect(secret["defaultMode"] as? Int == 0o440)
            }
        }
        let security = try #require(podSpec["securityContext"] as? [String: Any])
        #expect(security["runAsNonRoot"] as? Bool == true)
        #expect(security["fsGroup"] as? Int == security["runAsGroup"] as? Int)
    }
}
