import CofferCloud
import Foundation

extension Moto {
    /// On a server started with INITIAL_NO_AUTH_ACTION_COUNT=3: the three unauthenticated calls
    /// make an IAM user, its access key and an inline policy allowing s3:*; returns the key. Every
    /// call after them has its SigV4 signature checked against this key.
    public static func createSigningUserS3(_ server: TestServer, name: String = "backup") async throws -> AWSCredentials {
        let bootstrap = AWSCredentials(accessKeyID: "anything", secretAccessKey: "anything")
        func iam(_ parameters: [(String, String)]) async throws -> String {
            let (status, body) = try await AWSQueryRequest.post(endpoint: server.endpoint, service: "iam", region: "us-east-1",
                                                                credentials: bootstrap, parameters: parameters + [("Version", "2010-05-08")])
            guard status == 200 else { throw ServerError("IAM \(parameters[0].1) answered \(status): \(body)") }
            return body
        }
        _ = try await iam([("Action", "CreateUser"), ("UserName", name)])
        let made = try await iam([("Action", "CreateAccessKey"), ("UserName", name)])
        _ = try await iam([("Action", "PutUserPolicy"), ("UserName", name), ("PolicyName", "s3"),
                           ("PolicyDocument", #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":"*"}]}"#)])
        func element(_ tag: String) throws -> String {
            guard let open = made.range(of: "<\(tag)>"), let close = made.range(of: "</\(tag)>") else {
                throw ServerError("CreateAccessKey answered without \(tag): \(made)")
            }
            return String(made[open.upperBound..<close.lowerBound])
        }
        return AWSCredentials(accessKeyID: try element("AccessKeyId"), secretAccessKey: try element("SecretAccessKey"))
    }
}
