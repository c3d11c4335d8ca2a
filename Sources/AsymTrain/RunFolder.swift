import AsymModel
import AsymViz
import Foundation

/// The run folder of the contract: `config.yaml`, `metrics.jsonl`, `train.log`, `checkpoints/`.
///
/// Only rank 0 writes it (`isWriter`). Other ranks get a folder that writes nothing, or
/// only their own `rank-N.log` when asked for one.
package final class RunFolder {
    package let path: String
    package let isWriter: Bool
    private let metrics: FileHandle?
    private let log: FileHandle?
    /// TensorBoard scalar events, in `tensorboard/` (rank 0 only).
    private let events: TensorBoardWriter?
    /// Echo log lines to standard output (rank 0 only, under MPI).
    package var echo = true
    /// Echo `detail` lines too (`--verbose`); they always go to train.log.
    package var verbose = false

    /// A non-writing view of the run folder at `path`: for ranks other than 0.
    package init(readOnly path: String, rankLog: String?) throws {
        self.path = path
        isWriter = false
        echo = false
        metrics = nil
        events = nil
        if let rankLog {
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(path)/\(rankLog)", contents: nil)
            log = FileHandle(forWritingAtPath: "\(path)/\(rankLog)")
        } else {
            log = nil
        }
    }

    package init(path: String) throws {
        self.path = path
        isWriter = true
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: path + "/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw FileError("run folder \(path): cannot create it (\(error.localizedDescription))")
        }
        func appendHandle(_ name: String) throws -> FileHandle {
            let file = path + "/" + name
            if !fm.fileExists(atPath: file) { _ = fm.createFile(atPath: file, contents: nil) }
            guard let h = FileHandle(forWritingAtPath: file) else {
                throw FileError("run folder \(path): cannot write \(name)")
            }
            h.seekToEndOfFile()
            return h
        }
        metrics = try appendHandle("metrics.jsonl")
        log = try appendHandle("train.log")
        do { events = try TensorBoardWriter(directory: path + "/tensorboard") } catch {
            throw FileError("run folder \(path): cannot create tensorboard/ (\(error))")
        }
    }

    package var checkpointsPath: String { path + "/checkpoints" }

    package func writeConfig(_ config: Config) throws {
        guard isWriter else { return }
        do { try config.yaml.write(toFile: path + "/config.yaml", atomically: true, encoding: .utf8) } catch {
            throw FileError("run folder \(path): cannot write config.yaml")
        }
    }

    /// One line to the console (when echoing) and to train.log.
    package func say(_ line: String) {
        if echo { print(line); fflush(stdout) }
        log?.write((line + "\n").data(using: .utf8)!)
    }

    /// A line for train.log that reaches the console only with `--verbose` (the resolved
    /// config, for example: the start of a run stays short).
    package func detail(_ line: String) {
        if echo && verbose { print(line); fflush(stdout) }
        log?.write((line + "\n").data(using: .utf8)!)
    }

    /// One JSON object to metrics.jsonl, keys in the given order.
    package func record(_ fields: KeyValuePairs<String, JSONValue>) {
        record(Array(fields).map { ($0.key, $0.value) })
    }

    package func record(_ fields: [(String, JSONValue)]) {
        let body = fields.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ")
        metrics?.write(("{" + body + "}\n").data(using: .utf8)!)
        // The same numbers as TensorBoard scalars: one tag per field, `field/key` for objects.
        guard let events, case .int(let step)? = fields.first(where: { $0.0 == "step" })?.1 else { return }
        func add(_ tag: String, _ value: JSONValue) {
            switch value {
            case .number(let v): events.addScalar(tag: tag, value: Float(v), step: Int64(step))
            case .int(let v): events.addScalar(tag: tag, value: Float(v), step: Int64(step))
            case .object(let inner): for (k, v) in inner { add("\(tag)/\(k)", v) }
            case .string: break
            }
        }
        for (k, v) in fields where k != "step" && k != "epoch" { add(k, v) }
        events.flush()
    }
}

/// The few JSON values the metrics use, written without a serializer's key reordering.
package enum JSONValue {
    case int(Int)
    case number(Double)
    case string(String)
    case object([(String, JSONValue)])

    package var json: String {
        switch self {
        case .int(let v): return String(v)
        case .number(let v): return v.isFinite ? String(format: "%.6g", v) : "null"
        case .string(let s):
            let escaped = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            return "\"\(escaped)\""
        case .object(let fields):
            return "{" + fields.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ") + "}"
        }
    }
}
