import AsymTestSupport
import Foundation
import XCTest

/// Each convolution path of the release binary against reference loops (`asymml selftest`):
/// oneDNN capped at AVX2 and at AVX-512 (oneDNN reads `ONEDNN_MAX_CPU_ISA` once, so each
/// cap needs its own process), and the OpenBLAS im2col path.
final class KernelPathTests: XCTestCase {
    let binary = releaseBinary

    /// The release binary is built by `make test` first; a developer's run without it skips,
    /// CI's fails (a skip there would hide a broken build).
    override func setUpWithError() throws {
        guard !FileManager.default.isExecutableFile(atPath: binary) else { return }
        if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail("\(binary) is missing: make test builds it first") }
        throw XCTSkip("build the release binary first (make test does)")
    }

    func testEveryKernelPathMatchesTheReference() throws {
        let avx512 = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.contains(" avx512f") ?? false
        var paths = [("dnnl", "AVX2", "avx2"), ("blas", "AVX2", "avx2")]
        if avx512 { paths.insert(("dnnl", "AVX512_CORE", "avx512_core"), at: 1) }
        for (kernels, cap, isa) in paths {
            let job = try runJob(["ASYMML_CONV=\(kernels)", "ONEDNN_MAX_CPU_ISA=\(cap)", binary, "selftest"], timeout: 300)
            XCTAssertEqual(job.status, 0, "\(kernels) \(cap): \(job.output)")
            XCTAssertTrue(job.output.contains("conv kernels \(kernels), oneDNN isa \(isa): ok"), "\(kernels) \(cap): \(job.output)")
        }
        let bad = try runJob(["ASYMML_CONV=mkl", binary, "selftest"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("ASYMML_CONV: 'mkl' is not one of dnnl, blas"), bad.output)
    }
}
