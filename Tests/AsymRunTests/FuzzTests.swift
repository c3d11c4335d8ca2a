import AsymTestSupport
import Foundation
import XCTest

/// Mutated configs and damaged checkpoints fed to the release binary (`train`, `evaluate`,
/// `inspect`), each in a child process so that a trap shows as a crash instead of ending the
/// test runner. Every run must either work (exit 0) or end with one `asymml: error:` line and
/// a non-zero exit: never a trap, a signal or a hang.
///
/// The mutants come from a seeded generator (SplitMix64), so a failure reproduces: its
/// mutant is kept under `$TMPDIR/asymml-fuzz-failures/` and the summary names it.
/// `ASYMML_FUZZ_SEED=N` explores other mutants (the default seed is fixed), `ASYMML_FUZZ_SCALE=K`
/// makes K times as many, `ASYMML_FUZZ_LOG=FILE` records every run.
final class FuzzTests: XCTestCase {
    // MARK: The seeded generator

    /// SplitMix64 (Steele, Lea, Flood): small, fast and the same on every platform.
    struct SeededRNG {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        /// Uniform in 0..<n (n > 0; the modulo bias is irrelevant here).
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
        mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
        mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
    }

    static var seed: UInt64 {
        ProcessInfo.processInfo.environment["ASYMML_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0x4153_594D_4D4C  // "ASYMML"
    }
    /// `ASYMML_FUZZ_LOG=FILE` appends one line per run: category, mutation, exit status, and
    /// the error line or the verdict.
    static let log: FileHandle? = ProcessInfo.processInfo.environment["ASYMML_FUZZ_LOG"].flatMap { path in
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        let handle = FileHandle(forWritingAtPath: path)
        handle?.seekToEndOfFile()
        return handle
    }
    /// `ASYMML_FUZZ_SCALE=K` makes K times as many mutants (a longer search); 1 by default.
    static func count(_ n: Int) -> Int {
        n * max(1, ProcessInfo.processInfo.environment["ASYMML_FUZZ_SCALE"].flatMap { Int($0) } ?? 1)
    }

    // MARK: Running the binary and judging what it did

    /// One category's tally.
    final class Tally {
        let name: String
        var tried = 0, ok = 0, clean = 0
        var failures: [String] = []
        var seconds = 0.0
        init(_ name: String) { self.name = name }
        var summary: String {
            "fuzz \(name): \(tried) tried, \(ok) exit 0, \(clean) clean errors, \(failures.count) failures (\(String(format: "%.1f", seconds)) s)"
        }
    }

    static let crashMarkers = ["Fatal error", "Illegal instruction", "Segmentation fault", "Trace/breakpoint", "Stack dump",
                               "Program crashed", "Assertion failed", "Precondition failed"]
    let timeout = 20.0
    var scratch = ""
    var failureFolder = ""

    /// Makes the scratch folder; false (a failure under CI, else a skip) without the release binary.
    func prepare() throws -> Bool {
        #if DEBUG
        // The children are the release binary either way: the debug pass of `make test` would
        // only repeat the release pass.
        throw XCTSkip("the fuzz tests run the release binary; the release test pass runs them")
        #else
        guard FileManager.default.isExecutableFile(atPath: releaseBinary) else {
            let message = "\(releaseBinary) is missing: build it first (swift build -c release; make test does)"
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail(message); return false }
            throw XCTSkip(message)
        }
        scratch = NSTemporaryDirectory() + "asymml-fuzz-\(UUID().uuidString)"
        failureFolder = NSTemporaryDirectory() + "asymml-fuzz-failures"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let folder = scratch
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        return true
        #endif
    }

    /// Why `r` is not acceptable, or nil: exit 0, or a non-zero exit (not a signal, not >= 128
    /// except 130) whose output has exactly one `asymml: error:` line; never a crash marker.
    static func verdict(_ r: JobResult, signalled: Bool, timedOut: Bool) -> String? {
        if timedOut { return "no answer within the time limit (killed)" }
        if signalled { return "ended by signal \(r.status)" }
        let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
        if let marker = crashMarkers.first(where: { r.output.contains($0) }) { return "crash marker '\(marker)' in the output" }
        if lines.contains(where: { $0.hasPrefix("#0 ") }) { return "a backtrace (#0) in the output" }
        if r.status == 0 { return nil }
        if r.status >= 128 && r.status != 130 { return "exit status \(r.status) (a signal?)" }
        let errors = lines.filter { $0.hasPrefix("asymml: error:") }.count
        return errors == 1 ? nil : "exit status \(r.status) with \(errors) 'asymml: error:' lines (want exactly 1)"
    }

