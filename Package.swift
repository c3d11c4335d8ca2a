// swift-tools-version:6.0
// AsymML for Swift: private training with trusted (enclave) and untrusted (accelerator) ranks.
import PackageDescription

// Hot loops are plain pointer arithmetic; bounds checks there cost 2-3x, and every kernel is
// tested against a reference loop, so the kernel and split modules build unchecked. Every
// other module keeps Swift's checks (preconditions, bounds, overflow) in release builds too.
let fastMath: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "asymml",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "asymml", targets: ["asymml"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Thin C shims over system libraries (found through pkg-config).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas"),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5-serial"),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // oneDNN: convolutions on the widest vector unit the CPU has (no pkg-config file).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        // PNG and JPEG decoding for image_folder (libpng, libjpeg-turbo): C, because both
        // libraries report errors by longjmp, which must not cross Swift frames.
        .target(name: "CImage", linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg")]),

        // Tensors and the numeric kernels (forward and backward), on OpenBLAS and oneDNN.
        .target(name: "AsymKernels", dependencies: ["CBLAS", "CDNNL"], swiftSettings: fastMath),
        // Box-Muller in C, compiled for AVX-512, AVX2 and the baseline (the loader picks one).
        .target(name: "CNoise"),
        // The one source of secret randomness: keystreams under keys from the system CSPRNG.
        .target(name: "AsymSecrets", dependencies: ["AsymKernels", "CNoise", .product(name: "Crypto", package: "swift-crypto"),
                                                   .product(name: "_CryptoExtras", package: "swift-crypto")],
                swiftSettings: fastMath),
        // Freivalds-style checks of what untrusted ranks return (docs/DESIGN.md §8).
        .target(name: "AsymIntegrity", dependencies: ["AsymKernels", "AsymSecrets"], swiftSettings: fastMath),
        // The asymmetric split: light SVD, split convolutions, the untrusted executor API.
        .target(name: "AsymSplit", dependencies: ["AsymKernels", "AsymIntegrity"], swiftSettings: fastMath),
        // What crosses, hidden: masking (exact) and residual noise (not exact), as executor wrappers.
        .target(name: "AsymPrivacy", dependencies: ["AsymKernels", "AsymSplit", "AsymSecrets", "AsymIntegrity"], swiftSettings: fastMath),
        // Data sets: Fashion-MNIST IDX (gzip), CIFAR-10 binary, NumPy .npz, image folders, synthetic.
        .target(name: "AsymData", dependencies: ["AsymKernels", "CZlib", "CImage"]),
        // A small Swift wrapper over the HDF5 C library.
        .target(name: "AsymHDF5", dependencies: ["CHDF5", "CZlib"]),
        // The model: config (YAML) and its feature rules, layers, models, placement, the
        // optimizer and schedules, and the collective seam between trusted replicas.
        .target(name: "AsymModel", dependencies: ["AsymKernels", "AsymSplit", "AsymIntegrity", "Yams"]),
        // Training: the trainer, the training loop, data sources, checkpoints, the run folder.
        .target(name: "AsymTrain", dependencies: ["AsymModel", "AsymKernels", "AsymSplit", "AsymIntegrity", "AsymPrivacy", "AsymData", "AsymHDF5",
                                                 "AsymViz"]),
        // Tools around training: plan (costs), bench (timings) and pictures (plots, privacy).
        .target(name: "AsymTools", dependencies: ["AsymModel", "AsymTrain", "AsymKernels", "AsymSplit", "AsymData", "AsymViz",
                                                 "AsymPrivacy", "AsymIntegrity"]),
        // Pictures and TensorBoard: PNG writing, line charts, scalar event files.
        .target(name: "AsymViz", dependencies: ["CZlib"]),
        // The MPI transport: roles, the wire protocol, remote untrusted execution, reduction.
        .target(name: "AsymCluster", dependencies: ["CMPI", "AsymModel", "AsymSplit", "AsymKernels",
                                                   .product(name: "Crypto", package: "swift-crypto")]),
        // Running a job: one process or one rank of an MPI job, the run folder, resume.
        .target(name: "AsymRun", dependencies: ["AsymModel", "AsymTrain", "AsymCluster", "AsymSplit", "AsymKernels", "AsymHDF5"]),
        // asymml attack: what an untrusted rank can learn from the tensors it receives.
        .target(name: "AsymAttack", dependencies: ["AsymModel", "AsymTrain", "AsymSplit", "AsymPrivacy", "AsymKernels", "AsymData"]),
        // The command-line interface.
        .executableTarget(name: "asymml", dependencies: [
            "AsymModel", "AsymTrain", "AsymTools", "AsymRun", "AsymCluster", "AsymAttack", "AsymSplit", "AsymKernels",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Inputs that several test targets share (random and low-rank feature maps).
        .target(name: "AsymTestSupport", dependencies: ["AsymKernels"], path: "Tests/AsymTestSupport"),
        .testTarget(name: "AsymKernelsTests", dependencies: ["AsymKernels", "AsymTestSupport"]),
        .testTarget(name: "AsymSecretsTests", dependencies: ["AsymSecrets", "AsymKernels", "CNoise"]),
        .testTarget(name: "AsymIntegrityTests", dependencies: ["AsymTestSupport", "AsymIntegrity", "AsymSplit", "AsymKernels"]),
        .testTarget(name: "AsymSplitTests", dependencies: ["AsymTestSupport", "AsymSplit", "AsymKernels"]),
        .testTarget(name: "AsymPrivacyTests", dependencies: ["AsymTestSupport", "AsymPrivacy", "AsymSplit", "AsymKernels"]),
        .testTarget(name: "AsymDataTests", dependencies: ["AsymData"]),
        .testTarget(name: "AsymHDF5Tests", dependencies: ["AsymHDF5"]),
        .testTarget(name: "AsymModelTests", dependencies: ["AsymTestSupport", "AsymModel", "AsymKernels"]),
        .testTarget(name: "AsymTrainTests", dependencies: ["AsymTestSupport", "AsymModel", "AsymTrain", "AsymRun", "AsymTools", "AsymViz", "AsymSplit", "AsymPrivacy", "AsymKernels"]),
        .testTarget(name: "AsymRunTests", dependencies: ["AsymTestSupport", "AsymRun", "AsymTrain", "AsymModel", "AsymKernels"]),
        .testTarget(name: "AsymToolsTests", dependencies: ["AsymTestSupport", "AsymTools", "AsymModel"]),
        .testTarget(name: "AsymAttackTests", dependencies: ["AsymAttack", "AsymModel", "AsymTrain", "AsymKernels", "AsymData"]),
        .testTarget(name: "AsymVizTests", dependencies: ["AsymViz", "CZlib"]),
        // Starts real mpirun jobs of the built executable (make test builds it first).
        .testTarget(name: "AsymClusterTests", dependencies: ["AsymTestSupport", "AsymCluster", "AsymModel", "AsymSplit", "AsymTrain", "AsymHDF5",
                                                            .product(name: "Crypto", package: "swift-crypto")]),
    ],
    swiftLanguageModes: [.v5]
)
