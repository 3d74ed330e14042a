import CofferFormat
import Foundation

/// How blobs read together are grouped into ranged reads of their packs (``BlobStore/loadBatch(_:_:reads:)``).
///
/// The blobs of one pack are sorted by offset; neighbours separated by at most `maxGap` unneeded
/// bytes are read with one ranged read, as long as the range stays within `maxRange` plaintext
/// bytes. On S3 a GET costs a round trip, so a few hundred KiB read for nothing is cheaper than a
/// second request; the cap bounds the memory of each read.
public struct RangeReads: Sendable, Equatable {
    /// Longest span of a pack's plaintext read at once (a single larger blob is read alone).
    public var maxRange: Int = 2 << 20
    /// Largest run of unneeded bytes between two blobs that are still read in one range (files
    /// backed up at the same time interleave their chunks, of 1 MiB on average, in a pack).
    public var maxGap: Int = 1 << 20
    /// Ranged reads at once (further bounded by the storage's connections).
    public var parallel: Int = 4
    public init() {}
}

/// One ranged read: `blobs` (sorted by offset) of `pack`, spanning `start..<end` of its plaintext.
struct PackRange: Sendable, Equatable {
    let pack: String
    let packSize: Int64
    let start: Int
    let end: Int
    let blobs: [PackedBlob]

    /// Groups each pack's blobs into ranges (``RangeReads``); ranges ordered by pack, then offset.
    static func plan(_ packs: [(name: String, size: Int64, blobs: [PackedBlob])], _ reads: RangeReads) -> [PackRange] {
        var out: [PackRange] = []
        for pack in packs {
            let sorted = pack.blobs.sorted { $0.offset < $1.offset }
            var run: [PackedBlob] = []
            var start = 0, end = 0
            func close() {
                if !run.isEmpty { out.append(PackRange(pack: pack.name, packSize: pack.size, start: start, end: end, blobs: run)) }
                run = []
            }
            for blob in sorted {
                let s = Int(blob.offset), e = Int(blob.offset) + Int(blob.length)
                if !run.isEmpty && s - end <= reads.maxGap && max(e, end) - start <= reads.maxRange {
                    run.append(blob)
                    end = max(end, e)
                } else {
                    close()
                    run = [blob]
                    start = s; end = e
                }
            }
            close()
        }
        return out
    }
}

extension BlobStore {
    /// One `load` per distinct blob, up to `reads.parallel` at once.
    public func loadBatch(_ kind: BlobKind, _ ids: [BlobID], reads: RangeReads) async -> [BlobID: Result<[UInt8], Error>] {
        var seen = Set<BlobID>()
        let unique = ids.filter { seen.insert($0).inserted }
        var results: [BlobID: Result<[UInt8], Error>] = [:]
        await withTaskGroup(of: (BlobID, Result<[UInt8], Error>).self) { group in
            var next = 0
            func start() {
                guard next < unique.count else { return }
                let id = unique[next]
                next += 1
                group.addTask {
                    do { return (id, .success(try await self.load(kind, id))) } catch { return (id, .failure(error)) }
                }
            }
            for _ in 0..<max(1, reads.parallel) { start() }
            while let (id, result) = await group.next() {
                results[id] = result
                start()
            }
        }
        return results
    }

    public func indexedLength(_ kind: BlobKind, _ id: BlobID) -> Int? { nil }
}

extension Repository {
    public func indexedLength(_ kind: BlobKind, _ id: BlobID) -> Int? {
        stateLock.withLock { index.lookup(kind, id).map { Int($0.location.rawLength) } }
    }

