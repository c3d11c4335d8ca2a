import Foundation

/// The repository root (for configs/), found from this file's path.
package let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The release binary that `make test` builds before the tests (the MPI and kernel-path tests
/// run it).
package let releaseBinary = repositoryRoot + "/.build/release/asymml"


package struct JobResult {
    package var status: Int32
    package var output: String
    package var seconds: Double
}

/// Collects a pipe's output on a background thread, so a chatty child never blocks on it.
package final class OutputCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    package init(_ pipe: Pipe) {
        DispatchQueue.global().async {
            self.data = pipe.fileHandleForReading.readDataToEndOfFile()
            self.done.signal()
        }
    }
    package var text: String {
        _ = done.wait(timeout: .now() + 5)
        return String(decoding: data, as: UTF8.self)
    }
}

/// Runs a command with a time limit; its output (stdout and stderr) comes back.
package func runJob(_ arguments: [String], timeout: Double = 120, whileRunning: ((Process) -> Void)? = nil) throws -> JobResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    p.environment = env
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    let start = Date()
    try p.run()
    let output = OutputCollector(pipe)
    whileRunning?(p)
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
    return JobResult(status: p.terminationStatus, output: output.text, seconds: Date().timeIntervalSince(start))
}
