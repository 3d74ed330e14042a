import Foundation
import Testing

/// `coffer keygen --show-public FILE`: the public key of a private key file, which the message for
/// a private key given as a recipient points to.
@Suite struct ShowPublic {
    @Test("--show-public prints what NAME.pub holds, for every key pair type, a protected key included")
    func everyType() throws {
        let dir = Scratch()
        for type in ["x25519", "pq", "rsa-3072", "ed25519", "ml-dsa-65"] {
            let made = try coffer(["keygen", "--type", type, "-o", dir.file(type)])
            #expect(made.status == 0, "\(made.stderr)")
            let shown = try coffer(["keygen", "--show-public", dir.file("\(type).key")])
            #expect(shown.status == 0, "\(type): \(shown.stderr)")
            let pub = String(decoding: try dir.read("\(type).pub"), as: UTF8.self)
            #expect(shown.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == pub.trimmingCharacters(in: .whitespacesAndNewlines),
                    "\(type)")
        }
        let environment = ["COFFER_IDENTITY_PASSPHRASE": "correct horse"]
        #expect(try coffer(["keygen", "--type", "x25519", "--protect", "-o", dir.file("locked")], environment: environment).status == 0)
        let shown = try coffer(["keygen", "--show-public", dir.file("locked.key")], environment: environment)
        #expect(shown.status == 0)
        #expect(shown.stdoutText == String(decoding: try dir.read("locked.pub"), as: UTF8.self))
        #expect(try coffer(["keygen", "--show-public", dir.file("locked.key")],
                           environment: ["COFFER_IDENTITY_PASSPHRASE": "wrong"]).status == 2)
    }

    @Test("a private key given as a recipient is refused (key error) with a hint to --show-public; a symmetric key has no public key")
    func refusals() throws {
        let dir = Scratch()
        #expect(try coffer(["keygen", "--type", "x25519", "-o", dir.file("k")]).status == 0)
        let input = try dir.write(Array("data".utf8), "plain")
        let wrong = try coffer(["encrypt", "-r", dir.file("k.key"), "-o", dir.file("x.cof"), input])
        #expect(wrong.status == 2)
        #expect(wrong.stderr.contains("is a private key") && wrong.stderr.contains("keygen --show-public"), "\(wrong.stderr)")
        #expect(try coffer(["keygen", "--symmetric", "-o", dir.file("sym.key")]).status == 0)
        let symmetric = try coffer(["keygen", "--show-public", dir.file("sym.key")])
        #expect(symmetric.status == 2 && symmetric.stderr.contains("no public key"), "\(symmetric.stderr)")
        #expect(try coffer(["keygen", "--show-public", dir.file("k.key"), "--symmetric"]).status == 64)
    }
}
