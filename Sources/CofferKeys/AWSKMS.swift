import CofferCloud
import CofferFormat
import Foundation

/// The `aws-kms` stanza (docs/FORMAT.md, "KMS stanzas"): the file key wrapped by an AWS KMS key
/// that never leaves the service. The stanza records where to find that key again, never a secret:
///
/// ```
/// -> aws-kms REGION KEY_ARN WRAP_ID [ENDPOINT]
/// body = the CiphertextBlob of KMS Encrypt(file key, EncryptionContext)
/// ```
/// The encryption context `{"coffer-format": "v1", "coffer-wrap-id": WRAP_ID}` (``KMSStanza``) is
/// bound to the blob by KMS and shows up in its audit log. Wrapping and unwrapping go through
/// ``KMSRecipient`` and ``KMSIdentity``, which serve both key services.
public enum AWSKMSStanza: StanzaKind {
    public static let stanzaType = "aws-kms"
    public static let stanzaTypes = [stanzaType]

    /// A parsed stanza: every field checked for what it may hold.
    struct Fields {
        var region: String, keyARN: String, wrapID: String, endpoint: String?
    }

    /// Every field is checked before anything is built from it: a header is attacker-controlled
    /// until its MAC is checked, and these fields choose where a request goes (docs/KEYS.md,
    /// "Where KMS credentials go").
    static func parse(_ stanza: Stanza) throws -> Fields {
        func bad(_ reason: String) -> CofferError { .malformedStanza(type: stanza.type, reason: reason) }
        guard (3...4).contains(stanza.arguments.count) else { throw bad("expected REGION KEY_ARN WRAP_ID [ENDPOINT]") }
        let region = stanza.arguments[0], arn = stanza.arguments[1]
        guard HTTPEndpoint.isAWSRegion(region) else { throw bad("REGION is not a region name such as us-east-1") }
        guard KeyURIFields.isKeyARN(arn, region: region) else {
            throw bad("KEY_ARN is not arn:PARTITION:kms:\(region):ACCOUNT:key/ID")
        }
        try KMSStanza.checkWrapID(stanza.arguments[2], stanza: stanza)
        guard !stanza.body.isEmpty else { throw bad("empty ciphertext blob") }
        let endpoint = stanza.arguments.count == 4 ? stanza.arguments[3] : nil
        if let endpoint {
            do { _ = try HTTPEndpoint(parsing: endpoint) } catch { throw bad("ENDPOINT \(error)") }
        }
        return Fields(region: region, keyARN: arn, wrapID: stanza.arguments[2], endpoint: endpoint)
    }

    public static func describe(_ stanza: Stanza) -> String {
        guard let fields = try? parse(stanza) else { return "a '\(stanza.type)' key" }
        return "AWS KMS key \(fields.keyARN) (\(fields.region))"
    }

    /// The key id names the key ARN.
    public static func keyID(of stanza: Stanza) -> String? {
        guard let fields = try? parse(stanza) else { return nil }
        return KMSStanza.keyID(type: stanzaType, name: fields.keyARN)
    }

    static func uri(of stanza: Stanza) -> String? {
        guard let fields = try? parse(stanza) else { return nil }
        return "aws-kms:///\(fields.keyARN)?REGION=\(fields.region)" + (fields.endpoint.map { "&AWS_ENDPOINT=\($0)" } ?? "")
    }

    static func wrap(_ fileKey: [UInt8], key: AWSKeyURI, environment: [String: String]) async throws(KeyServiceError) -> Stanza {
        let wrapID = KMSStanza.newWrapID()
        let client = try AWSKMSClient(key: key, environment: environment)
        let sealed = try await client.encrypt(fileKey, context: KMSStanza.context(wrapID: wrapID))
        var arguments = [key.region, sealed.keyARN, wrapID]
        if let endpoint = key.endpoint { arguments.append(endpoint.description) }
        return Stanza(type: stanzaType, arguments: arguments, body: sealed.ciphertext)
    }

    static func unwrap(_ stanza: Stanza, _ fields: Fields, client: AWSKMSClient) async throws(KeyServiceError) -> [UInt8] {
        try await client.decrypt(stanza.body, context: KMSStanza.context(wrapID: fields.wrapID), keyID: fields.keyARN)
    }

    /// The client for a stanza. Without URIs, it is built from the stanza's typed fields (never
    /// from a URI pasted together from them), and only for an address the user gave: the ENDPOINT
    /// must be AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL or the region's own https://kms.REGION.amazonaws.com.
    static func client(for fields: Fields, uris: [KMSKeyURI], environment: [String: String]) throws -> KMSIdentity.ClientLookup {
        if uris.isEmpty {
            let official = HTTPEndpoint.awsKMS(region: fields.region)
            let given = try userEndpoints(environment)
            let target: HTTPEndpoint
            if let endpoint = fields.endpoint {
                let recorded = try HTTPEndpoint(parsing: endpoint)
                guard recorded == official || given.contains(recorded) else {
                    return .failed("not tried: credentials are sent only to an endpoint you gave (AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, a KMS URI's AWS_ENDPOINT) or to \(official), and this stanza names \(recorded); set AWS_ENDPOINT_URL_KMS=\(recorded) or give its KMS URI to use it")
                }
                target = recorded
            } else {
                target = given.first ?? official
            }
            let key = try AWSKeyURI(keyARN: fields.keyARN, region: fields.region, endpoint: target == official ? nil : target)
            return .found(.aws(try AWSKMSClient(key: key, environment: environment)))
        }
        for case .aws(let key) in uris where key.region == fields.region && names(key.keyID, arn: fields.keyARN) {
            return .found(.aws(try AWSKMSClient(key: key, environment: environment)))
        }
        return .none
    }

    /// AWS_ENDPOINT_URL_KMS, then AWS_ENDPOINT_URL (the AWS SDKs' variables), when set.
    static func userEndpoints(_ environment: [String: String]) throws -> [HTTPEndpoint] {
        var endpoints: [HTTPEndpoint] = []
        for name in ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"] {
            guard let value = environment[name], !value.isEmpty else { continue }
            do {
                endpoints.append(try HTTPEndpoint(parsing: value))
            } catch {
                throw KeyServiceError(.refused, "\(name)=\(value) \(error)")
            }
        }
        return endpoints
    }

    /// Whether a URI's KEY (key id, key ARN, alias) can name the key of `arn`. An alias can name
    /// any key, so it is tried: KMS itself refuses a blob of another key (Decrypt's KeyId).
    static func names(_ keyID: String, arn: String) -> Bool {
        keyID == arn || arn.hasSuffix(":key/\(keyID)") || keyID.hasPrefix("alias/") || keyID.contains(":alias/")
    }
}
