import AsymModel
import Foundation

/// A live one-line progress bar on a terminal: step/total, loss, samples/s, ETA and the
/// trusted/untrusted time split. Off a terminal it draws nothing (the periodic log lines
/// carry the same figures).
package final class ProgressBar {
    package let enabled: Bool
    private let total: Int
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var shown = false

    /// Whether standard output is a person's terminal. Under mpirun every rank's output goes
    /// through a pseudo-terminal whatever mpirun's own output is, so there the launch script
    /// says (ASYMML_TTY=1) whether its output is a terminal.
    package static var onTerminal: Bool {
        let env = ProcessInfo.processInfo.environment
        if env["OMPI_COMM_WORLD_SIZE"] != nil { return env["ASYMML_TTY"] == "1" }
        return isatty(STDOUT_FILENO) != 0
    }

    package init(total: Int, enabled: Bool = ProgressBar.onTerminal) {
        self.total = total
        self.enabled = enabled
    }

    /// Redraws the bar, at most ten times a second.
    package func update(step: Int, startStep: Int, loss: Double, samplesPerSecond: Double, trustedMs: Double?, untrustedMs: Double?) {
        guard enabled, Date().timeIntervalSince(lastDraw) > 0.1 || step == total else { return }
        lastDraw = Date()
        let width = 24
        let filled = total > 0 ? width * step / total : width
        let elapsed = Date().timeIntervalSince(started)
        let done = max(step - startStep, 1)
        let eta = elapsed / Double(done) * Double(total - step)
        var line = String(format: "\r\u{1B}[K%6d/%d [%@%@] loss %.4f  %5.0f samples/s  ETA %@", step, total,
                          String(repeating: "#", count: filled), String(repeating: ".", count: width - filled),
                          loss, samplesPerSecond, ProgressBar.clock(eta))
        if let t = trustedMs, let u = untrustedMs { line += String(format: "  T %.0f / U %.0f ms", t, u) }
        FileHandle.standardOutput.write(line.data(using: .utf8)!)
        shown = true
    }

    /// Clears the bar so that a log line can take its place; the next update redraws it.
    package func clear() {
        guard enabled, shown else { return }
        FileHandle.standardOutput.write("\r\u{1B}[K".data(using: .utf8)!)
        shown = false
    }

    package static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