    /// Runs the binary with `arguments` and counts the outcome in `tally`. `mutant` is the
    /// file that was fed (kept on failure) and `mutation` says how it was made.
    func check(_ arguments: [String], _ tally: Tally, mutation: String, mutant: String) throws {
        var process: Process?
        let r = try runJob([releaseBinary] + arguments, timeout: timeout) { process = $0 }
        let signalled = process?.terminationReason == .uncaughtSignal
        let timedOut = signalled && r.status == SIGKILL && r.seconds >= timeout
        tally.tried += 1
        tally.seconds += r.seconds
        let why = Self.verdict(r, signalled: signalled, timedOut: timedOut)
        if let log = Self.log {
            let error = r.output.split(separator: "\n").first { $0.hasPrefix("asymml: error:") }.map { String($0.prefix(300)) }
            log.write("\(tally.name)\t\(mutation.prefix(200))\texit \(r.status)\t\(why ?? error ?? "ok")\n".data(using: .utf8)!)
        }
        guard let why else {
            if r.status == 0 { tally.ok += 1 } else { tally.clean += 1 }
            return
        }
        try FileManager.default.createDirectory(atPath: failureFolder, withIntermediateDirectories: true)
        let category = String(tally.name.map { $0.isLetter || $0.isNumber ? $0 : "-" }).replacingOccurrences(of: "--", with: "-")
        let kept = failureFolder + "/\(category)\(tally.failures.count)-" + (mutant as NSString).lastPathComponent
        try? FileManager.default.removeItem(atPath: kept)
        try? FileManager.default.copyItem(atPath: mutant, toPath: kept)
        let tail = r.output.split(separator: "\n", omittingEmptySubsequences: false).suffix(12).joined(separator: "\n    ")
        tally.failures.append("""
            \(why)
              mutation: \(mutation)
              command: asymml \(arguments.joined(separator: " "))
              mutant kept: \(kept)
              output tail:
                \(tail)
            """)
    }

    func report(_ tallies: [Tally]) {
        for t in tallies { print(t.summary) }
        for t in tallies {
            for f in t.failures { XCTFail("fuzz \(t.name): \(f)") }
        }
    }

    /// The judge itself: a signal, a crash message, a missing or doubled error line fail.
    func testVerdictTellsCleanErrorsFromCrashes() throws {
        func judge(_ script: String) throws -> String? {
            var process: Process?
            let r = try runJob(["sh", "-c", script], timeout: 10) { process = $0 }
            return Self.verdict(r, signalled: process?.terminationReason == .uncaughtSignal, timedOut: false)
        }
        XCTAssertNil(try judge("echo working; exit 0"))
        XCTAssertNil(try judge("echo 'asymml: error: data.batch_size: must be positive' >&2; exit 1"))
        XCTAssertNotNil(try judge("kill -SEGV $$"))
        XCTAssertNotNil(try judge("kill -ILL $$"))
        XCTAssertNotNil(try judge("exit 1"))
        XCTAssertNotNil(try judge("echo 'asymml: error: one'; echo 'asymml: error: two'; exit 1"))
        XCTAssertNotNil(try judge("echo 'Fatal error: Index out of range'; exit 1"))
        XCTAssertNotNil(try judge("exit 134"))
    }

    // MARK: Config mutants

