// The libFuzzer entry point of one fuzzer: scripts/fuzz.sh compiles this file with a second one
// that sets `fuzzTargetName`, links it against libCofferFuzzTargets.so, and names the result
// .build-fuzz/fuzzers/fuzz-NAME.
import CofferFuzzTargets

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.run(fuzzTargetName, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
