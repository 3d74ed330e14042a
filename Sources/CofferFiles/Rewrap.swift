import CofferFormat
import CofferKeys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Changes which keys open a file without re-encrypting it (docs/FORMAT.md, "Version 2: header
/// slots", "Rewrap"): the new header goes into the free slot, is flushed, and only then is the old
/// slot cleared. Version-1 files have no free slot; they are converted once to version 2 by a new
/// file whose payload bytes are copied unchanged (not re-encrypted), renamed over the old one.
/// Signatures do not cover the stanzas, so a rewrap keeps a file's signature valid.
public struct Rewrap {
    /// Stanza types that name no key and are removed by type: `--remove scrypt` drops passphrases.
    public static let removableByType = [Passphrase.stanzaType]

    public var add: [Recipient] = []
    /// Key ids (or "scrypt") whose stanzas go.
    public var remove: [String] = []
    /// Key ids that must stay (the recovery key under the recovery policy).
    public var mustKeep: [String] = []
    /// Slot size for version-1 files converted to version 2 (nil: the default).
    public var slotSize: Int?
    /// Signs each file anew (docs/FORMAT.md, "Signatures"): a signed file gets the new signature in
    /// its free trailer slot, flushed before the old one is cleared; an unsigned file is converted
    /// (a new file, payload bytes copied unchanged, the trailer appended), like a version-1 file.
    public var signer: PayloadSigner?
    /// The digest kind for files signed for the first time (re-signing keeps the file's own).
    public var signatureDigest: SignatureParameters.PayloadDigest = .chunkSHA256
    /// Signers whose existing signature a re-signing accepts (`--signed-by`), besides `signer`'s
    /// own key. A signed file is re-signed only when its current signature verifies with one of
    /// them: a new signer never vouches for a payload that its last signer did not sign.
    public var signedBy: [SignatureVerifier] = []
    public var threads = StreamEngine.defaultThreads
    /// Replaces a stanza by a fresh one for the same key, or returns nil to keep it (Vault
    /// Transit stanzas re-wrapped under the key's newest version). Called once per distinct
    /// stanza of a run: files of one run share their stanzas.
    public var refresh: ((Stanza) throws -> Stanza?)?

    public init() {}

    public struct Result: Sendable {
        public var added = 0, removed = 0, alreadyPresent = 0, refreshed = 0
        public var converted = false
        public var generation: UInt64 = 0
        /// The file now carries a signature by `signer`.
        public var signed = false
    }

    /// Stanzas wrapped for one file key, reused for every file of a run that shares that key
    /// (a passphrase is stretched once per run, not once per file).
    final class WrapCache: @unchecked Sendable {
        var byFileKey: [[UInt8]: [Stanza]] = [:]
        /// ``refresh`` outcomes by the old stanza's encoding.
        var refreshed: [[UInt8]: Stanza?] = [:]
    }
    let cache = WrapCache()

    /// A file to rewrap, and how to reach it: by its path, or (in a tree) from the tree's root
    /// through directory descriptors, never following a symbolic link.
    public struct Target {
        public let path: String
        let rewrap: (Rewrap, [Identity]) throws -> Result
    }

    /// The files to rewrap: `paths` themselves, or with `recursive` every regular NAME.cof under
    /// them, in path order.
    public static func targets(_ paths: [String], recursive: Bool) throws -> [Target] {
        guard recursive else {
            return paths.map { path in Target(path: path) { try $0.rewrap(path: path, identities: $1) } }
        }
        var out: [Target] = []
        for root in paths {
            var skipped: [(path: String, reason: String)] = []
            let tree = try DirectoryTree.list(root, skipped: &skipped)
            for entry in tree.entries where entry.relative.hasSuffix(DirectoryRun.suffix) {
                let path = (root as NSString).appendingPathComponent(entry.relative)
                out.append(Target(path: path) { change, identities in
                    try change.rewrap(in: try tree.directory(of: entry), name: entry.name, path: path, identities: identities)
                })
            }
        }
        return out.sorted { $0.path < $1.path }
    }

    /// Rewraps one target.
    public func rewrap(_ target: Target, identities: [Identity]) throws -> Result {
        try target.rewrap(self, identities)
    }

    public func rewrap(path: String, identities: [Identity]) throws -> Result {
        let (directory, name) = try DirectoryHandle.parent(of: path)
        return try rewrap(in: directory, name: name, path: path, identities: identities)
    }

    /// Rewraps `name` in `directory` (a directory run reaches it without following links).
    public func rewrap(in directory: DirectoryHandle, name: String, path: String, identities: [Identity]) throws -> Result {
        let source = try directory.openRegularFile(name, writable: true)
        let fd = source.fd
        defer { source.close() }
        let location = (directory, name)
        let reading = try HeaderReading.read(from: source)
        let opened = try reading.open(with: identities)
        var result = Result()
        let stanzas = try newStanzas(opened.header.stanzas, fileKey: opened.fileKey, result: &result)
        var parameters = opened.header.parameters
        // Everything a signing needs is checked and computed before the file is touched.
        let signing = try signer.map { try prepareSigning(opened: opened, source: source, signer: $0, path: path) }
        if let signing { parameters = signing.parameters }

        guard case .slots(let size, _) = opened.header.layout, signing == nil || signing!.existing != nil else {
            var signature: (PayloadSignatureTrailer, SignatureParameters)?
            if let signing {
                signature = (PayloadSignatureTrailer(slots: [signing.entry, nil], algorithm: signing.signature.algorithm),
                             signing.signature)
                result.signed = true
            }
            try convert(path: path, at: location, source: source, reading: reading, parameters: parameters, stanzas: stanzas,
                        fileKey: opened.fileKey, signature: signature)
            result.converted = true
            result.generation = 1
            return result
        }
        let generations = [reading.header.generation!, reading.alternate?.generation ?? 0]
        let generation = generations.max()! + 1
        let header = try Header.sealed(parameters: parameters, stanzas: stanzas, fileKey: opened.fileKey,
                                       layout: .slots(size: size, generation: generation))
        // The slot that opened stays until the new one is on disk; the new one goes in the other.
        let openedSlot = opened.header.generation == reading.header.generation ? reading.activeSlot! : 1 - reading.activeSlot!
        let target = 1 - openedSlot
        try writeAndSync(fd: fd, header.encodedSlot(), at: reading.slotOffset(target)!, path: path)
        try writeAndSync(fd: fd, [UInt8](repeating: 0, count: size), at: reading.slotOffset(openedSlot)!, path: path)
        result.generation = generation
        if let signing, let old = signing.existing {
            try resign(fd: fd, old: old, entry: signing.entry, signature: signing.signature,
                       fileSize: signing.fileSize, path: path)
            result.signed = true
        }
        return result
    }

    /// A signature made and checked before anything is written.
    struct Signing {
        /// The header parameters with the `signed` line (unchanged for a file already signed).
        var parameters: HeaderParameters
        var signature: SignatureParameters
        /// The new signature.
        var entry: PayloadSignatureTrailer.Entry
        /// The trailer of a file already signed, whose signature verified.
        var existing: PayloadSignatureTrailer?
        var fileSize: UInt64
    }

    /// Signs what the file holds, after proving it is what was signed before (docs/FORMAT.md,
    /// "Signatures", re-signing): every chunk is authenticated under the file key in the same pass
    /// that computes the digest, and a file already signed must carry a signature that verifies
    /// with `signer`'s own key or one of ``signedBy`` over exactly that digest. Otherwise a key
    /// holder's altered payload, whose old signature no longer matches, would be laundered under
    /// the new signer. A damaged trailer is refused too.
    func prepareSigning(opened: OpenedFile, source: ByteSource, signer: PayloadSigner, path: String) throws -> Signing {
        let fileSize = try regularFileSize(source, path: path)
        var parameters = opened.header.parameters
        let existing = parameters.signature
        if let existing, signer.algorithm != existing.algorithm {
            throw KeyError.refused("the file is signed with \(existing.algorithm.rawValue); re-signing with \(signer.algorithm.rawValue) needs a new file (re-encrypt it, signing as it is written)")
        }
        var oldTrailer: PayloadSignatureTrailer?
        if existing != nil {
            let old = try opened.reading.readTrailer(from: source, fileSize: fileSize)!
            if let damage = old.structuralDamage {
                throw CofferError.signatureInvalid("\(damage); refusing to sign over it (check the file's origin, then re-encrypt it, signing the new file)")
            }
            oldTrailer = old
        }
        let signature = existing ?? SignatureParameters(algorithm: signer.algorithm, digest: signatureDigest)
        let payload = try opened.authenticatedSignedPayload(of: source, fileSize: fileSize,
                                                            engine: StreamEngine(threads: threads), digest: signature.digest)
        if let oldTrailer {
            do {
                _ = try oldTrailer.verify(payload, parameters: parameters, verifiers: signedBy + [signer.publicVerifier])
            } catch AccessError.signerNotAccepted(let found, let accepted) {
                throw AccessError.signerNotAccepted(
                    found: found, accepted: accepted + ["(re-signing checks the existing signature first: its signer must be accepted too)"])
            } catch CofferError.signatureInvalid(let reason) {
                throw CofferError.signatureInvalid("\(reason); refusing to sign it")
            }
        }
        parameters.signature = signature
        let entry = try payload.trailer(signedBy: signer, parameters: parameters).slots[0]!
        return Signing(parameters: parameters, signature: signature, entry: entry, existing: oldTrailer, fileSize: fileSize)
    }

    /// Replaces a signed file's signature: the new one goes into a free trailer slot (or the slot
    /// of the same signer), is flushed, and only then are the other slots cleared, so an
    /// interruption leaves at least one valid signature.
    func resign(fd: Int32, old: PayloadSignatureTrailer, entry: PayloadSignatureTrailer.Entry,
                signature: SignatureParameters, fileSize: UInt64, path: String) throws {
        let target = old.slots.firstIndex(where: { $0 == nil })
            ?? old.slots.firstIndex(where: { $0?.keyID == entry.keyID }) ?? 1
        let trailerStart = fileSize - UInt64(signature.trailerSize)
        let slotOffset = { (index: Int) in trailerStart + UInt64(index * signature.trailerSlotSize) }
        try writeAndSync(fd: fd, entry.keyID + entry.signature, at: slotOffset(target), path: path)
        for index in old.slots.indices where index != target && old.slots[index] != nil {
            try writeAndSync(fd: fd, [UInt8](repeating: 0, count: signature.trailerSlotSize), at: slotOffset(index), path: path)
        }
    }

    func regularFileSize(_ source: ByteSource, path: String) throws -> UInt64 {
        guard let size = source.regularFileSize else { throw CofferError.readFailed(path: path, reason: "not a regular file") }
        return size
    }

    func newStanzas(_ old: [Stanza], fileKey: FileKey, result: inout Result) throws -> [Stanza] {
        // A --remove value names a key id, or a type that names no key ("scrypt").
        func matches(_ stanza: Stanza, _ id: String) -> Bool {
            KeyTypes.keyID(of: stanza) == id || (stanza.type == id && Self.removableByType.contains(id))
        }
        for id in remove {
            guard old.contains(where: { matches($0, id) }) else {
                let present = old.map(KeyTypes.describe).joined(separator: ", ")
                throw CofferError.invalidParameter("cannot remove \(id): no stanza of this file has that key id (it has: \(present))")
            }
            if mustKeep.contains(id) {
                throw KeyError.refused("removing \(id) would remove the recovery key, which the recovery policy requires")
            }
        }
        var stanzas = old.filter { stanza in !remove.contains { matches(stanza, $0) } }
        result.removed = old.count - stanzas.count
        if let refresh {
            stanzas = try stanzas.map { stanza in
                let encoded = stanza.encoded()
                let fresh: Stanza?
                if let cached = cache.refreshed[encoded] {
                    fresh = cached
                } else {
                    fresh = try refresh(stanza)
                    cache.refreshed[encoded] = .some(fresh)
                }
                guard let fresh else { return stanza }
                result.refreshed += 1
                return fresh
            }
        }
        let added: [Stanza]
        if let cached = cache.byFileKey[fileKey.bytes] {
            added = cached
        } else {
            added = try add.flatMap { try $0.wrap(fileKey: fileKey.bytes) }
            cache.byFileKey[fileKey.bytes] = added
        }
        for stanza in added {
            if let id = KeyTypes.keyID(of: stanza), stanzas.contains(where: { KeyTypes.keyID(of: $0) == id }) {
                result.alreadyPresent += 1
                continue
            }
            stanzas.append(stanza)
            result.added += 1
        }
        guard !stanzas.isEmpty else {
            throw KeyError.refused("the rewrap would leave no stanza: no key could open the file")
        }
        for id in mustKeep where !stanzas.contains(where: { KeyTypes.keyID(of: $0) == id }) {
            throw KeyError.refused("the recovery policy requires the recovery key \(id) in every file; add it as a recipient")
        }
        return stanzas
    }

    func writeAndSync(fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(offset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                if errno == ENOSPC { throw CofferError.diskFull(path: path) }
                throw CofferError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
        guard fdatasync(fd) == 0 else { throw CofferError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
    }

    /// Version 1 → 2: a new file with the new header in slot 1 and the payload bytes copied as
    /// they are, then renamed over the old one (its mode kept).
    func convert(path: String, at location: (DirectoryHandle, String), source: ByteSource, reading: HeaderReading,
                 parameters: HeaderParameters, stanzas: [Stanza], fileKey: FileKey,
                 signature: (PayloadSignatureTrailer, SignatureParameters)?) throws {
        var st = stat()
        guard fstat(source.fd, &st) == 0 else { throw CofferError.readFailed(path: path, reason: String(cString: strerror(errno))) }
        var encryptor = CofferEncryptor(fileKey: fileKey, stanzas: stanzas)
        encryptor.version = .v2(slotSize: slotSize)
        try AtomicOutputFile(directory: location.0, name: location.1, mode: OutputMode.forReplacement(of: st.st_mode),
                             overwrite: true, displayPath: path).complete { sink in
            try encryptor.writeHeaderOnly(to: sink, parameters: parameters)
            try reading.payloadNonce.withUnsafeBytes { try sink.write($0) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var offset = reading.payloadStart
            while true {
                let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0, at: offset) }
                if n == 0 { break }
                try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                offset += UInt64(n)
            }
            if let (trailer, parameters) = signature { try trailer.encoded(parameters).withUnsafeBytes { try sink.write($0) } }
        }
    }
}
