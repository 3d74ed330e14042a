import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `--recursive` over an XtraBackup-style target directory.
@Suite struct Recursive {
    static let files: [(String, Int)] = [
        ("ibdata1", 3 << 20), ("ib_logfile0", 70000), ("mysql/user.ibd", 4096), ("mysql/empty.frm", 0),
        ("shop/orders.ibd", 1_500_000), ("shop/deep/nested/t.ibd", 12345), ("xtrabackup_checkpoints", 120),
    ]

    func makeTree(_ dir: Scratch) throws -> [String: [UInt8]] {
        var contents: [String: [UInt8]] = [:]
        for (i, (name, size)) in Self.files.enumerated() {
            let bytes = pseudoRandom(size, seed: UInt64(i + 10))
            _ = try dir.write(bytes, "backup/\(name)", mode: 0o640)
            contents[name] = bytes
        }
        return contents
    }

    @Test("encrypt and decrypt a tree in place with --remove-original: everything comes back, modes kept")
    func roundTrip() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let pw = try dir.write(Array("tree pw".utf8), "pw")
        let contents = try makeTree(dir)
        let enc = try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, "--passphrase-file", pw,
                              "--work-factor", "10", "--chunk-size", "64K", dir.file("backup")])
        #expect(enc.status == Exit.ok, "\(enc.stderr)")
        #expect(enc.stderr.contains("encrypted \(Self.files.count) files"))
        for (name, _) in Self.files {
            #expect(!dir.exists("backup/\(name)"), "\(name) not removed")
            #expect(dir.exists("backup/\(name).cof"), "\(name).cof missing")
        }
        // Each file records its relative path.
        let inspect = try coffer(["inspect", "--json", dir.file("backup/shop/deep/nested/t.ibd.cof")])
        #expect(inspect.stdoutText.contains("\"object\" : \"shop/deep/nested/t.ibd\""))
        // Decrypt with the passphrase alone (one scrypt derivation serves the whole run).
        let dec = try coffer(["decrypt", "--recursive", "--remove-original", "--passphrase-file", pw, dir.file("backup")])
        #expect(dec.status == Exit.ok, "\(dec.stderr)")
        for (name, bytes) in contents {
            #expect(try dir.read("backup/\(name)") == bytes, "\(name) differs")
            #expect(!dir.exists("backup/\(name).cof"))
            var st = stat()
            stat(dir.file("backup/\(name)"), &st)
            #expect(st.st_mode & 0o777 == 0o640, "\(name) mode")
        }
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })
    }

    @Test("without --remove-original the originals stay; already-encrypted files are skipped")
    func keepOriginals() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let contents = try makeTree(dir)
        #expect(try coffer(["encrypt", "--recursive", "--key-file", key, dir.file("backup")]).status == 0)
        for (name, bytes) in contents {
            #expect(try dir.read("backup/\(name)") == bytes)
            #expect(dir.exists("backup/\(name).cof"))
        }
        let again = try coffer(["encrypt", "--recursive", "--key-file", key, dir.file("backup")])
        // Every plaintext now has a NAME.cof: each is refused (never overwritten), every .cof is skipped.
        #expect(again.status == Exit.io)
        #expect(again.stderr.contains("already exists"))
        #expect(again.stderr.contains("\(Self.files.count) skipped"))
    }

    @Test("two files of one run swapped are detected; the other files still decrypt")
    func swappedFiles() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let contents = try makeTree(dir)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        let a = dir.file("backup/mysql/user.ibd.cof")
        let b = dir.file("backup/shop/deep/nested/t.ibd.cof")
        rename(a, dir.file("swap"))
        rename(b, a)
        rename(dir.file("swap"), b)
        let dec = try coffer(["decrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(dec.status == Exit.integrity)
        #expect(dec.stderr.contains("swapped or renamed"))
        #expect(!dir.exists("backup/mysql/user.ibd"))
        #expect(!dir.exists("backup/shop/deep/nested/t.ibd"))
        #expect(dir.exists("backup/mysql/user.ibd.cof") && dir.exists("backup/shop/deep/nested/t.ibd.cof"))
        #expect(try dir.read("backup/ibdata1") == contents["ibdata1"])
        // The single-file command shows the name the file was encrypted as.
        #expect(try coffer(["inspect", a]).stdoutText.contains("object:      shop/deep/nested/t.ibd"))
    }

    @Test("verify --recursive authenticates every file of a tree and names the damaged and swapped ones")
    func verifyTree() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try makeTree(dir)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        let clean = try coffer(["verify", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(clean.status == Exit.ok, "\(clean.stderr)")
        #expect(clean.stderr.contains("verified \(Self.files.count) files"))
        var damaged = try dir.read("backup/ibdata1.cof")
        damaged[damaged.count - 3] ^= 4
        _ = try dir.write(damaged, "backup/ibdata1.cof")
        rename(dir.file("backup/mysql/user.ibd.cof"), dir.file("swap"))
        rename(dir.file("backup/xtrabackup_checkpoints.cof"), dir.file("backup/mysql/user.ibd.cof"))
        rename(dir.file("swap"), dir.file("backup/xtrabackup_checkpoints.cof"))
        let bad = try coffer(["verify", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(bad.status == Exit.integrity)
        #expect(bad.stderr.contains("ibdata1.cof: payload chunk"))
        #expect(bad.stderr.contains("mysql/user.ibd.cof: file was encrypted as 'xtrabackup_checkpoints'"))
        #expect(bad.stderr.contains("3 failed"))
        for (name, _) in Self.files { #expect(!dir.exists("backup/\(name)"), "verify wrote \(name)") }
    }

    @Test("a failure half-way through a directory: the rest is done, nothing is lost, the damaged file is kept")
    func failureHalfWay() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let contents = try makeTree(dir)
        #expect(try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")]).status == 0)
        var damaged = try dir.read("backup/shop/orders.ibd.cof")
        damaged[damaged.count / 2] ^= 1
        _ = try dir.write(damaged, "backup/shop/orders.ibd.cof")
        let dec = try coffer(["decrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")])
        #expect(dec.status == Exit.integrity)
        #expect(dec.stderr.contains("shop/orders.ibd.cof"))
        #expect(dec.stderr.contains("1 failed"))
        for (name, bytes) in contents where name != "shop/orders.ibd" {
            #expect(try dir.read("backup/\(name)") == bytes)
            #expect(!dir.exists("backup/\(name).cof"))
        }
        #expect(!dir.exists("backup/shop/orders.ibd"))
        #expect(try dir.read("backup/shop/orders.ibd.cof") == damaged)
        #expect(!dir.listing().contains { $0.contains("coffer-tmp") })
    }

    @Test("an encryption failure keeps that file's original even with --remove-original")
    func encryptFailureKeepsOriginal() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        let contents = try makeTree(dir)
        _ = try dir.write([9, 9, 9], "backup/ib_logfile0.cof")
        let enc = try coffer(["encrypt", "--recursive", "--remove-original", "--key-file", key, dir.file("backup")])
        #expect(enc.status == Exit.io)
        #expect(enc.stderr.contains("ib_logfile0"))
        #expect(try dir.read("backup/ib_logfile0") == contents["ib_logfile0"])
        #expect(try dir.read("backup/ib_logfile0.cof") == [9, 9, 9])
        #expect(!dir.exists("backup/ibdata1"))
        #expect(dir.exists("backup/ibdata1.cof"))
    }

    @Test("symbolic links are not followed; the options that do not apply with --recursive are refused")
    func linksAndOptions() throws {
        let dir = Scratch()
        let key = try dir.keygen()
        _ = try makeTree(dir)
        symlink("/etc/hostname", dir.file("backup/link"))
        let enc = try coffer(["encrypt", "--recursive", "--key-file", key, dir.file("backup")])
        #expect(enc.status == Exit.ok)
        #expect(enc.stderr.contains("skipped link: symbolic link"))
        #expect(!dir.exists("backup/link.cof"))
        #expect(try coffer(["encrypt", "--recursive", "--key-file", key, "-o", "x", dir.file("backup")]).status == Exit.usage)
        #expect(try coffer(["encrypt", "--remove-original", "--key-file", key, dir.file("backup/ibdata1")]).status == Exit.usage)
        #expect(try coffer(["decrypt", "--recursive", "--key-file", key, "--offset", "1", dir.file("backup")]).status == Exit.usage)
        let notDir = try coffer(["encrypt", "--recursive", "--key-file", key, dir.file("backup/ibdata1")])
        #expect(notDir.status == Exit.io)
        #expect(notDir.stderr.contains("not a directory"))
    }
}
