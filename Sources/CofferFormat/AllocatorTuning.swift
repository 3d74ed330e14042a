#if canImport(Glibc)
import Glibc
#endif

/// glibc's mallopt(3); <malloc.h> is not part of Swift's Glibc module.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// glibc malloc settings for Coffer's allocation pattern (a few large buffers per chunk or pack,
/// freed and allocated again at a high rate, from a handful of threads).
///
/// - Thresholds: swift-crypto's `seal`/`open` allocate their output per call. With glibc's defaults
///   a 1 MiB allocation is served by mmap and unmapped on free (or the heap top is trimmed), so
///   every chunk re-faults its pages: measured here, a fresh process sealed 6x slower
///   (docs/PERFORMANCE.md). Raising the mmap and trim thresholds keeps those blocks in the heap
///   for reuse.
/// - Arenas: glibc gives threads that contend for the heap their own arena (up to 8 per core), and
///   each arena keeps the blocks freed in it for its own reuse, so the same working set is held
///   several times over: a repository backup peaked at 60 MiB of anonymous memory with the default
///   and at 44 MiB with 2 arenas (1 gave the same; 2 leaves concurrent allocations a second lock;
///   docs/PERFORMANCE.md, "Repository", peak RSS).
///
/// A `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the environment
/// (glibc's own tunables) wins over the setting here. This changes process-wide settings, so it is
/// the executable's choice to call it, once, at start-up.
public enum AllocatorTuning {
    static let trimThreshold: Int32 = -1  // M_TRIM_THRESHOLD
    static let mmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD
    static let arenaMax: Int32 = -8  // M_ARENA_MAX
    /// Malloc arenas (see above).
    public static let arenas: Int32 = 2

    public static func apply() {
        #if os(Linux)
        func set(_ parameter: Int32, _ value: Int32, unlessEnvironment name: String) {
            if getenv(name) == nil { _ = glibcMallopt(parameter, value) }
        }
        set(mmapThreshold, 32 << 20, unlessEnvironment: "MALLOC_MMAP_THRESHOLD_")
        set(trimThreshold, 128 << 20, unlessEnvironment: "MALLOC_TRIM_THRESHOLD_")
        set(arenaMax, arenas, unlessEnvironment: "MALLOC_ARENA_MAX")
        #endif
    }

    /// The mmap threshold of a repository backup or restore (``applyForRepository()``): blocks from
    /// 1 MiB up (pack buffers, the chunker's buffer of a large file, a restore's pack reads, the
    /// largest chunks) are mapped on their own.
    public static let repositoryMmapThreshold: Int32 = 1 << 20

    /// For a repository backup or restore, after ``apply()``: a 1 MiB mmap threshold. (A restore
    /// reads each pack into a new buffer of a few MiB; in the heap the freed ones were kept: its peak
    /// RSS went from 64–68 to 62 MiB on the benchmark data with the threshold.) A backup's large buffers
    /// are few and long-lived (pack buffers are pooled, one chunker buffer per large file), so mapping
    /// them costs no measurable CPU, while in the heap the freed multi-MiB blocks left holes that the
    /// chunk-sized blocks around them kept from being reused: the heap grew ~4 MiB past what was
    /// live (docs/PERFORMANCE.md, "Memory"). Single-file commands keep ``apply()``'s 32 MiB (their
    /// per-chunk AEAD outputs re-fault when mapped). `MALLOC_MMAP_THRESHOLD_` or
    /// `COFFER_MALLOC_DEFAULTS=1` in the environment leaves the threshold alone.
    public static func applyForRepository() {
        #if os(Linux)
        let defaults = getenv("COFFER_MALLOC_DEFAULTS").map { String(cString: $0) } == "1"
        if getenv("MALLOC_MMAP_THRESHOLD_") == nil && !defaults {
            _ = glibcMallopt(mmapThreshold, repositoryMmapThreshold)
        }
        #endif
    }
}
