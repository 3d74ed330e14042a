@_spi(TestVectors) import CofferFormat
import CofferKeys
import Crypto
import Foundation
import Testing

/// A recipient/identity pair for engine tests that need no particular key type.
func testKey() -> SymmetricKeyFile { SymmetricKeyFile.generate() }

func encryptToBytes(_ plaintext: [UInt8], key: SymmetricKeyFile, parameters: HeaderParameters,
                    threads: Int, source: ByteSource? = nil,
                    version: CofferEncryptor.FileVersion = .v2(slotSize: nil)) throws -> [UInt8] {
    var encryptor = try CofferEncryptor(recipients: [key])
    encryptor.version = version
    let sink = MemorySink()
    let n = try encryptor.encrypt(from: source ?? pipeSource(plaintext), to: sink, parameters: parameters,
                                  engine: StreamEngine(threads: threads))
    #expect(n == UInt64(plaintext.count))
    return sink.bytes
}

func decryptBytes(_ sealed: [UInt8], key: SymmetricKeyFile, threads: Int, viaFile dir: TemporaryDirectory? = nil,
                  expectedObjectName: [UInt8]? = nil) throws -> [UInt8] {
    let source = try dir.map { try fileSource(sealed, in: $0) } ?? pipeSource(sealed)
    defer { source.close() }
    let opened = try HeaderReading.read(from: source).open(with: [key], expectedObjectName: expectedObjectName)
    let sink = MemorySink()
    _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: threads))
    return sink.bytes
}

@Suite struct EngineRoundTrips {
    static let chunkSizes = [4096, 65536, 1 << 20]

