import Dispatch

/// The number of threads the element-wise kernels use (OpenBLAS is set separately, to the
/// same number, by `setThreads`). Several ranks on one machine should use 1 each.
package nonisolated(unsafe) var kernelThreads = 1

/// Sets the thread count of both OpenBLAS and the project's own kernels.
package func setThreads(_ n: Int) {
    kernelThreads = max(1, n)
    BLAS.setThreads(kernelThreads)
}

/// Runs `body(range)` over `0..<count` split into at most `kernelThreads` contiguous ranges,
/// in parallel. Small loops (below `grain` items) run inline: a thread hop costs microseconds.
@inline(__always)
package func parallelRanges(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
    let parts = min(kernelThreads, count / max(grain, 1))
    if parts <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            let lo = count * p / parts, hi = count * (p + 1) / parts
            body(lo..<hi)
        }
    }
}