    /// Reads the blobs of each pack in as few ranged reads as ``RangeReads`` allows: the header
    /// of each pack once (then cached), then every range (in parallel), each split into its blobs,
    /// which are decompressed and checked against their ids one by one. A range that fails to
    /// read or decrypt is retried blob by blob, so a damaged STREAM chunk fails only the blobs in
    /// it, with the error a single load names. Blobs not in a stored pack (written in this
    /// session, or unknown) are loaded alone.
    public func loadBatch(_ kind: BlobKind, _ ids: [BlobID], reads: RangeReads) async -> [BlobID: Result<[UInt8], Error>] {
        var results: [BlobID: Result<[UInt8], Error>] = [:]
        do { try requireFullAccess("blobs") } catch {
            for id in ids { results[id] = .failure(error) }
            return results
        }
        var seen = Set<BlobID>()
        var packs: [String: (size: Int64, blobs: [PackedBlob])] = [:]
        var order: [String] = []
        var alone: [BlobID] = []
        stateLock.withLock {
            for id in ids where seen.insert(id).inserted {
                guard let hit = index.lookup(kind, id) else { alone.append(id); continue }
                let blob = PackedBlob(kind: kind, id: id, offset: hit.location.offset, length: hit.location.length,
                                      rawLength: hit.location.rawLength, compressed: hit.location.compressed)
                if packs[hit.pack] == nil { order.append(hit.pack); packs[hit.pack] = (hit.size, []) }
                packs[hit.pack]!.blobs.append(blob)
            }
        }
        if kind == .tree, storage.properties.remote {
            // Tree packs on remote storage: read whole, once, and kept decrypted (``treePackPlaintext(_:size:)``).
            let small = order.filter { packs[$0]!.size <= Self.treePackCacheLimit }.map { ($0, packs[$0]!.size) }
            var served = Set<String>()
            try? await forEachConcurrently(small, width: reads.parallel, { item in
                try await self.treePackPlaintext(item.0, size: item.1)
            }, consume: { item, result in
                guard case .success(let plain) = result else { return }  // read again below, which reports the error
                for blob in packs[item.0]!.blobs { results[blob.id] = treeBlob(plain, pack: item.0, blob: blob) }
                served.insert(item.0)
            })
            order.removeAll { served.contains($0) }
        }
        let ranges = PackRange.plan(order.map { ($0, packs[$0]!.size, packs[$0]!.blobs) }, reads)
        // Headers first, one per pack, so ranges of one pack loading at once do not each read it.
        // An uncached header is read together with the pack's first range when that range ends
        // near the pack's start (``maxPrefixRead``): one read from the pack's start to the range's
        // end, a request saved for at most 1 MiB of bytes; the other ranges then read with the
        // header cached.
        let uncached = order.filter { name in stateLock.withLock { headerCache[name] == nil } }
        let firsts = uncached.compactMap { name in ranges.firstIndex { $0.pack == name } }
            .filter { Repository.prefixEstimate(ranges[$0]) <= Repository.maxPrefixRead }
        let headerOnly = uncached.filter { name in !firsts.contains { ranges[$0].pack == name } }.map { HeaderToRead(name: $0, size: packs[$0]!.size) }
        try? await forEachConcurrently(headerOnly, width: reads.parallel, { pack in
            _ = try await self.packHeader(try ObjectName(.data, pack.name), size: pack.size)
        }, consume: { _, _ in })  // a failure here is met again, and reported, by the range's read
        var done = Set<Int>()
        try? await forEachConcurrently(firsts, width: reads.parallel, { index in
            await self.loadRangeWithHeader(kind, ranges[index])
        }, consume: { index, result in
            if case .success(let pairs?) = result { for (id, r) in pairs { results[id] = r }; done.insert(index) }
        })

        enum Work: Sendable { case range(PackRange), alone(BlobID) }
        let work = ranges.indices.filter { !done.contains($0) }.map { Work.range(ranges[$0]) } + alone.map(Work.alone)
        try? await forEachConcurrently(work, width: reads.parallel, { item -> [(BlobID, Result<[UInt8], Error>)] in
            switch item {
            case .alone(let id):
                do { return [(id, .success(try await self.load(kind, id)))] } catch { return [(id, .failure(error))] }
            case .range(let range):
                return await self.loadRange(kind, range)
            }
        }, consume: { _, result in
            if case .success(let pairs) = result { for (id, r) in pairs { results[id] = r } }
        })
        return results
    }

    /// Largest tree pack read whole and kept decrypted on remote storage, and the most bytes kept.
    static let treePackCacheLimit: Int64 = 8 << 20

