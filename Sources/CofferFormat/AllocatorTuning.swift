/// glibc's mallopt(3); <malloc.h> is not part of Swift's Glibc module.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// Keeps glibc from returning chunk-sized allocations to the kernel after every chunk.
///
/// swift-crypto's `seal`/`open` allocate their output per call. With glibc's defaults a 1 MiB
/// allocation is served by mmap and unmapped on free (or the heap top is trimmed), so every chunk
/// re-faults its pages: measured here, a fresh process sealed 6x slower (docs/PERFORMANCE.md).
/// Raising the mmap and trim thresholds keeps those blocks in the heap for reuse. This changes a
/// process-wide setting, so it is the executable's choice to call it, once, at start-up.
public enum AllocatorTuning {
    static let trimThreshold: Int32 = -1  // M_TRIM_THRESHOLD
    static let mmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD

    public static func apply() {
        #if os(Linux)
        _ = glibcMallopt(mmapThreshold, 32 << 20)
        _ = glibcMallopt(trimThreshold, 128 << 20)
        #endif
    }
}
