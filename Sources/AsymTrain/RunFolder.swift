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

    /// The writing view of the run folder (rank 0). `resumedStep`: the run continues from a
    /// checkpoint of that step, so metrics.jsonl keeps its records up to that step and drops
    /// those of steps the checkpoint does not hold (a resumed run logs them again); nil: a
    /// new run, whose metrics.jsonl starts empty. train.log is appended to either way.
    package init(path: String, resumedStep: Int? = nil) throws {
        self.path = path
        isWriter = true
        let fm = FileManager.default
        try RunFolder.keepMetrics(in: path, through: resumedStep)
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

    /// Files a run writes: a folder that holds any of them holds an earlier run.
    package static let runFiles = ["config.yaml", "metrics.jsonl", "train.log", "checkpoints", "tensorboard"]

    /// What of an earlier run the folder at `path` holds (empty: none, or no folder).
    package static func earlierRun(at path: String) -> [String] {
        let fm = FileManager.default
        return runFiles.filter { name in
            let file = path + "/" + name
            guard fm.fileExists(atPath: file) else { return false }
            guard name == "checkpoints" || name == "tensorboard" else { return true }
            return !((try? fm.contentsOfDirectory(atPath: file)) ?? []).isEmpty
        }
    }

    /// Removes what an earlier run left in the folder (`--force`).
    package static func clear(_ path: String) throws {
        for name in runFiles + ["plots"] where FileManager.default.fileExists(atPath: path + "/" + name) {
            do { try FileManager.default.removeItem(atPath: path + "/" + name) } catch {
                throw FileError("run folder \(path): cannot remove \(name) (\(error.localizedDescription))")
            }
        }
    }

    /// Keeps the records of metrics.jsonl with a step up to `step` (none when nil), rewriting
    /// the file atomically.
    static func keepMetrics(in path: String, through step: Int?) throws {
        let file = path + "/metrics.jsonl"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let step, let data = line.data(using: .utf8),
                  let record = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let s = record["step"] as? Int else { return false }
            return s <= step
        }
        do {
            try (kept.map { $0 + "\n" }.joined()).write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            throw FileError("run folder \(path): cannot rewrite metrics.jsonl (\(error.localizedDescription))")
        }
    }

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
