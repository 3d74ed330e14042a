// swift-tools-version:6.0
// The libFuzzer targets (docs/FUZZING.md). A package of its own, so that the main build never
// compiles them; scripts/fuzz.sh builds it with the sanitizer flags into ../.build-fuzz.
import PackageDescription

let package = Package(
    name: "CofferFuzz",
    products: [
        // One shared library holding every target and, linked in statically, the Coffer modules
        // it calls; each fuzzer is a small driver (Driver/Driver.swift) linked against it.
        .library(name: "CofferFuzzTargets", type: .dynamic, targets: ["CofferFuzzTargets"]),
    ],
    dependencies: [
        .package(name: "Coffer", path: ".."),
    ],
    targets: [
        .target(name: "CofferFuzzTargets", dependencies: [
            .product(name: "CofferFormat", package: "Coffer"),
            .product(name: "CofferKeys", package: "Coffer"),
            .product(name: "CofferCloud", package: "Coffer"),
            .product(name: "CofferInterop", package: "Coffer"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
