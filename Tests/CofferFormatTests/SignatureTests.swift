@_spi(TestVectors) import CofferFormat
import CofferKeys
import Foundation
import Testing

/// Producer signatures at the format level: the withheld trailer of piped input, signing and
/// checking for every payload shape, both digest kinds, and what a signature refuses.
@Suite struct Signatures {
    static let signer = Ed25519Signer()
    static let other = Ed25519Signer()

    func signedBytes(_ plaintext: [UInt8], key: SymmetricKeyFile, chunkSize: Int = 4096, threads: Int = 2,
                     digest: SignatureParameters.PayloadDigest = .chunkSHA256, signer: Ed25519Signer = Signatures.signer,
                     fileKey: FileKey? = nil, nonce: [UInt8]? = nil) throws -> [UInt8] {
        var encryptor = CofferEncryptor(fileKey: fileKey ?? .random(), stanzas: [])
        encryptor = CofferEncryptor(fileKey: encryptor.fileKey, stanzas: [try key.wrap(fileKey: encryptor.fileKey.bytes)[0]])
        encryptor.signer = signer
        encryptor.signatureDigest = digest
        let sink = MemorySink()
        let parameters = HeaderParameters(chunkSize: chunkSize)
        if let nonce {
            _ = try encryptor.encrypt(from: pipeSource(plaintext), to: sink, parameters: parameters,
                                      engine: StreamEngine(threads: threads), payloadNonce: nonce)
        } else {
            _ = try encryptor.encrypt(from: pipeSource(plaintext), to: sink, parameters: parameters, engine: StreamEngine(threads: threads))
        }
        return sink.bytes
    }