    /// `key: value` fields of one YAML line: the key's range, and the value's (nil for a
    /// section header such as `data:`). Values end at `,` or `}` (flow maps) or the line's
    /// end; a `[...]` value runs to its matching bracket.
    static func fields(_ line: String) -> [(key: Range<Int>, value: Range<Int>?)] {
        let c = Array(line.utf8)
        func isKeyChar(_ b: UInt8) -> Bool { (b >= 97 && b <= 122) || (b >= 65 && b <= 90) || (b >= 48 && b <= 57) || b == 95 }
        var result: [(Range<Int>, Range<Int>?)] = []
        var i = 0
        while i < c.count {
            guard isKeyChar(c[i]), i == 0 || !isKeyChar(c[i - 1]) else { i += 1; continue }
            var j = i
            while j < c.count && isKeyChar(c[j]) { j += 1 }
            guard j < c.count, c[j] == UInt8(ascii: ":"), j + 1 == c.count || c[j + 1] == UInt8(ascii: " ") else { i = j; continue }
            var v = j + 1
            while v < c.count && c[v] == UInt8(ascii: " ") { v += 1 }
            if v == c.count || c[v] == UInt8(ascii: "#") { result.append((i..<j, nil)); i = v; continue }
            var end = v
            if c[v] == UInt8(ascii: "[") {
                var depth = 0
                while end < c.count {
                    if c[end] == UInt8(ascii: "[") { depth += 1 }
                    if c[end] == UInt8(ascii: "]") { depth -= 1; if depth == 0 { end += 1; break } }
                    end += 1
                }
            } else if c[v] == UInt8(ascii: "{") {
                result.append((i..<j, nil)); i = v + 1; continue  // a nested map: its keys come next
            } else {
                while end < c.count && c[end] != UInt8(ascii: ",") && c[end] != UInt8(ascii: "}") && c[end] != UInt8(ascii: "#") { end += 1 }
                while end > v && c[end - 1] == UInt8(ascii: " ") { end -= 1 }
            }
            result.append((i..<j, v..<end))
            i = max(end, j + 1)
        }
        return result
    }