    @Test("round trip at sizes 0, 1, chunk-1, chunk, chunk+1, 3 chunks+5, several MiB", arguments: chunkSizes, PayloadCipher.allCases)
    func roundTrip(chunkSize: Int, cipher: PayloadCipher) throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let sizes = [0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3 * chunkSize + 5, 5 << 20]
        for size in sizes {
            let plaintext = deterministicBytes(size, seed: UInt64(size))
            for threads in 1...4 {
                let parameters = HeaderParameters(cipher: cipher, chunkSize: chunkSize)
                // Sequential input (a pipe) and positioned input (a regular file) must agree.
                let fromPipe = try encryptToBytes(plaintext, key: key, parameters: parameters, threads: threads)
                let fromFile = try encryptToBytes(plaintext, key: key, parameters: parameters, threads: threads,
                                                  source: fileSource(plaintext, in: dir))
                let chunks = max(1, (size + chunkSize - 1) / chunkSize)
                #expect(fromFile.count == fromPipe.count)
                let headerLength = fromPipe.count - 16 - size - 16 * chunks
                // Header, nonce, then exactly the plaintext plus one tag a chunk.
                #expect(UInt64(headerLength) == (try HeaderReading.read(from: pipeSource(fromPipe)).headerLength),
                        "size \(size): unexpected ciphertext length")
                #expect(try decryptBytes(fromPipe, key: key, threads: threads) == plaintext, "size \(size) threads \(threads) pipe")
                #expect(try decryptBytes(fromFile, key: key, threads: 5 - threads, viaFile: dir) == plaintext,
                        "size \(size) threads \(threads) file")
            }
        }
    }

    @Test("a payload that is an exact multiple of the chunk size ends with a full final chunk, not an empty one")
    func exactMultiple() throws {
        let key = testKey()
        let sealed = try encryptToBytes(deterministicBytes(3 * 4096), key: key,
                                        parameters: HeaderParameters(chunkSize: 4096), threads: 2)
        let reading = try HeaderReading.read(from: pipeSource(sealed))
        let payloadLength = UInt64(sealed.count) - reading.payloadStart
        #expect(payloadLength == 3 * (4096 + 16))
    }

    @Test("an empty payload is one empty final chunk: a 16-byte tag")
    func emptyPayload() throws {
        let key = testKey()
        let sealed = try encryptToBytes([], key: key, parameters: HeaderParameters(chunkSize: 4096), threads: 3)
        let reading = try HeaderReading.read(from: pipeSource(sealed))
        #expect(UInt64(sealed.count) - reading.payloadStart == 16)
        #expect(try decryptBytes(sealed, key: key, threads: 2).isEmpty)
    }

    @Test("two encryptions of the same input differ (fresh file key and payload nonce)")
    func freshNonces() throws {
        let key = testKey()
        let plaintext = deterministicBytes(1000)
        let a = try encryptToBytes(plaintext, key: key, parameters: HeaderParameters(), threads: 1)
        let b = try encryptToBytes(plaintext, key: key, parameters: HeaderParameters(), threads: 1)
        #expect(a != b)
    }

    @Test("range decryption returns exactly the requested bytes and authenticates only the chunks it needs (the others damaged); the CLI's rangeReads counts the bytes read")
    func ranges() throws {
        let key = testKey()
        let dir = TemporaryDirectory()
        let plaintext = deterministicBytes(10 * 4096 + 123)
        let sealed = try encryptToBytes(plaintext, key: key, parameters: HeaderParameters(chunkSize: 4096), threads: 2)
        let path = dir.file("ranged.cof")
        try write(sealed, to: path)
        let cases: [(UInt64, UInt64)] = [(0, 1), (0, 4096), (4095, 2), (4096, 4096), (5000, 20000), (40960, 500),
                                         (UInt64(plaintext.count) - 1, 10), (UInt64(plaintext.count), 5), (7, UInt64.max)]
        for (offset, length) in cases {
            let source = try ByteSource.open(path: path)
            defer { source.close() }
            let opened = try HeaderReading.read(from: source).open(with: [key])
            let sink = MemorySink()
            _ = try opened.decryptRange(from: source, offset: offset, length: length, to: sink, engine: StreamEngine(threads: 3))
            let end = Int(min(UInt64(plaintext.count), offset + min(length, UInt64(plaintext.count) - offset)))
            #expect(sink.bytes == Array(plaintext[Int(offset)..<end]), "offset \(offset) length \(length)")
            // The same range of a copy whose every other chunk is damaged, except the final one (always
            // authenticated, so that a cut file is noticed): those chunks are never authenticated,
            // or this would fail.
            guard end > Int(offset) else { continue }
            let payloadStart = sealed.count - (plaintext.count + 11 * 16)
            let needed = (Int(offset) / 4096)...((end - 1) / 4096)
            var damaged = sealed
            for k in 0..<10 where !needed.contains(k) { damaged[payloadStart + k * (4096 + 16) + 10] ^= 0x01 }
            let damagedPath = dir.file("damaged.cof")
            try write(damaged, to: damagedPath)
            let damagedSource = try ByteSource.open(path: damagedPath)
            defer { damagedSource.close() }
            let damagedSink = MemorySink()
            _ = try HeaderReading.read(from: damagedSource).open(with: [key])
                .decryptRange(from: damagedSource, offset: offset, length: length, to: damagedSink, engine: StreamEngine(threads: 3))
            #expect(damagedSink.bytes == sink.bytes, "offset \(offset) length \(length), other chunks damaged")
            // And damaging a chunk in the range is noticed (the check above can fail).
            damaged[payloadStart + needed.lowerBound * (4096 + 16) + 10] ^= 0x01
            try write(damaged, to: damagedPath)
            let refused = try ByteSource.open(path: damagedPath)
            defer { refused.close() }
            #expect(throws: CofferError.self) {
                _ = try HeaderReading.read(from: refused).open(with: [key])
                    .decryptRange(from: refused, offset: offset, length: length, to: MemorySink(), engine: StreamEngine(threads: 3))
            }
        }
        // A range in the middle of the file still sees a file cut at its end: the final chunk is checked.
        let cut = Array(sealed.dropLast(4096 + 16))
        let cutPath = dir.file("cut.cof")
        try write(cut, to: cutPath)
        let source = try ByteSource.open(path: cutPath)
        let opened = try HeaderReading.read(from: source).open(with: [key])
        #expect(throws: CofferError.self) {
            _ = try opened.decryptRange(from: source, offset: 0, length: 10, to: MemorySink(), engine: StreamEngine(threads: 1))
        }
        // An offset past the end is refused.
        let whole = try ByteSource.open(path: path)
        let openedWhole = try HeaderReading.read(from: whole).open(with: [key])
        #expect(throws: CofferError.invalidParameter("offset 99999999 is beyond the end of the 41083-byte payload")) {
            _ = try openedWhole.decryptRange(from: whole, offset: 99_999_999, length: 1, to: MemorySink(), engine: StreamEngine())
        }
    }

    @Test("a failing chunk stops output exactly after the authenticated chunks before it")
    func authenticatedPrefixOnly() throws {
        let key = testKey()
        let plaintext = deterministicBytes(8 * 4096)
        var sealed = try encryptToBytes(plaintext, key: key, parameters: HeaderParameters(chunkSize: 4096), threads: 4)
        let payloadStart = Int(try HeaderReading.read(from: pipeSource(sealed)).payloadStart)
        sealed[payloadStart + 5 * (4096 + 16) + 7] ^= 0x01  // inside chunk 5
        for threads in 1...4 {
            let source = pipeSource(sealed)
            let opened = try HeaderReading.read(from: source).open(with: [key])
            let sink = MemorySink()
            #expect(throws: CofferError.chunkAuthenticationFailed(
                chunk: 5, reason: "altered, reordered, duplicated, truncated, or not made with this key")) {
                _ = try opened.decrypt(from: source, to: sink, engine: StreamEngine(threads: threads))
            }
            #expect(sink.bytes == Array(plaintext[0..<(5 * 4096)]), "threads \(threads)")
        }
    }

    @Test("files of one run share a file key but are bound to their object names")
    func objectBinding() throws {
        let key = testKey()
        let encryptor = try CofferEncryptor(recipients: [key])
        func seal(_ name: String, _ text: String) throws -> [UInt8] {
            let sink = MemorySink()
            _ = try encryptor.encrypt(from: pipeSource(Array(text.utf8)), to: sink,
                                      parameters: HeaderParameters(objectName: Array(name.utf8)), engine: StreamEngine())
            return sink.bytes
        }
        let a = try seal("db/a.ibd", "contents of a")
        let b = try seal("db/b.ibd", "contents of b")
        #expect(try decryptBytes(a, key: key, threads: 1, expectedObjectName: Array("db/a.ibd".utf8)) == Array("contents of a".utf8))
        #expect(throws: CofferError.objectMismatch(expected: "db/a.ibd", found: "db/b.ibd")) {
            _ = try decryptBytes(b, key: key, threads: 1, expectedObjectName: Array("db/a.ibd".utf8))
        }
        // Rewriting the object line of a file's header breaks its MAC.
        let tampered = replacingFirst(Array(RawBase64.encode(Array("db/b.ibd".utf8)).utf8),
                                      with: Array(RawBase64.encode(Array("db/a.ibd".utf8)).utf8), in: b)
        #expect(tampered != b)
        #expect(throws: CofferError.headerMACMismatch) {
            _ = try decryptBytes(tampered, key: key, threads: 1)
        }
    }
}
