import Foundation

/// Where AWS credentials come from for AUTH=implicit, in the order of the AWS SDKs:
/// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN; then the profile
/// (AWS_PROFILE, else "default") in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE,
/// else ~/.aws/credentials) and then in the config file (AWS_CONFIG_FILE, else ~/.aws/config,
/// where it is spelt `[profile NAME]`).
public enum AWSCredentialChain {
    public static func resolve(environment: [String: String] = ProcessInfo.processInfo.environment,
                               home: String? = nil) throws(KeyServiceError) -> AWSCredentials {
        if let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty {
            guard let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
                throw KeyServiceError(.noCredentials, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
            }
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token,
                                  source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        }
        let home = home ?? environment["HOME"] ?? NSHomeDirectory()
        let explicitProfile = environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 }
        let profile = explicitProfile ?? "default"
        let credentialsFile = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        let configFile = environment["AWS_CONFIG_FILE"] ?? "\(home)/.aws/config"
        var looked: [String] = []
        for (path, section) in [(credentialsFile, profile), (configFile, profile == "default" ? "default" : "profile \(profile)")] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            looked.append(path)
            guard let values = INIFile.parse(text)[section] else { continue }
            guard let id = values["aws_access_key_id"], !id.isEmpty else { continue }
            guard let secret = values["aws_secret_access_key"], !secret.isEmpty else {
                throw KeyServiceError(.noCredentials, "profile \(profile) in \(path) has aws_access_key_id but no aws_secret_access_key")
            }
            return AWSCredentials(accessKeyID: id, secretAccessKey: secret,
                                  sessionToken: values["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 },
                                  source: "profile \(profile) in \(path)")
        }
        let files = looked.isEmpty ? "no \(credentialsFile) or \(configFile)" : "profile \(profile) not in \(looked.joined(separator: " or "))"
        throw KeyServiceError(.noCredentials,
                       "no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset and \(files)\(explicitProfile == nil ? " (AWS_PROFILE unset)" : "")")
    }
}

/// The Vault token: VAULT_TOKEN, else ~/.vault-token (as the vault CLI stores it). Never a URI.
public enum VaultTokenSource {
    public static func resolve(environment: [String: String] = ProcessInfo.processInfo.environment,
                               home: String? = nil) throws(KeyServiceError) -> String {
        if let token = environment["VAULT_TOKEN"], !token.isEmpty { return token }
        let home = home ?? environment["HOME"] ?? NSHomeDirectory()
        let path = "\(home)/.vault-token"
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !token.isEmpty { return token }
            throw KeyServiceError(.noCredentials, "\(path) is empty")
        }
        throw KeyServiceError(.noCredentials, "no Vault token: VAULT_TOKEN is unset and there is no \(path)")
    }
}

/// The INI dialect of ~/.aws/credentials and ~/.aws/config: `[section]`, `key = value`,
/// `#` and `;` comments. Nested (indented) sub-sections of the config file are skipped.
enum INIFile {
    static func parse(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            if rawLine.first == " " || rawLine.first == "\t" { continue }
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                current = name
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            sections[current]?[key] = value
        }
        return sections
    }
}
