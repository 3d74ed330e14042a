import CofferCloud
import Foundation

extension Moto {
    /// ``createSigningUser(_:name:allowing:)`` for S3: an IAM user whose key may do s3:*.
    public static func createSigningUserS3(_ server: TestServer, name: String = "backup") async throws -> AWSCredentials {
        try await createSigningUser(server, name: name, allowing: "s3")
    }
}
