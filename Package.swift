// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Coffer",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "CofferFormat", targets: ["CofferFormat"]),
        .library(name: "CofferKeys", targets: ["CofferKeys"]),
        .library(name: "CofferFiles", targets: ["CofferFiles"]),
        .library(name: "CofferInterop", targets: ["CofferInterop"]),
        .executable(name: "coffer", targets: ["coffer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // Layer 1: header and stanza grammar, header MAC, key schedule, parallel STREAM engine.
        .target(name: "CofferFormat", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Layer 2: one type per way to open a file (key file, passphrase, ...).
        .target(name: "CofferKeys", dependencies: [
            "CofferFormat",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // Formats users already have: XtraBackup's .xbcrypt (reading), age files (reading and writing).
        .target(name: "CofferInterop", dependencies: [
            "CofferFormat", "CofferKeys",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // Files and directory trees on disk: atomic outputs, directory runs, removal of originals.
        .target(name: "CofferFiles", dependencies: [
            "CofferFormat", "CofferKeys", "CofferInterop",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Layer 4: the command-line tool, thin.
        .executableTarget(name: "coffer", dependencies: [
            "CofferFormat", "CofferKeys", "CofferFiles", "CofferInterop",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "CofferFormatTests", dependencies: ["CofferFormat", "CofferKeys"],
                    exclude: ["Vectors"]),
        .testTarget(name: "CofferKeysTests", dependencies: ["CofferKeys", "CofferFormat"]),
        // The age test vectors, parsed for the library's and the CLI's tests; system zlib inflates
        // the ones stored compressed.
        .systemLibrary(name: "CZlib", path: "Tests/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "AgeTestVectors", dependencies: ["CZlib"], path: "Tests/AgeTestVectors"),
        .testTarget(name: "CofferInteropTests", dependencies: ["CofferInterop", "CofferFormat", "CofferKeys", "AgeTestVectors"]),
        .testTarget(name: "CofferFilesTests", dependencies: ["CofferFiles", "CofferKeys", "CofferFormat"]),
        .testTarget(name: "CofferCLITests", dependencies: [
            "CofferFormat", "AgeTestVectors",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
    ]
)
