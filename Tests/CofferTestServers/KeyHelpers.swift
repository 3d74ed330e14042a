import CofferCloud
import Foundation

/// Helpers that set up keys on a real moto_server.
public enum Moto {
    public static let environment = ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"]

    public static func uri(_ key: String, _ server: TestServer, region: String = "us-east-1", extra: String = "") throws -> AWSKeyURI {
        guard case .aws(let uri) = try KMSKeyURI.parse("aws:///\(key)?REGION=\(region)&AWS_ENDPOINT=\(server.endpoint)\(extra)") else {
            throw ServerError("not an AWS URI")
        }
        return uri
    }

    public static func client(_ key: String, _ server: TestServer, region: String = "us-east-1",
                       environment: [String: String] = Moto.environment, attempts: Int = 2) throws -> AWSKMSClient {
        try AWSKMSClient(key: try uri(key, server, region: region), environment: environment,
                         policy: RetryPolicy(attempts: attempts, baseDelay: 0.01, maxDelay: 0.05))
    }

    /// A new symmetric key in `region` and an alias for it; returns the key's ARN.
    public static func createKey(_ server: TestServer, region: String = "us-east-1", alias: String? = nil,
                          environment: [String: String] = Moto.environment) async throws -> String {
        let admin = try client("unused", server, region: region, environment: environment)
        let made = try await admin.rawCall("CreateKey", ["Description": "coffer test"])
        guard let arn = made["KeyMetadata.Arn"] else { throw ServerError("CreateKey answered without an ARN: \(made)") }
        if let alias {
            _ = try await admin.rawCall("CreateAlias", ["AliasName": "alias/\(alias)", "TargetKeyId": arn])
        }
        return arn
    }
}

/// Helpers for a real `bao server -dev`.
public enum Bao {
    public static func uri(_ key: String, _ server: TestServer) throws -> VaultKeyURI {
        guard case .vault(let uri) = try KMSKeyURI.parse("vault:///\(key)?ADDR=\(server.endpoint)") else {
            throw ServerError("not a Vault URI")
        }
        return uri
    }

    public static func client(_ key: String, _ server: TestServer, token: String = "root") throws -> VaultTransitClient {
        try VaultTransitClient(key: try uri(key, server), environment: ["VAULT_TOKEN": token],
                               policy: RetryPolicy(attempts: 2, baseDelay: 0.01, maxDelay: 0.05))
    }

    /// Mounts Transit (once per server) and makes an AES-256-GCM key.
    public static func createKey(_ server: TestServer, _ name: String, mount: Bool = true) async throws {
        let admin = try client(name, server)
        if mount { _ = try await admin.raw("POST", "sys/mounts/transit", ["type": "transit"]) }
        _ = try await admin.raw("POST", "transit/keys/\(name)", ["type": "aes256-gcm96"])
    }
}