    /// The whole plaintext of tree pack `pack` (`size` stored bytes), from the cache or with one read
    /// of the whole object (its header parsed and authenticated from the same bytes), then kept:
    /// planning a restore, `ls` and `check` walk the trees level by level, and on remote storage
    /// each level was one more round trip to the same few packs (7 GETs of one pack to plan the
    /// restore of a 6-level tree). The cache holds at most ``treePackCacheLimit`` bytes (emptied
    /// when a pack would not fit) and is only used on remote storage.
    func treePackPlaintext(_ pack: String, size: Int64) async throws -> [UInt8] {
        if let cached = stateLock.withLock({ treePackCache[pack] }) { return cached }
        let name = try ObjectName(.data, pack)
        let bytes = try await Self.loadObjectBytes(storage, name)
        let opened = try openPack(bytes: bytes, name: name)
        let plain = try CofferObject.decryptAll(bytes, opened)
        stateLock.withLock {
            if treePackCacheBytes + plain.count > Int(Self.treePackCacheLimit) { treePackCache.removeAll(); treePackCacheBytes = 0 }
            if treePackCache.updateValue(plain, forKey: pack) == nil { treePackCacheBytes += plain.count }
        }
        return plain
    }

    /// A tree blob from its pack's whole plaintext: bounds checked (the index places it), then
    /// decompressed and checked against its id.
    func treeBlob(_ plain: [UInt8], pack: String, blob: PackedBlob) -> Result<[UInt8], Error> {
        let from = Int(blob.offset), to = Int(blob.offset) + Int(blob.length)
        guard from >= 0, from <= to, to <= plain.count else {
            return .failure(RepositoryError.damaged(object: "data/\(pack)", reason: "tree blob \(blob.id.hex) lies outside the pack's \(plain.count) bytes"))
        }
        return Result { try unpack(Array(plain[from..<to]), blob: blob, object: "data/\(pack)") }
    }

    /// The pack's header and `range` with one read from the pack's start (its header is not cached):
    /// the header (at most 64 KiB assumed) and the range's STREAM chunks (at most 1/256 overhead
    /// assumed). Nil when that did not work out (a longer header, a failed read, damage): the
    /// range is then read as usual, which reports the error.
    private struct HeaderToRead: Sendable { let name: String; let size: Int64 }

    /// Longest read from a pack's start that carries its header and first range together.
    static let maxPrefixRead: Int64 = 1 << 20

    /// Bytes from a pack's start to the end of `range`'s STREAM chunks, over-estimated: a header of
    /// at most 64 KiB and at most 1/256 of tags.
    static func prefixEstimate(_ range: PackRange) -> Int64 {
        min(range.packSize, Int64(64 << 10) + Int64(range.end) + Int64(range.end / 256) + 64)
    }

    private func loadRangeWithHeader(_ kind: BlobKind, _ range: PackRange) async -> [(BlobID, Result<[UInt8], Error>)]? {
        guard let name = try? ObjectName(.data, range.pack) else { return nil }
        guard let prefix = try? await storage.load(name, range: 0..<Repository.prefixEstimate(range)),
              let opened = try? openPack(bytes: prefix, name: name),
              let layout = try? CofferObject.layout(opened, size: Int(range.packSize)),
              let span = try? CofferObject.sealedRange(opened, layout: layout, offset: range.start, length: range.end - range.start),
              span.range.upperBound <= Int64(prefix.count),
              let plain = try? CofferObject.decryptRange(Array(prefix[Int(span.range.lowerBound)..<Int(span.range.upperBound)]), chunks: span.chunks,
                                                         layout: layout, opened, offset: range.start, length: range.end - range.start)
        else { return nil }
        return split(plain, range, object: name.description)
    }

    /// The blobs of `range` from its plaintext, each decompressed and checked against its id.
    private func split(_ plain: [UInt8], _ range: PackRange, object: String) -> [(BlobID, Result<[UInt8], Error>)] {
        range.blobs.map { blob in
            let from = Int(blob.offset) - range.start
            do {
                return (blob.id, .success(try unpack(Array(plain[from..<from + Int(blob.length)]), blob: blob, object: object)))
            } catch {
                return (blob.id, .failure(error))
            }
        }
    }

