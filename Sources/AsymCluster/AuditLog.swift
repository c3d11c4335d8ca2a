import AsymKernels
import AsymModel
import Foundation

/// What an untrusted rank received, one JSON line per buffer (`asym.audit`): the evidence
/// that it sees only what the algorithm needs (docs/DESIGN.md §4). Written by the untrusted
/// rank itself, in `asym.audit_dir` (by default `audit/` under the run folder's path on its
/// own machine; it writes only this file there and never reads the run folder). A new run
/// starts each file anew.
package final class AuditLog {
    private let handle: FileHandle
    package let path: String

    /// `audit-rank-N.jsonl`, or with `name` "placement" the trusted rank's `placement-rank-N.jsonl`.
    package init(folder: String, rank: Int, name: String = "audit") throws {
        path = "\(folder)/\(name)-rank-\(rank).jsonl"
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw FileError("asym.audit_dir: cannot create \(folder) (\(error.localizedDescription))")
        }
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw FileError("asym.audit_dir: cannot write \(path)")
        }
        handle = h
    }

    /// One received message: its header and, for a payload, its size and energy (the sum of
    /// squares is what this rank can measure of a residual; it never sees X to compare with).
    package func record(_ h: WireHeader, payload: UnsafePointer<Float>?) {
        let kind = MessageKind(rawValue: h.kind).map(\.description) ?? "unknown"
        var line = "{\"step\": \(h.step), \"kind\": \"\(kind)\", \"layer\": \(h.layer), \"shape\": \(h.shape), \"count\": \(h.count)"
        if let payload { line += String(format: ", \"sum_of_squares\": %.6g", sumOfSquares(payload, count: Int(h.count))) }
        handle.write((line + "}\n").data(using: .utf8)!)
    }

    /// On a trusted rank: the rows of a placed message that went to untrusted rank `member`
    /// (spread masking), with the mask group of each row.
    package func recordPlacement(kind: MessageKind, step: Int, layer: Int, member: Int, rows: Range<Int>, groups: [Int]) {
        let line = "{\"step\": \(step), \"kind\": \"\(kind)\", \"layer\": \(layer), \"member\": \(member), "
            + "\"rows\": [\(rows.lowerBound), \(rows.upperBound)], \"groups\": \(groups)}\n"
        handle.write(line.data(using: .utf8)!)
    }

    /// A collective this rank took part in (what it received from it).
    package func recordCollective(_ name: String, count: Int) {
        handle.write("{\"collective\": \"\(name)\", \"count\": \(count)}\n".data(using: .utf8)!)
    }
}
