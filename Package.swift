// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Coffer",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "CofferFormat", targets: ["CofferFormat"]),
        .library(name: "CofferCloud", targets: ["CofferCloud"]),
        .library(name: "CofferKeys", targets: ["CofferKeys"]),
        .library(name: "CofferFiles", targets: ["CofferFiles"]),
        .library(name: "CofferInterop", targets: ["CofferInterop"]),
        .library(name: "CofferRepository", targets: ["CofferRepository"]),
        .library(name: "CofferS3", targets: ["CofferS3"]),
        .executable(name: "coffer", targets: ["coffer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // Layer 1: header and stanza grammar, header MAC, key schedule, parallel STREAM engine.
        .target(name: "CofferFormat", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Cloud services spoken over HTTP: AWS SigV4 (shared with S3 later), AWS KMS, Vault/OpenBao
        // Transit, key URIs and credentials. Knows nothing of the file format.
        .target(name: "CofferCloud", dependencies: [
            "CofferFormat",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Layer 2: one type per way to open a file (key file, passphrase, KMS key, ...).
        .target(name: "CofferKeys", dependencies: [
            "CofferFormat", "CofferCloud",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // Debian's zlib (apt zlib1g-dev): the CRC-32 of .xbcrypt chunks, and inflating test vectors.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Formats users already have: XtraBackup's .xbcrypt (reading), age files (reading and writing).
        .target(name: "CofferInterop", dependencies: [
            "CofferFormat", "CofferKeys", "CZlib",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // Files and directory trees on disk: atomic outputs, directory runs, removal of originals.
        .target(name: "CofferFiles", dependencies: [
            "CofferFormat", "CofferKeys", "CofferInterop",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The backup repository (issue 12), layer 3: storage protocol and local backend,
        // content-defined chunker, keyed chunk ids, zstd through Debian's libzstd.
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", providers: [.apt(["libzstd-dev"])]),
        .target(name: "CofferRepository", dependencies: [
            "CofferFormat", "CofferKeys", "CZstd",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Database backups (issue 14): pg_dump / mariabackup into the repository, restore-db,
        // restore tests into throwaway servers started in temporary directories.
        .target(name: "CofferDatabase", dependencies: [
            "CofferFormat", "CofferKeys", "CofferRepository",
        ]),
        // Repositories on S3-compatible object storage (issue 13): s3:// URIs, an S3 client on the
        // SigV4 signer and async-http-client, and `S3Storage`, the repository's storage on a bucket.
        .target(name: "CofferS3", dependencies: [
            "CofferFormat", "CofferCloud", "CofferRepository",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // The chunker benchmark behind scripts/bench-chunker.sh (a measurement, not a test).
        .executableTarget(name: "coffer-bench-chunker", dependencies: ["CofferRepository"],
                          path: "Benchmarks/ChunkerBench"),
        // Layer 4: the command-line tool, thin.
        .executableTarget(name: "coffer", dependencies: [
            "CofferFormat", "CofferCloud", "CofferKeys", "CofferFiles", "CofferInterop", "CofferRepository",
            "CofferDatabase", "CofferS3",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "CofferFormatTests", dependencies: ["CofferFormat", "CofferKeys"],
                    exclude: ["Vectors"]),
        // Starts and stops the real key servers (moto_server, bao) that the KMS tests talk to.
        .target(name: "CofferTestServers", dependencies: ["CofferCloud"], path: "Tests/CofferTestServers"),
        .testTarget(name: "CofferCloudTests", dependencies: ["CofferCloud", "CofferTestServers"]),
        .testTarget(name: "CofferKeysTests", dependencies: ["CofferKeys", "CofferFormat", "CofferCloud"]),
        // The age test vectors, parsed for the library's and the CLI's tests; system zlib inflates
        // the ones stored compressed.
        .target(name: "AgeTestVectors", dependencies: ["CZlib"], path: "Tests/AgeTestVectors"),
        .testTarget(name: "CofferInteropTests", dependencies: ["CofferInterop", "CofferFormat", "CofferKeys", "AgeTestVectors"]),
        .testTarget(name: "CofferRepositoryTests", dependencies: [
            "CofferRepository", "CZstd", "CofferKeys", "CofferFormat", "CofferTestServers",
            .product(name: "Crypto", package: "swift-crypto"),
        ], exclude: ["Vectors"]),
        .testTarget(name: "CofferDatabaseTests", dependencies: [
            "CofferDatabase", "CofferRepository", "CofferKeys", "CofferFormat", "CofferTestServers",
        ]),
        .testTarget(name: "CofferS3Tests", dependencies: [
            "CofferS3", "CofferCloud", "CofferRepository", "CofferKeys", "CofferFormat", "CofferTestServers",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "CofferFilesTests", dependencies: ["CofferFiles", "CofferKeys", "CofferFormat"]),
        .testTarget(name: "CofferCLITests", dependencies: [
            "CofferFormat", "CofferCloud", "CofferKeys", "CofferTestServers", "AgeTestVectors",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
    ]
)