    static func replacing(_ line: String, _ range: Range<Int>, with text: String) -> String {
        var bytes = Array(line.utf8)
        bytes.replaceSubrange(range, with: Array(text.utf8))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Values of every kind and size: wrong types, out of range, huge, empty, nested, null.
    static let values = ["0", "-1", "1", "2", "3", "7", "-7", "0.5", "-0.25", "1e30", "-1e30", "1e-30", "1000000000",
                         "2147483648", "9223372036854775807", "-9223372036854775808", "99999999999999999999",
                         "65536", "4096", ".nan", ".inf", "-.inf", "0x10", "1_000", "abc", "\"a string\"", "''",
                         "\"\"", "[]", "[1]", "[1, 2, 3, 4]", "[[1]]", "[a, b]", "{}", "{a: 1}", "{type: conv}", "null",
                         "~", "true", "false", "yes", "String(repeating:)", "&anchor 3", "*undefined", "!!binary aGVsbG8=",
                         "!!str 5", "'\\x00'", "\"\\u0000\"", "2e3", "[2, 8]", "[2, 8, 8, 8]", "[0, 8, 8]", "[2, 1e9, 8]"]
    /// Numbers at and past every limit, for values that are numbers.
    static let numbers = ["0", "-1", "1", "1e30", "-1e30", "1000000000", "2147483648", "9223372036854775807",
                          "-9223372036854775808", "99999999999999999999", "65536", "65537", "4096", "1.5", ".nan", ".inf",
                          "[1e30, 8, 8]", "[2, 0, 8]", "[2, 1000000000, 1000000000]", "[3, 65536, 65536]", "[1, 4096, 4096]",
                          "1e-300", "0.999999", "[]"]
    static func value(_ rng: inout SeededRNG, replacing old: String) -> String {
        if Double(old) != nil || old.hasPrefix("["), rng.chance(60) { return rng.pick(numbers) }
        let v = rng.pick(values)
        return v == "String(repeating:)" ? String(repeating: "x", count: 1 + rng.below(20_000)) : v
    }

    static let layerTypes = ["conv", "linear", "relu", "maxpool", "avgpool", "global_avgpool", "flatten", "batchnorm",
                             "basic_block", "dense", "Conv", ""]
    static let geometryKeys = ["out", "out", "in", "kernel", "kernel", "stride", "stride", "padding", "padding", "rank", "bias",
                               "placement", "name"]
    static let geometryValues = ["0", "-1", "1", "2", "3", "5", "9", "17", "64", "4096", "65536", "65537", "1000000000",
                                 "1e30", "9223372036854775807", "true", "split", "trusted", "untrusted", "conv1", "[3, 3]"]

    /// Whole settings a section may gain: features, their combinations, and their limits.
    static let features: [(section: String, lines: [String])] = [
        ("asym", ["mode: asym"]), ("asym", ["mode: tee-only"]), ("asym", ["mode: asym", "basis: batch"]),
        ("asym", ["mode: asym", "rank: 3"]), ("asym", ["mode: asym", "rank: 1000"]),
        ("asym", ["mode: asym", "rank: {policy: energy, max: 8, tau: 0.5}"]),
        ("asym", ["mode: asym", "rank: {policy: fixed, value: 100, max: 100}"]),
        ("asym", ["mode: asym", "rank: {policy: schedule, value: 1, max: 1}"]),
        ("asym", ["mode: asym", "mask: {inputs_per_group: 3}"]), ("asym", ["mode: asym", "mask: {inputs_per_group: 2, spread: true}"]),
        ("asym", ["mode: asym", "mask: {inputs_per_group: 100, noise_scale: 10}"]), ("asym", ["mode: asym", "mask: {}"]),
        ("asym", ["mode: asym", "mask: {inputs_per_group: 16}"]), ("asym", ["mode: asym", "mask: {inputs_per_group: 1}"]),
        ("asym", ["mode: asym", "residual_noise: {std: 0.5, clip: 2}"]), ("asym", ["mode: asym", "residual_noise: {std: 1e30}"]),
        ("asym", ["mode: asym", "verify: true"]), ("asym", ["mode: asym", "verify: true", "on_verify_failure: recompute"]),
        ("asym", ["mode: asym", "verify: true", "basis: batch"]),
        ("asym", ["mode: asym", "microbatches: 3"]), ("asym", ["mode: asym", "microbatches: 16"]),
        ("asym", ["mode: asym", "microbatches: 17"]), ("asym", ["mode: asym", "svd_iterations: 5"]),
        ("asym", ["mode: asym", "svd_iterations: 100000"]), ("asym", ["mode: asym", "audit: true"]),
        ("asym", ["mode: asym", "audit: true", "audit_dir: ''"]),
        ("optimizer", ["schedule: cosine"]), ("optimizer", ["schedule: {type: step, step_epochs: 1, gamma: 0.5}"]),
        ("optimizer", ["schedule: {type: cosine, min_lr: 1}"]), ("optimizer", ["schedule: {type: step, step_epochs: 0}"]),
        ("optimizer", ["nesterov: true"]), ("optimizer", ["dampening: 0.5"]), ("optimizer", ["type: adam"]),
        ("data", ["normalize: [0.5, 0.25]"]), ("data", ["normalize: [[0.1, 0.2], [1, 2]]"]), ("data", ["normalize: [[0.1], [1, 2]]"]),
        ("data", ["normalize: [0.5, 0]"]), ("data", ["normalize: [[], []]"]), ("data", ["train_samples: 7"]),
        ("data", ["train_samples: 100000"]), ("data", ["batch_size: 1"]), ("data", ["batch_size: 3"]), ("data", ["batch_size: 513"]),
        ("data", ["classes: 2"]), ("data", ["dataset: cifar10"]), ("data", ["dataset: fashion-mnist"]),
        ("data", ["dataset: cifar10", "path: /nonexistent"]), ("data", ["shuffle: false"]), ("data", ["synthetic_train: 1"]),
        ("data", ["synthetic_test: 1"]), ("data", ["synthetic_train: 17"]),
        ("model", ["init: kaiming_normal"]), ("model", ["init: xavier"]),
        ("train", ["checkpoint_every: 1"]), ("train", ["eval_every: 1"]), ("train", ["log_every: 1"]), ("train", ["keep: 1"]),
        ("train", ["epochs: 3"]), ("train", ["checkpoint_epochs: false"]), ("train", ["max_steps: 0"]),
        ("cluster", ["trusted: 2"]), ("cluster", ["encrypt: true"]), ("cluster", ["encrypt: true", "key_file: /nonexistent"]),
        ("cluster", ["timeout_s: 0.001"]),
    ]
    /// Layers a model may gain anywhere in its list.
    static let extraLayers = ["{type: batchnorm}", "{type: global_avgpool}", "{type: avgpool, kernel: 3, stride: 1}",
                              "{name: b1, type: basic_block, out: 8, stride: 2}", "{type: flatten}", "{type: linear, out: 4}",
                              "{type: conv, out: 4, kernel: 1, placement: split, rank: 9}", "{type: maxpool, kernel: 17}",
                              "{type: relu}", "{name: conv1, type: conv, out: 8}", "{type: conv, out: 4, kernel: 1, stride: 3}",
                              "{type: basic_block, out: 3, stride: 3}", "{type: avgpool, kernel: 1}", "{type: linear, out: 1}"]

    /// Applies one random mutation to `text`; returns the new text (perhaps not UTF-8) and what was done.
    static func mutate(_ text: [UInt8], _ rng: inout SeededRNG) -> ([UInt8], String) {
        var lines = String(decoding: text, as: UTF8.self).components(separatedBy: "\n")
        func joined() -> [UInt8] { Array(lines.joined(separator: "\n").utf8) }
        func fieldLines() -> [Int] { lines.indices.filter { !fields(lines[$0]).isEmpty } }
        func layerLines() -> [Int] { lines.indices.filter { lines[$0].contains("- {") } }
        let kind = rng.below(100)
        switch kind {
        case 0..<26:  // a value replaced by another of any type or size
            let candidates = fieldLines().filter { fields(lines[$0]).contains { $0.value != nil } }
            guard let i = candidates.isEmpty ? nil : rng.pick(candidates) else { break }
            let withValue = fields(lines[i]).filter { $0.value != nil }
            let f = rng.pick(withValue)
            let v = value(&rng, replacing: String(decoding: Array(lines[i].utf8)[f.value!], as: UTF8.self))
            let key = String(decoding: Array(lines[i].utf8)[f.key], as: UTF8.self)
            lines[i] = replacing(lines[i], f.value!, with: v)
            return (joined(), "line \(i + 1): \(key) = \(v.count > 40 ? "\(v.prefix(10))... (\(v.count) chars)" : v)")
        case 26..<40:  // a layer's geometry: out, in, kernel, stride, padding set to 0, -1, 1 or huge
            let layers = layerLines()
            guard !layers.isEmpty else { break }
            let i = rng.pick(layers)
            let key = rng.pick(geometryKeys), v = rng.pick(geometryValues)
            if let f = fields(lines[i]).first(where: { String(decoding: Array(lines[i].utf8)[$0.key], as: UTF8.self) == key }),
               let range = f.value {
                lines[i] = replacing(lines[i], range, with: v)
            } else if let close = lines[i].lastIndex(of: "}") {
                lines[i].replaceSubrange(close..<lines[i].index(after: close), with: ", \(key): \(v)}")
            }
            return (joined(), "line \(i + 1): layer \(key) = \(v)")
        case 40..<48:  // a layer's type swapped
            let layers = layerLines()
            guard !layers.isEmpty else { break }
            let i = rng.pick(layers)
            let t = rng.pick(layerTypes)
            guard let f = fields(lines[i]).first(where: { String(decoding: Array(lines[i].utf8)[$0.key], as: UTF8.self) == "type" }),
                  let range = f.value else { break }
            lines[i] = replacing(lines[i], range, with: t)
            return (joined(), "line \(i + 1): layer type = \(t)")
        case 48..<53:  // a layer inserted
            let layers = layerLines()
            guard let first = layers.first, let last = layers.last else { break }
            let at = first + rng.below(last - first + 2)
            let layer = rng.pick(extraLayers)
            lines.insert("    - \(layer)", at: at)
            return (joined(), "layer inserted at line \(at + 1): \(layer)")
        case 53..<66:  // a feature (or several) switched on in a section
            let f = rng.pick(features)
            guard let header = lines.firstIndex(where: { $0.hasPrefix("\(f.section):") }) else {
                lines += ["\(f.section):"] + f.lines.map { "  " + $0 }
                return (joined(), "section \(f.section) added with \(f.lines)")
            }
            for l in f.lines.reversed() {
                let key = String(l.prefix { $0 != ":" })
                // The same key further down the section goes: YAML keys are unique.
                var j = header + 1
                while j < lines.count && (lines[j].hasPrefix(" ") || lines[j].isEmpty) {
                    if lines[j].trimmingCharacters(in: .whitespaces).hasPrefix(key + ":") { lines.remove(at: j) } else { j += 1 }
                }
                lines.insert("  " + l, at: header + 1)
            }
            return (joined(), "\(f.section): \(f.lines.joined(separator: "; "))")
        case 66..<71:  // a line deleted
            let i = rng.below(lines.count)
            let gone = lines.remove(at: i)
            return (joined(), "line \(i + 1) deleted: \(gone)")
        case 71..<75:  // a line duplicated
            let i = rng.below(lines.count)
            lines.insert(lines[i], at: i)
            return (joined(), "line \(i + 1) duplicated: \(lines[i])")
        case 75..<78:  // two lines swapped
            let i = rng.below(lines.count), j = rng.below(lines.count)
            lines.swapAt(i, j)
            return (joined(), "lines \(i + 1) and \(j + 1) swapped")
        case 78..<84:  // indentation changed
            let i = rng.below(lines.count)
            let change = rng.pick(["", " ", "  ", "    ", "\t", "-"])
            let stripped = String(lines[i].drop { $0 == " " })
            let indent = rng.chance(50) ? String(lines[i].prefix { $0 == " " }) + change : change
            lines[i] = indent + stripped
            return (joined(), "line \(i + 1) re-indented with \(indent.debugDescription)")
        case 84..<90:  // a key renamed
            let candidates = fieldLines()
            guard !candidates.isEmpty else { break }
            let i = rng.pick(candidates)
            let f = rng.pick(fields(lines[i]))
            let old = String(decoding: Array(lines[i].utf8)[f.key], as: UTF8.self)
            let new = rng.pick([old.uppercased(), old + "s", String(old.dropLast()), old.replacingOccurrences(of: "_", with: "-"),
                                "x", "name", "type", "layers", "", "<<", "? " + old])
            lines[i] = replacing(lines[i], f.key, with: new)
            return (joined(), "line \(i + 1): key \(old) renamed \(new.debugDescription)")
        case 90..<95:  // truncated at a random byte
            let at = rng.below(text.count + 1)
            return (Array(text.prefix(at)), "truncated to \(at) of \(text.count) bytes")
        default:  // random bytes inserted
            let at = rng.below(text.count + 1), count = 1 + rng.below(16)
            var bytes = rng.bytes(count)
            if rng.chance(50) { bytes = bytes.map { 32 + $0 % 95 } }  // printable
            var t = text
            t.insert(contentsOf: bytes, at: at)
            return (t, "\(count) random bytes inserted at byte \(at)")
        }
        // The chosen mutation did not apply (no such line): duplicate the last line instead.
        lines.append(lines.last ?? "")
        return (joined(), "last line duplicated")
    }

    /// `count` mutants of `base`, each 1 to 3 stacked mutations.
    static func mutants(of base: [UInt8], count: Int, _ rng: inout SeededRNG) -> [([UInt8], String)] {
        (0..<count).map { _ in
            var text = base
            var done: [String] = []
            let steps = rng.chance(70) ? 1 : 2 + rng.below(2)
            for _ in 0..<steps {
                let (t, what) = mutate(text, &rng)
                text = t
                done.append(what)
            }
            return (text, done.joined(separator: " | "))
        }
    }

    func testMutatedConfigsWorkOrFailCleanly() throws {
        guard try prepare() else { return }
        var rng = SeededRNG(seed: Self.seed)
        let smoke = Tally("configs (smoke)"), shipped = Tally("configs (shipped)")
        let start = Date()
        /// Trains `count` mutants of configs/NAME.yaml for `steps` steps, each in a fresh run folder.
        func trainMutants(of name: String, count: Int, steps: Int, into tally: Tally, label: String) throws {
            let base = Array(try Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/configs/\(name).yaml")))
            for (n, (text, mutation)) in Self.mutants(of: base, count: count, &rng).enumerated() {
                let path = scratch + "/\(name)-\(n).yaml"
                try Data(text).write(to: URL(fileURLWithPath: path))
                let run = scratch + "/run-\(name)-\(n)"
                try check(["train", "--config", path, "--run-dir", run, "--set", "train.max_steps=\(steps)", "--set", "train.threads=1"],
                          tally, mutation: label + mutation, mutant: path)
                try? FileManager.default.removeItem(atPath: run)
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        // smoke trains 2 steps in well under a second: its mutants train.
        try trainMutants(of: "smoke", count: Self.count(260), steps: 2, into: smoke, label: "")
        // The shipped configs evaluate seconds of test data after a step: their mutants stop at
        // step 0 (read, validate, build the model and the data, write the first checkpoint).
        for name in ["fmnist-cnn", "vgg-cifar", "resnet-cifar"] {
            try trainMutants(of: name, count: Self.count(20), steps: 0, into: shipped, label: "\(name).yaml: ")
        }
        report([smoke, shipped])
        print("fuzz configs: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    // MARK: Checkpoint mutants

    /// Where HDF5's signed metadata blocks start: global heap collections (the strings),
    /// B-trees, local heaps (link names) and symbol table nodes.
    static func metadataBlocks(_ data: [UInt8]) -> [Int] {
        let signatures = ["GCOL", "TREE", "HEAP", "SNOD"].map { Array($0.utf8) }
        return (0..<max(0, data.count - 4)).filter { i in signatures.contains { data[i..<(i + 4)].elementsEqual($0) } }
    }

    /// Damages `data`: single bit flips anywhere (HDF5 metadata and tensors alike), a byte of
    /// the first 512 (the superblock and root group), bytes inside a metadata block,
    /// truncation, a zeroed range, garbage at the end.
    static func damage(_ data: [UInt8], metadata: [Int], _ rng: inout SeededRNG) -> ([UInt8], String) {
        var d = data
        switch rng.below(100) {
        case 0..<30:
            let at = rng.below(d.count), bit = rng.below(8)
            d[at] ^= 1 << bit
            return (d, "bit \(bit) of byte \(at) flipped")
        case 30..<42:
            let at = rng.below(min(512, d.count)), mask = UInt8(1 + rng.below(255))
            d[at] ^= mask
            return (d, "byte \(at) xor \(mask)")
        case 42..<48:
            let flips = 2 + rng.below(15)
            for _ in 0..<flips { d[rng.below(d.count)] ^= 1 << rng.below(8) }
            return (d, "\(flips) random bits flipped")
        case 48..<68 where !metadata.isEmpty:
            let block = rng.pick(metadata)
            let at = min(d.count - 1, block + rng.below(rng.chance(50) ? 64 : 1024))
            let name = String(decoding: d[block..<(block + 4)], as: UTF8.self)
            if rng.chance(50) {
                let value = UInt8(truncatingIfNeeded: rng.next())
                d[at] = value
                return (d, "byte \(at) (in the \(name) block at \(block)) set to \(value)")
            }
            let length = min(d.count - at, 1 + rng.below(600))
            for i in at..<(at + length) { d[i] = 0 }
            return (d, "bytes \(at)..<\(at + length) (in the \(name) block at \(block)) zeroed")
        case 68..<80:
            let length = rng.below(d.count)
            return (Array(d.prefix(length)), "truncated to \(length) of \(d.count) bytes")
        case 80..<92:
            let at = rng.below(d.count), length = min(d.count - at, 1 + rng.below(rng.chance(50) ? 64 : 4096))
            for i in at..<(at + length) { d[i] = 0 }
            return (d, "bytes \(at)..<\(at + length) zeroed")
        default:
            let count = 1 + rng.below(4096)
            d += rng.bytes(count)
            return (d, "\(count) random bytes appended")
        }
    }

    func testDamagedCheckpointsWorkOrFailCleanly() throws {
        guard try prepare() else { return }
        var rng = SeededRNG(seed: Self.seed ^ 0xC0FFEE)
        let smoke = repositoryRoot + "/configs/smoke.yaml"
        let trained = scratch + "/trained"
        let base = try runJob([releaseBinary, "train", "--config", smoke, "--run-dir", trained,
                               "--set", "train.max_steps=4", "--set", "train.threads=1"], timeout: 60)
        XCTAssertEqual(base.status, 0, base.output)
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: trained + "/checkpoints/step-00000004.h5")))
        let metadata = Self.metadataBlocks(original)
        XCTAssertFalse(metadata.isEmpty, "no HDF5 metadata signatures in the checkpoint")
        let inspect = Tally("checkpoints (inspect)"), evaluate = Tally("checkpoints (evaluate)"), resume = Tally("checkpoints (resume)")
        let start = Date()
        for n in 0..<Self.count(170) {
            let (bytes, mutation) = Self.damage(original, metadata: metadata, &rng)
            let path = scratch + "/damaged-\(n).h5"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            try check(["inspect", path], inspect, mutation: mutation, mutant: path)
            try check(["evaluate", "--config", smoke, "--checkpoint", path], evaluate, mutation: mutation, mutant: path)
            let run = scratch + "/resumed-\(n)"
            try check(["train", "--config", smoke, "--run-dir", run, "--resume", path, "--set", "train.max_steps=6",
                       "--set", "train.threads=1"], resume, mutation: mutation, mutant: path)
            try? FileManager.default.removeItem(atPath: run)
            try? FileManager.default.removeItem(atPath: path)
        }
        report([inspect, evaluate, resume])
        print("fuzz checkpoints: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}