    private func loadRange(_ kind: BlobKind, _ range: PackRange) async -> [(BlobID, Result<[UInt8], Error>)] {
        let object = "data/\(range.pack)"
        let plain: [UInt8]
        do {
            plain = try await readStored(pack: range.pack, size: range.packSize, offset: range.start, length: range.end - range.start)
        } catch {
            var out: [(BlobID, Result<[UInt8], Error>)] = []
            for blob in range.blobs {
                do { out.append((blob.id, .success(try await load(kind, blob.id)))) } catch { out.append((blob.id, .failure(error))) }
            }
            return out
        }
        return split(plain, range, object: object)
    }
}

// MARK: Whole-pack reads (pack-ordered restore)

/// Where a data blob lies: its pack (name and stored size, from the index) and its trailer entry.
struct BlobPlacement: Sendable {
    let pack: String
    let packSize: Int64
    let blob: PackedBlob
}

extension Repository {
    /// Where the index places a blob; nil when it is not in a stored pack (or the repository is
    /// opened write-only: nothing can be read then).
    func placement(_ kind: BlobKind, _ id: BlobID) -> BlobPlacement? {
        guard access == .full else { return nil }
        return stateLock.withLock {
            index.lookup(kind, id).map { hit in
                BlobPlacement(pack: hit.pack, packSize: hit.size,
                              blob: PackedBlob(kind: kind, id: id, offset: hit.location.offset, length: hit.location.length,
                                               rawLength: hit.location.rawLength, compressed: hit.location.compressed))
            }
        }
    }

    /// Opens a pack whose stored bytes (at least its header) are `bytes`: the header is parsed,
    /// authenticated under the data keys and checked to name the pack, then cached as
    /// ``packHeader(_:size:)`` caches it.
    func openPack(bytes: [UInt8], name: ObjectName) throws -> CofferObject.Opened {
        let parsed = try CofferObject.parseHeader(bytes, object: name.description)
        let fileKey = try dataKeyring.fileKey(for: parsed.header, object: name.description)
        let opened = try CofferObject.open(parsed, fileKey: fileKey, object: name.description)
        stateLock.withLock {
            if headerCache.count >= 256 { headerCache.removeAll() }
            headerCache[name.name] = opened
        }
        return opened
    }

    /// Whether a read of plaintext `start..<end` of a pack of `size` stored bytes whose header is not
    /// cached reads the whole object (one request, the header parsed from it) rather than the header
    /// and then the range (two): when at most half of the object would be read for nothing.
    static func readsWholePack(start: Int, end: Int, size: Int64) -> Bool {
        Int64(start) + max(0, size - Int64(end)) <= size / 2
    }

