import Foundation

/// Logs `message` as one line on standard error and ends the whole job (every rank) with a
/// non-zero exit: MPI_Abort, so that nothing waits for a rank that is gone.
package func failJob(_ world: Communicator, _ message: String) -> Never {
    FileHandle.standardError.write("asymml: error: rank \(world.rank): \(message)\n".data(using: .utf8)!)
    world.abort(1)
}
