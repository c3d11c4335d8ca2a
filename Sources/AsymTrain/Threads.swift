import AsymKernels
import AsymModel
import Foundation

/// Sets this process's kernel and OpenBLAS threads: `train.threads`, or else the machine's
/// cores shared among the ranks that mpirun started on it (all cores for one process).
package func configureThreads(_ config: Config) {
    if config.train.threads > 0 { setThreads(config.train.threads); return }
    let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
    setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
}
