// coffer-bench-chunker: measures the content-defined chunker (a benchmark, not a test).
//
//   coffer-bench-chunker [--avg 256K,512K,1M,2M] [--repeat N] [--no-throughput] BEFORE AFTER
//
// BEFORE and AFTER are two versions of the same data (files, or directories walked recursively in
// name order). For each average chunk size it prints: chunks of BEFORE, chunks of AFTER, chunks and
// bytes of AFTER not in BEFORE (what an incremental backup adds), their zstd-3 size, and the
// throughput of cut-point search in memory (1 thread and 2 threads at once) and of
// read + chunk + HMAC-SHA256 id from the files (1 thread). The gear table is the fixed test table.
import CofferFormat
import CofferRepository
import Crypto
import Dispatch
import Glibc

func parseSize(_ s: String) -> Int {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    if let last = s.last, let unit = units[last] { return Int(s.dropLast())! * unit }
    return Int(s)!
}

func human(_ n: Int) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
    if n >= 1 << 10 && n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
    return "\(n)"
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Regular files under `path` (or `path` itself), in name order.
func files(under path: String) -> [String] {
    var st = stat()
    guard stat(path, &st) == 0 else { fatalError("cannot stat \(path)") }
    if (st.st_mode & S_IFMT) != S_IFDIR { return [path] }
    guard let dir = opendir(path) else { fatalError("cannot open \(path)") }
    var names: [String] = []
    while let e = readdir(dir) {
        let name = withUnsafePointer(to: &e.pointee.d_name) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(dir)
    return names.sorted().flatMap { files(under: path + "/" + $0) }
}

func readWhole(_ path: String) -> [UInt8] {
    let source = try! ByteSource.open(path: path)
    defer { source.close() }
    let size = Int(source.regularFileSize!)
    return [UInt8](unsafeUninitializedCapacity: size) { buf, n in
        n = try! source.readFully(into: UnsafeMutableRawBufferPointer(buf))
    }
}

struct Chunked {
    var ids: [ChunkID: Int] = [:]   // id -> size
    var count = 0
    var bytes = 0
}

/// read + chunk + id for every file under `path`.
func chunkAll(_ paths: [String], cdc: FastCDC, idKey: ChunkIDKey) -> Chunked {
    var result = Chunked()
    for path in paths {
        let source = try! ByteSource.open(path: path)
        let chunker = StreamChunker(source: source, cdc: cdc)
        while let (id, size) = try! chunker.next({ (idKey.id(of: $0), $0.count) }) {
            result.ids[id] = size
            result.count += 1
            result.bytes += size
        }
        source.close()
    }
    return result
}

/// Cut-point search over bytes already in memory; returns the chunk count.
func cutAll(_ data: [UInt8], cdc: FastCDC) -> Int {
    data.withUnsafeBytes { raw in
        var offset = 0, count = 0
        while offset < raw.count {
            let cut = cdc.cutPoint(UnsafeRawBufferPointer(rebasing: raw[offset...]), isFinal: true)!
            offset += cut
            count += 1
        }
        return count
    }
}

var args = Array(CommandLine.arguments.dropFirst())
var averages = [256 << 10, 512 << 10, 1 << 20, 2 << 20]
var repeats = 3
var throughput = true
while let first = args.first, first.hasPrefix("--") {
    args.removeFirst()
    switch first {
    case "--avg": averages = args.removeFirst().split(separator: ",").map { parseSize(String($0)) }
    case "--repeat": repeats = Int(args.removeFirst())!
    case "--no-throughput": throughput = false
    default: fatalError("unknown option \(first)")
    }
}
guard args.count == 2 else {
    print("usage: coffer-bench-chunker [--avg 256K,512K,1M,2M] [--repeat N] [--no-throughput] BEFORE AFTER")
    exit(2)
}
let before = files(under: args[0]), after = files(under: args[1])
let idKey = try! ChunkIDKey(key: SymmetricKey(data: [UInt8](repeating: 1, count: 32)))
let zstd = try! ZstdCompressor(level: 3)
// The largest file is the one the in-memory throughput is measured on.
let largest = after.max { lseekSize($0) < lseekSize($1) }!
func lseekSize(_ p: String) -> Int { var st = stat(); stat(p, &st); return Int(st.st_size) }
let sample = throughput ? readWhole(largest) : []
print("BEFORE \(args[0]): \(before.count) files; AFTER \(args[1]): \(after.count) files;",
      "throughput measured on \(largest) (\(sample.count) bytes), best of \(repeats)")
print("avg | min/max | chunks before | chunks after | mean chunk | new chunks | new bytes | new bytes zstd-3 |",
      "cut MB/s 1 thr | cut MB/s 2 thr | read+cut+HMAC MB/s 1 thr")
for average in averages {
    let cdc = FastCDC(parameters: try! ChunkerParameters(averageSize: average), gear: .fixedForTesting)
    let a = chunkAll(before, cdc: cdc, idKey: idKey)
    var bestPipeline = Double.infinity
    var b = Chunked()
    for _ in 0..<max(repeats, 1) {
        let t0 = now()
        b = chunkAll(after, cdc: cdc, idKey: idKey)
        bestPipeline = min(bestPipeline, now() - t0)
    }
    // New content: chunks of AFTER whose id BEFORE does not have. Their zstd size is computed from
    // the files again (the chunk bytes are not kept).
    var newChunks = 0, newBytes = 0, newCompressed = 0
    var seen = Set(a.ids.keys)
    for path in after {
        let source = try! ByteSource.open(path: path)
        let chunker = StreamChunker(source: source, cdc: cdc)
        while try! chunker.next({ (chunk: UnsafeRawBufferPointer) -> Void in
            let id = idKey.id(of: chunk)
            if seen.insert(id).inserted {
                newChunks += 1
                newBytes += chunk.count
                newCompressed += try! zstd.compress(chunk).count
            }
        }) != nil {}
        source.close()
    }
    var best1 = Double.infinity, best2 = Double.infinity
    for _ in 0..<(throughput ? repeats : 0) {
        let t0 = now()
        _ = cutAll(sample, cdc: cdc)
        best1 = min(best1, now() - t0)
        let t1 = now()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in _ = cutAll(sample, cdc: cdc) }
        best2 = min(best2, now() - t1)
    }
    let mb = Double(sample.count) / 1e6
    let p = cdc.parameters
    let rates = throughput
        ? "\(Int(mb / best1)) | \(Int(2 * mb / best2)) | \(Int(Double(b.bytes) / 1e6 / bestPipeline))"
        : "- | - | -"
    print("\(human(average)) | \(human(p.minSize))/\(human(p.maxSize)) | \(a.count) | \(b.count) |",
          "\(b.bytes / max(b.count, 1)) | \(newChunks) | \(newBytes) | \(newCompressed) |", rates)
}
