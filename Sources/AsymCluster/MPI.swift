import CMPI
import Foundation

/// An MPI call that failed, with the library's own message.
package struct MPIError: Error, CustomStringConvertible {
    package let description: String
}

@inline(__always)
func check(_ code: Int32, _ what: @autoclosure () -> String) throws {
    guard code != MPI_SUCCESS else { return }
    var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
    var length: Int32 = 0
    MPI_Error_string(code, &buffer, &length)
    throw MPIError(description: "\(what()): \(String(cString: buffer))")
}

/// A wait that passed `cluster.timeout_s`: the job ends with this message.
package struct DeadlineError: Error, CustomStringConvertible {
    package let description: String
}

/// A pending non-blocking transfer (MPI's own handle, so arrays of them pass to MPI as is).
package typealias Request = MPI_Request?

/// A small Swift layer over one MPI communicator: typed non-blocking point-to-point
/// transfers, allreduce, barrier and abort. Every return code is checked.
package final class Communicator {
    package let handle: MPI_Comm
    package let rank: Int
    package let size: Int

    init(_ handle: MPI_Comm) throws {
        self.handle = handle
        var r: Int32 = 0, s: Int32 = 0
        try check(MPI_Comm_rank(handle, &r), "MPI_Comm_rank")
        try check(MPI_Comm_size(handle, &s), "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
    }

    /// Initialises MPI (once per process) and returns the world communicator. Errors are
    /// returned, not fatal, so that every failure reaches our own message and abort.
    package static func world() throws -> Communicator {
        var initialized: Int32 = 0
        try check(MPI_Initialized(&initialized), "MPI_Initialized")
        if initialized == 0 { try check(MPI_Init(nil, nil), "MPI_Init") }
        let world = asym_mpi_comm_world()!
        try check(MPI_Comm_set_errhandler(world, asym_mpi_errors_return()), "MPI_Comm_set_errhandler")
        return try Communicator(world)
    }

    /// Whether this process was started by mpirun (Open MPI sets these for every rank).
    package static var launchedByMPI: Bool {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil
            || ProcessInfo.processInfo.environment["PMIX_RANK"] != nil
    }

    /// The sub-communicator of the ranks that pass the same `color`.
    package func split(color: Int) throws -> Communicator {
        var sub: MPI_Comm?
        try check(MPI_Comm_split(handle, Int32(color), Int32(rank), &sub), "MPI_Comm_split")
        return try Communicator(sub!)
    }

    package func sendBytes(_ bytes: UnsafeRawPointer, count: Int, to peer: Int, tag: Int) throws -> Request {
        var r: Request = nil
        try check(MPI_Isend(bytes, Int32(count), asym_mpi_byte(), Int32(peer), Int32(tag), handle, &r),
                  "MPI_Isend of \(count) bytes from rank \(rank) to rank \(peer)")
        return r
    }

    package func receiveBytes(_ bytes: UnsafeMutableRawPointer, count: Int, from peer: Int, tag: Int) throws -> Request {
        var r: Request = nil
        try check(MPI_Irecv(bytes, Int32(count), asym_mpi_byte(), Int32(peer), Int32(tag), handle, &r),
                  "MPI_Irecv of \(count) bytes on rank \(rank) from rank \(peer)")
        return r
    }

    package func sendFloats(_ values: UnsafePointer<Float>, count: Int, to peer: Int, tag: Int) throws -> Request {
        var r: Request = nil
        try check(MPI_Isend(values, Int32(count), asym_mpi_float(), Int32(peer), Int32(tag), handle, &r),
                  "MPI_Isend of \(count) floats from rank \(rank) to rank \(peer)")
        return r
    }

    package func receiveFloats(_ values: UnsafeMutablePointer<Float>, count: Int, from peer: Int, tag: Int) throws -> Request {
        var r: Request = nil
        try check(MPI_Irecv(values, Int32(count), asym_mpi_float(), Int32(peer), Int32(tag), handle, &r),
                  "MPI_Irecv of \(count) floats on rank \(rank) from rank \(peer)")
        return r
    }

    /// Every wait ends after this many seconds (`cluster.timeout_s`): a rank that is hung,
    /// stopped or cut off must end the job, not hang it.
    package var timeout: Double = 300

    /// Waits for every request to complete, or throws `DeadlineError` after `timeout`
    /// seconds naming `peer` (who did not answer) and `what` was awaited. The array keeps
    /// its capacity for reuse.
    ///
    /// MPI_Waitall has no deadline, so this polls MPI_Testall, as MPI_Waitall itself does:
    /// every poll also moves large transfers along (Open MPI advances them only inside MPI
    /// calls), so a sleep between polls would stall them. Between polls it yields the core,
    /// which costs nothing when each rank has a core and lets the others run on an
    /// oversubscribed machine. The clock is read every 1024 polls.
    package func waitAll(_ requests: inout [Request], peer: @autoclosure () -> String,
                         awaiting what: @autoclosure () -> String) throws {
        if try testAll(&requests, peer: peer(), awaiting: what()) { return }
        let start = DispatchTime.now().uptimeNanoseconds
        var polls = 0
        while try !testAll(&requests, peer: peer(), awaiting: what()) {
            sched_yield()
            polls += 1
            guard polls & 1023 == 0 else { continue }
            let waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if waited > timeout {
                throw DeadlineError(description: "\(peer()) did not answer within \(Communicator.seconds(timeout)); awaited \(what())")
            }
        }
    }

    static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t)) s" : String(format: "%.1f s", t) }

    /// `testAll` for transfers with one peer: a failed transfer names the peer. The one failure
    /// a peer can cause is a message longer than the receive posted for it (MPI truncates
    /// nothing: it fails the receive), so that is what the error says.
    @discardableResult
    package func testAll(_ requests: inout [Request], peer: @autoclosure () -> String,
                         awaiting what: @autoclosure () -> String) throws -> Bool {
        do { return try testAll(&requests) } catch let e as MPIError {
            throw MPIError(description: "\(peer()) sent a message longer than the one awaited (\(what())); \(e)")
        }
    }

    /// Lets pending requests advance; true when all are complete (MPI_Testall).
    @discardableResult
    package func testAll(_ requests: inout [Request]) throws -> Bool {
        guard !requests.isEmpty else { return true }
        var done: Int32 = 0
        try check(MPI_Testall(Int32(requests.count), &requests, &done, asym_mpi_statuses_ignore()), "MPI_Testall on rank \(rank)")
        if done != 0 { requests.removeAll(keepingCapacity: true) }
        return done != 0
    }

    /// Collectives go through their non-blocking forms so that they have a deadline too;
    /// `what` names the collective in the error.
    private func collective(_ what: String, _ start: (inout Request) -> Int32) throws {
        var r: Request = nil
        try check(start(&r), "\(what) on rank \(rank)")
        var requests = [r]
        try waitAll(&requests, peer: "a rank of the \(size) in \(what)", awaiting: "its part")
    }

    package func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int, what: String = "a float sum") throws {
        try collective("MPI_Iallreduce (\(what), \(count) floats)") {
            MPI_Iallreduce(asym_mpi_in_place(), values, Int32(count), asym_mpi_float(), asym_mpi_sum(), handle, &$0)
        }
    }

    package func sum(_ values: [Double]) throws -> [Double] {
        var out = values
        try collective("MPI_Iallreduce (sum of \(values.count) doubles)") {
            MPI_Iallreduce(values, &out, Int32(values.count), asym_mpi_double(), asym_mpi_sum(), handle, &$0)
        }
        return out
    }

    package func max(_ values: [Double]) throws -> [Double] {
        var out = values
        try collective("MPI_Iallreduce (max of \(values.count) doubles)") {
            MPI_Iallreduce(values, &out, Int32(values.count), asym_mpi_double(), asym_mpi_max(), handle, &$0)
        }
        return out
    }

    /// Whether every rank passed the same values (their maxima equal minus the maxima of
    /// their negations).
    package func allAgree(_ values: [Double]) throws -> Bool {
        let hi = try max(values), lo = try max(values.map { -$0 })
        return zip(hi, lo).allSatisfy { $0 == -$1 }
    }

    /// Every rank's value, in rank order.
    package func allGather(_ value: Int32) throws -> [Int32] {
        var mine = value
        var all = [Int32](repeating: 0, count: size)
        try collective("MPI_Iallgather") { MPI_Iallgather(&mine, 1, asym_mpi_int32(), &all, 1, asym_mpi_int32(), handle, &$0) }
        return all
    }

    package func barrier() throws { try collective("MPI_Ibarrier") { MPI_Ibarrier(handle, &$0) } }

    /// Ends the whole job (every rank) with `code`.
    package func abort(_ code: Int32) -> Never {
        MPI_Abort(handle, code)
        exit(code)
    }

    package static func finalize() { MPI_Finalize() }
}