    func decryptSigned(_ sealed: [UInt8], key: SymmetricKeyFile, verifiers: [SignatureVerifier], threads: Int = 2,
                       viaFile dir: TemporaryDirectory? = nil) throws -> [UInt8] {
        let source = try dir.map { try fileSource(sealed, in: $0) } ?? pipeSource(sealed)
        defer { source.close() }
        let opened = try HeaderReading.read(from: source).open(with: [key])
        let sink = MemorySink()
        _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: threads), signedBy: verifiers)
        return sink.bytes
    }

    @Test("a piped source withholds exactly the last N bytes, whatever the read sizes")
    func withheldTail() throws {
        for length in [0, 1, 143, 144, 145, 300, 5000] {
            let stream = deterministicBytes(length, seed: UInt64(length))
            for readSize in [1, 7, 144, 200, 4096] {
                let source = pipeSource(stream)
                defer { source.close() }
                source.withholdTail(144)
                var yielded: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: readSize)
                while true {
                    let n = try buffer.withUnsafeMutableBytes { try source.readFully(into: $0) }
                    yielded += buffer[..<n]
                    if n < readSize { break }
                }
                let split = max(0, length - 144)
                #expect(yielded == Array(stream[..<split]), "length \(length), reads of \(readSize)")
                #expect(source.withheldTail() == Array(stream[split...]), "length \(length), reads of \(readSize)")
            }
        }
    }

    @Test("signed files of every payload shape decrypt and verify from a pipe and from a file, with both digests",
          arguments: SignatureParameters.PayloadDigest.allCases)
    func shapes(digest: SignatureParameters.PayloadDigest) throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        for size in [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5] {
            let plaintext = deterministicBytes(size, seed: UInt64(size))
            for threads in [1, 3] {
                let sealed = try signedBytes(plaintext, key: key, threads: threads, digest: digest)
                #expect(try decryptSigned(sealed, key: key, verifiers: [Self.signer.verifier], threads: threads) == plaintext)
                #expect(try decryptSigned(sealed, key: key, verifiers: [Self.signer.verifier], threads: threads, viaFile: dir) == plaintext)
                // Readers that check no signature still skip the trailer.
                #expect(try decryptBytes(sealed, key: key, threads: threads) == plaintext)
                #expect(try decryptBytes(sealed, key: key, threads: threads, viaFile: dir) == plaintext)
                // And a keyless check hashes the ciphertext alone.
                let source = try fileSource(sealed, in: dir)
                defer { source.close() }
                _ = try HeaderReading.read(from: source).verifySignature(in: source, verifiers: [Self.signer.verifier],
                                                                          engine: StreamEngine(threads: threads))
            }
        }
    }

    @Test("unsigned files and other signers are refused before any output; any one accepted signer suffices")
    func signers() throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let plaintext = deterministicBytes(10_000)
        let unsigned = try encryptToBytes(plaintext, key: key, parameters: HeaderParameters(chunkSize: 4096), threads: 2)
        let signed = try signedBytes(plaintext, key: key)
        for via in [nil, dir] {
            #expect(throws: AccessError.signerNotAccepted(found: [], accepted: [Self.signer.verifier.label])) {
                _ = try decryptSigned(unsigned, key: key, verifiers: [Self.signer.verifier], viaFile: via)
            }
            #expect(try decryptSigned(signed, key: key, verifiers: [Self.other.verifier, Self.signer.verifier], viaFile: via) == plaintext)
        }
        // From a file, the wrong signer is refused before a byte is written.
        let source = try fileSource(signed, in: dir)
        defer { source.close() }
        let opened = try HeaderReading.read(from: source).open(with: [key])
        let sink = MemorySink()
        #expect(throws: AccessError.signerNotAccepted(found: [Self.signer.verifier.label], accepted: [Self.other.verifier.label])) {
            _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: 2), signedBy: [Self.other.verifier])
        }
        #expect(sink.bytes.isEmpty)
    }

    @Test("a payload replaced by someone holding the file key fails the chunk-sha256 signature, though every chunk authenticates")
    func insiderSplice() throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let fileKey = FileKey.random()
        let nonce = Array(repeating: UInt8(7), count: 16)
        // Two files under one file key and nonce: the insider's payload authenticates under the
        // producer's header, and only the signature tells them apart.
        let genuine = try signedBytes(deterministicBytes(9000, seed: 1), key: key, fileKey: fileKey, nonce: nonce)
        let forged = try signedBytes(deterministicBytes(9000, seed: 2), key: key, signer: Self.other, fileKey: fileKey, nonce: nonce)
        let trailerSize = SignatureParameters().trailerSize
        let spliced = Array(forged.dropLast(trailerSize)) + genuine.suffix(trailerSize)
        #expect(try decryptBytes(spliced, key: key, threads: 2) == deterministicBytes(9000, seed: 2))
        for via in [nil, dir] {
            #expect(throws: CofferError.self) {
                _ = try decryptSigned(spliced, key: key, verifiers: [Self.signer.verifier], viaFile: via)
            }
            do {
                _ = try decryptSigned(spliced, key: key, verifiers: [Self.signer.verifier], viaFile: via)
            } catch let error as CofferError {
                guard case .signatureInvalid = error else { Issue.record("expected signatureInvalid, got \(error)"); continue }
            }
        }
    }

    @Test("a cut, extended or altered trailer is refused; a trailer with one slot cleared (an interrupted re-signing) still verifies")
    func trailerDamage() throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let plaintext = deterministicBytes(6000)
        let sealed = try signedBytes(plaintext, key: key)
        let verifier = Self.signer.verifier
        // The trailer is two slots, each the signer's 8-byte key id and a 64-byte signature; the
        // signature is in slot 1. Flip a bit of that signature, not of the last chunk's tag before it.
        let trailerSize = SignatureParameters().trailerSize
        #expect(trailerSize == 2 * (8 + 64))
        let signatureStart = sealed.count - trailerSize + 8
        var flipped = sealed
        flipped[signatureStart + 20] ^= 1
        #expect(flipped[..<(sealed.count - trailerSize)] == sealed[..<(sealed.count - trailerSize)], "the payload is untouched")
        for via in [nil, dir] {
            do {
                _ = try decryptSigned(flipped, key: key, verifiers: [verifier], viaFile: via)
                Issue.record("a flipped signature was accepted (\(via == nil ? "pipe" : "file"))")
            } catch let error as CofferError {
                guard case .signatureInvalid = error else {
                    Issue.record("a flipped signature: expected signatureInvalid, got \(error)")
                    continue
                }
            }
        }
        for damaged in [Array(sealed.dropLast(1)), Array(sealed.dropLast(trailerSize)), sealed + [0]] {
            for via in [nil, dir] {
                #expect(throws: CofferError.self) { _ = try decryptSigned(damaged, key: key, verifiers: [verifier], viaFile: via) }
            }
        }
        // Slot 2 filled and slot 1 cleared: what a re-signing leaves between its two writes.
        let slot = SignatureParameters().trailerSlotSize
        let start = sealed.count - 2 * slot
        var moved = Array(sealed[..<start]) + [UInt8](repeating: 0, count: slot)
        moved += sealed[start..<(start + slot)]
        #expect(try decryptSigned(moved, key: key, verifiers: [verifier], viaFile: dir) == plaintext)
        #expect(try decryptSigned(moved, key: key, verifiers: [verifier]) == plaintext)
    }

    @Test("the signed header line is bound by the MAC, and version 1 cannot declare one")
    func headerLine() throws {
        let key = testKey()
        let sealed = try signedBytes(deterministicBytes(100), key: key)
        // Dropping the line (and the trailer) to pass the file off as unsigned breaks the MAC.
        let line = Array("signed ed25519 chunk-sha256\n".utf8)
        let stripped = replacingFirst(line, with: [], in: Array(sealed.dropLast(144)))
        #expect(stripped.count == sealed.count - 144 - line.count)
        #expect(throws: CofferError.self) { _ = try decryptBytes(stripped, key: key, threads: 1) }
        let v1 = Array("coffer/v1\ncipher aes-256-gcm\nchunk-size 4096\nsigned ed25519 chunk-sha256\n".utf8)
        #expect(throws: CofferError.malformedHeader("a coffer/v1 header cannot declare a signature")) {
            _ = try Header.parse(v1 + Array("-> keyfile x\nAAAA\n--- AAAA\n".utf8))
        }
        var encryptor = try CofferEncryptor(recipients: [key])
        encryptor.version = .v1
        encryptor.signer = Self.signer
        #expect(throws: CofferError.invalidParameter("signatures need file version 2")) {
            _ = try encryptor.encrypt(from: pipeSource([1]), to: MemorySink(), parameters: HeaderParameters(),
                                      engine: StreamEngine(threads: 1))
        }
    }

    /// A sink that records how many bytes reached it (the pipe of `coffer decrypt | mysql`).
    final class CountingSink: ByteSink {
        var bytes: [UInt8] = []
        func write(_ raw: UnsafeRawBufferPointer) throws { bytes.append(contentsOf: raw) }
    }

    @Test("from a regular file, a key holder's spliced payload under the producer's signature releases no plaintext, with both digests",
          arguments: SignatureParameters.PayloadDigest.allCases)
    func noPlaintextBeforeSignature(digest: SignatureParameters.PayloadDigest) throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let fileKey = FileKey.random()
        let nonce = Array(repeating: UInt8(9), count: 16)
        let genuine = try signedBytes(deterministicBytes(50_000, seed: 1), key: key, digest: digest, fileKey: fileKey, nonce: nonce)
        let forged = try signedBytes(deterministicBytes(50_000, seed: 2), key: key, digest: digest, signer: Self.other,
                                     fileKey: fileKey, nonce: nonce)
        let trailerSize = SignatureParameters().trailerSize
        let spliced = Array(forged.dropLast(trailerSize)) + genuine.suffix(trailerSize)
        let source = try fileSource(spliced, in: dir)
        defer { source.close() }
        let opened = try HeaderReading.read(from: source).open(with: [key])
        let sink = CountingSink()
        #expect(throws: CofferError.self) {
            _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: 2), signedBy: [Self.signer.verifier])
        }
        #expect(sink.bytes.isEmpty, "\(sink.bytes.count) bytes of forged plaintext were released before the signature check")
        // The genuine file still decrypts, in one pass or two.
        for first in [true, false] {
            let good = try fileSource(genuine, in: dir)
            defer { good.close() }
            let goodOpened = try HeaderReading.read(from: good).open(with: [key])
            let out = CountingSink()
            _ = try goodOpened.decrypt(from: good, to: out, engine: StreamEngine(threads: 2), signedBy: [Self.signer.verifier],
                                       signatureFirst: first)
            #expect(out.bytes == deterministicBytes(50_000, seed: 1))
        }
    }

    @Test("a trailer's structure is checked without a public key: emptied slots, zeroed key ids and zeroed signatures are damage")
    func trailerStructure() throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let sealed = try signedBytes(deterministicBytes(5000), key: key)
        let parameters = SignatureParameters()
        let slot = parameters.trailerSlotSize
        let start = sealed.count - 2 * slot
        func trailer(_ bytes: [UInt8]) throws -> PayloadSignatureTrailer {
            let source = try fileSource(bytes, in: dir)
            defer { source.close() }
            return try HeaderReading.read(from: source).unverifiedTrailer(in: source)!
        }
        let intact = try trailer(sealed)
        #expect(intact.structuralDamage == nil)
        #expect(intact.signerLabels == [Self.signer.verifier.label])
        // From a pipe too, once the payload was read.
        let pipe = pipeSource(sealed)
        defer { pipe.close() }
        let reading = try HeaderReading.read(from: pipe)
        _ = try reading.open(with: [key]).decrypt(from: pipe, to: MemorySink(), engine: StreamEngine(threads: 1))
        #expect(try reading.unverifiedTrailer(in: pipe)?.signerLabels == [Self.signer.verifier.label])

        var emptied = sealed
        for i in start..<(start + slot) { emptied[i] = 0 }
        #expect(try trailer(emptied).structuralDamage?.contains("holds none") == true)
        var zeroID = sealed
        for i in start..<(start + 8) { zeroID[i] = 0 }
        #expect(try trailer(zeroID).structuralDamage?.contains("without a key id") == true)
        var zeroSignature = sealed
        for i in (start + 8)..<(start + slot) { zeroSignature[i] = 0 }
        #expect(try trailer(zeroSignature).structuralDamage?.contains("signature is zero bytes") == true)
        // A flipped signature bit is not structural: only a public key finds it.
        var flipped = sealed
        flipped[start + 20] ^= 1
        #expect(try trailer(flipped).structuralDamage == nil)
    }
}
