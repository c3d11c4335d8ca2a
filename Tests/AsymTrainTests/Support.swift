import AsymKernels
import AsymSplit
import AsymModel
import AsymTools
import AsymTrain
import AsymTestSupport
import Foundation
import XCTest

let repoRoot = repositoryRoot

func smokeConfig(_ overrides: [String] = []) throws -> Config {
    try Config.load(path: repoRoot + "/configs/smoke.yaml", overrides: overrides)
}

func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "asymml-test-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Every parameter and state tensor of a model, flattened, for exact comparisons.
func modelValues(_ t: Trainer) -> [Float] {
    t.model.leaves.flatMap { l in l.parameters.flatMap { $0.value.array + $0.momentum.array } + l.buffers.flatMap { $0.value.array } }
}

/// Runs `body` and returns the message of the error it throws (fails if none).
func errorMessage(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
    do { try body() } catch { return "\(error)" }
    XCTFail("expected an error", file: file, line: line)
    return ""
}

/// Every parameter, momentum buffer and state buffer of `a` against the same tensor of `b`,
/// each on its own: (name, max |a - b| / max |b|).
func tensorDifferences(_ a: Trainer, _ b: Trainer) -> [(String, Float)] {
    zip(a.model.leaves, b.model.leaves).flatMap { la, lb in
        zip(la.parameters, lb.parameters).flatMap { p, q in
            [("\(la.name)/\(p.name)", relativeDifference(p.value, q.value)),
             ("\(la.name)/\(p.name) momentum", relativeDifference(p.momentum, q.momentum))]
        } + zip(la.buffers, lb.buffers).map { ("\(la.name)/\($0.name)", relativeDifference($0.value, $1.value)) }
    }
}

/// Asserts that every tensor of `a` is within `tolerance` of `b`'s; returns the worst.
@discardableResult
func assertTensorsClose(_ a: Trainer, _ b: Trainer, _ tolerance: Float, _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) -> (String, Float) {
    let diffs = tensorDifferences(a, b)
    for (name, d) in diffs { XCTAssertLessThanOrEqual(d, tolerance, "\(label): \(name)", file: file, line: line) }
    return diffs.max { $0.1 < $1.1 } ?? ("", 0)
}

/// Trains `steps` steps and returns the mean training loss of the first and the last
/// `window` steps, with the test-set evaluation before and after.
func trainAndMeasure(_ t: Trainer, steps: Int, window: Int) throws -> (first: Double, last: Double, before: Evaluation, after: Evaluation) {
    let before = try t.evaluate(t.data.test)
    var first = 0.0, last = 0.0
    for i in 0..<steps {
        let (loss, _) = try t.step()
        if i < window { first += loss / Double(window) }
        if i >= steps - window { last += loss / Double(window) }
    }
    return (first, last, before, try t.evaluate(t.data.test))
}
