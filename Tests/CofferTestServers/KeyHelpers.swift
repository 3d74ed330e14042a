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

extension Moto {
    /// On a server started with INITIAL_NO_AUTH_ACTION_COUNT=3: the three unauthenticated calls
    /// make an IAM user, its access key and an inline policy allowing `service:*` (kms, s3);
    /// returns the key. Every call after them has its SigV4 signature checked against this key.
    public static func createSigningUser(_ server: TestServer, name: String = "backup", allowing service: String = "kms") async throws -> AWSCredentials {
        let bootstrap = AWSCredentials(accessKeyID: "anything", secretAccessKey: "anything")
        func iam(_ parameters: [(String, String)]) async throws -> String {
            let (status, body) = try await AWSQueryRequest.post(endpoint: server.endpoint, service: "iam", region: "us-east-1",
                                                                credentials: bootstrap, parameters: parameters + [("Version", "2010-05-08")])
            guard status == 200 else { throw ServerError("IAM \(parameters[0].1) answered \(status): \(body)") }
            return body
        }
        _ = try await iam([("Action", "CreateUser"), ("UserName", name)])
        let made = try await iam([("Action", "CreateAccessKey"), ("UserName", name)])
        _ = try await iam([("Action", "PutUserPolicy"), ("UserName", name), ("PolicyName", service),
                           ("PolicyDocument", #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["\#(service):*"],"Resource":"*"}]}"#)])
        func element(_ tag: String) throws -> String {
            guard let open = made.range(of: "<\(tag)>"), let close = made.range(of: "</\(tag)>") else {
                throw ServerError("CreateAccessKey answered without \(tag): \(made)")
            }
            return String(made[open.upperBound..<close.lowerBound])
        }
        return AWSCredentials(accessKeyID: try element("AccessKeyId"), secretAccessKey: try element("SecretAccessKey"))
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

