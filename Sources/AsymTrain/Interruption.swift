import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The signal that asked this process to stop (0: none). Written by the signal handler only.
nonisolated(unsafe) private var stopSignal: sig_atomic_t = 0

/// Stopping a run without losing it: SIGINT (Ctrl-C), SIGTERM (what Slurm sends before a kill)
/// and SIGUSR1 (what the launchers turn Ctrl-C into under mpirun, which forwards it to every
/// rank, where it would kill the job on SIGINT) ask training to stop after the current step
/// with a checkpoint. A second SIGINT ends the process at once.
package enum Interruption {
    /// The exit status of a run that stopped on a signal after writing its checkpoint.
    package static let exitStatus: Int32 = 130

    /// Installs the handlers (once per process, before training).
    package static func install() {
        for sig in [SIGINT, SIGTERM, SIGUSR1] {
            signal(sig) { received in
                if stopSignal != 0 && received == SIGINT { _exit(Interruption.exitStatus) }
                stopSignal = received
            }
        }
    }

    /// The signal received so far, if any.
    package static var requested: Int32? { stopSignal == 0 ? nil : stopSignal }

    /// A name for messages.
    package static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "stop request (SIGUSR1, how the launchers pass Ctrl-C and SIGTERM on)"
        default: return "signal \(signal)"
        }
    }
}

/// Training stopped on a signal after the step it was in, with its checkpoint written.
package struct TrainingInterrupted: Error, CustomStringConvertible {
    package let step: Int
    package let checkpoint: String?
    package var description: String { "interrupted at step \(step)" }
}