    /// Reads the blobs `blobs` of one pack with ONE read of the storage when its header is cached
    /// or the blobs span most of it (``readsWholePack(start:end:size:)``: the whole object, its
    /// header parsed from the same bytes), otherwise the header then one ranged read. The span is
    /// decrypted STREAM chunk by chunk, then each blob is decompressed and checked against its id
    /// and handed to `each` (in offset order) and dropped: memory is the span's ciphertext and
    /// plaintext, once. A chunk that fails authentication fails only the blobs in it (with the error
    /// ``load(_:_:)`` names); a read that fails as a whole (not a damaged or missing object) is
    /// retried blob by blob.
    func readPackBlobs(pack: String, size: Int64, blobs: [PackedBlob],
                       each: (PackedBlob, Result<[UInt8], Error>) -> Void) async {
        let sorted = blobs.sorted { $0.offset < $1.offset }
        guard let first = sorted.first else { return }
        func failAll(_ error: Error) { for blob in sorted { each(blob, .failure(error)) } }
        let name: ObjectName
        do { name = try ObjectName(.data, pack) } catch { return failAll(error) }
        do { try requireFullAccess("blobs") } catch { return failAll(error) }
        let spanStart = Int(first.offset)
        let spanEnd = sorted.map { Int($0.offset) + Int($0.length) }.max()!
        var sealed: [UInt8]
        var sealedBase: Int64
        let opened: CofferObject.Opened
        let layout: StreamEngine.PayloadLayout
        let chunks: ClosedRange<Int>
        do {
            let cached = stateLock.withLock { headerCache[pack] }
            if cached == nil && Repository.readsWholePack(start: spanStart, end: spanEnd, size: size) {
                sealed = try await storage.load(name, range: 0..<size)
                guard Int64(sealed.count) == size else {
                    throw RepositoryError.damaged(object: name.description, reason: "it is shorter than the index says")
                }
                opened = try openPack(bytes: sealed, name: name)
                sealedBase = 0
                layout = try CofferObject.layout(opened, size: Int(size))
                chunks = try CofferObject.sealedRange(opened, layout: layout, offset: spanStart, length: spanEnd - spanStart).chunks
            } else {
                opened = try await packHeader(name, size: size)
                layout = try CofferObject.layout(opened, size: Int(size))
                let range: Range<Int64>
                (chunks, range) = try CofferObject.sealedRange(opened, layout: layout, offset: spanStart, length: spanEnd - spanStart)
                sealed = try await storage.load(name, range: range)
                sealedBase = range.lowerBound
            }
        } catch StorageError.notFound {
            return failAll(RepositoryError.missing(object: name.description, reason: "the index lists blobs in it"))
        } catch StorageError.rangeOutOfBounds {
            return failAll(RepositoryError.damaged(object: name.description, reason: "it is shorter than the index says"))
        } catch let error as RepositoryError {
            return failAll(error)
        } catch {
            // A read that failed as a whole (the storage gave up on it): each blob read alone.
            for blob in sorted {
                do { each(blob, .success(try await load(blob.kind, blob.id))) } catch { each(blob, .failure(error)) }
            }
            return
        }
        // Each blob's STREAM chunks are decrypted as it is taken out (the chunk it shares with the
        // previous blob kept, not decrypted twice): memory is the sealed span plus one blob. A chunk
        // that does not authenticate fails the blobs in it only.
        _ = chunks
        let sealedChunk = opened.chunkSize + Limits.tagSize
        let lastChunk = Int(layout.chunkCount) - 1
        var previous: (k: Int, plain: [UInt8]?)? = nil
        func chunk(_ k: Int) -> [UInt8]? {
            if let previous, previous.k == k { return previous.plain }
            let isFinal = k == lastChunk
            let start = opened.parsed.payloadStart + k * sealedChunk - Int(sealedBase)
            let n = isFinal ? layout.finalSealedSize : sealedChunk
            let plainSize = isFinal ? Int(layout.plaintextSize) - k * opened.chunkSize : opened.chunkSize
            var plain: [UInt8]? = nil
            if start >= 0, start + n <= sealed.count {
                plain = sealed.withUnsafeBytes { raw in
                    opened.cipher.open(UnsafeRawBufferPointer(rebasing: raw[start..<(start + n)]), key: opened.payloadKey,
                                       counter: UInt64(k), isFinal: isFinal).map { [UInt8]($0) }
                }
                if plain?.count != plainSize { plain = nil }
            }
            previous = (k, plain)
            return plain
        }
        for blob in sorted {
            let from = Int(blob.offset), to = Int(blob.offset) + Int(blob.length)
            var stored: [UInt8] = []
            stored.reserveCapacity(Int(blob.length))
            var bad: Int?
            if to > from {
                for k in (from / opened.chunkSize)...((to - 1) / opened.chunkSize) {
                    guard let plain = chunk(k) else { bad = k; break }
                    let base = k * opened.chunkSize
                    stored += plain[(max(from, base) - base)..<(min(to, base + plain.count) - base)]
                }
            }
            if let bad {
                each(blob, .failure(RepositoryError.damaged(object: name.description, reason: "payload chunk \(bad) failed authentication")))
                continue
            }
            do {
                each(blob, .success(try unpack(stored, blob: blob, object: name.description)))
            } catch {
                each(blob, .failure(error))
            }
        }
    }
}
