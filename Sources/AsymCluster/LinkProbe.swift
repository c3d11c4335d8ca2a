import Dispatch
import Foundation

/// The MPI link between two ranks, for `asymml bench --calibrate`: latency from round
/// trips of a one-byte message, bandwidth from round trips of a large one (half a round
/// trip each way). Both ranks run `measureLink`; rank 0 gets the figures.
package enum LinkProbe {
    package struct Result: Sendable {
        package var gbps: Double, latencyMicroseconds: Double
    }

    /// Ping-pong between ranks 0 and 1 of `comm` (any further ranks wait); the medians of
    /// `rounds` round trips per size. Returns the figures on rank 0, nil elsewhere.
    package static func measureLink(_ comm: Communicator, largeBytes: Int = 32 << 20, rounds: Int = 9) throws -> Result? {
        guard comm.size >= 2 else { throw MPIError(description: "the link probe needs 2 ranks, this job has \(comm.size)") }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: largeBytes, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 1, count: largeBytes)
        var requests: [Request] = []
        func roundTrip(_ bytes: Int) throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            if comm.rank == 0 {
                requests.append(try comm.sendBytes(buffer, count: bytes, to: 1, tag: 90))
                try comm.waitAll(&requests, peer: "rank 1", awaiting: "the link probe")
                requests.append(try comm.receiveBytes(buffer, count: bytes, from: 1, tag: 91))
                try comm.waitAll(&requests, peer: "rank 1", awaiting: "the link probe")
            } else if comm.rank == 1 {
                requests.append(try comm.receiveBytes(buffer, count: bytes, from: 0, tag: 90))
                try comm.waitAll(&requests, peer: "rank 0", awaiting: "the link probe")
                requests.append(try comm.sendBytes(buffer, count: bytes, to: 0, tag: 91))
                try comm.waitAll(&requests, peer: "rank 0", awaiting: "the link probe")
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        func median(_ bytes: Int, _ n: Int) throws -> Double {
            _ = try roundTrip(bytes)  // warm-up: connections and registrations
            return try (0..<n).map { _ in try roundTrip(bytes) }.sorted()[n / 2]
        }
        let small = try median(1, 10 * rounds), large = try median(largeBytes, rounds)
        try comm.barrier()
        guard comm.rank == 0 else { return nil }
        let latency = small / 2
        return Result(gbps: 8 * Double(largeBytes) / max(large / 2 - latency, 1e-9) / 1e9, latencyMicroseconds: latency * 1e6)
    }

    /// Starts `binary ARGUMENTS` under `mpirun -np 2` on this machine (its output's last
    /// line must be `link_gbps LATENCY` figures as printed by `report`), and parses them.
    package static func measureBySpawning(binary: String, arguments: [String]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
            + ["--oversubscribe", "--bind-to", "none", "-np", "2", binary] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { throw MPIError(description: "cannot start mpirun for the link probe: \(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        let fields = output.split(separator: "\n").last { $0.hasPrefix("link ") }?.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard p.terminationStatus == 0, let fields, fields.count == 2 else {
            throw MPIError(description: "the link probe (mpirun -np 2) failed: \(output.split(separator: "\n").last ?? "no output")")
        }
        return Result(gbps: fields[0], latencyMicroseconds: fields[1])
    }

    /// The line `measureBySpawning` reads.
    package static func report(_ r: Result) -> String { "link \(r.gbps) \(r.latencyMicroseconds)" }
}
