import AsymModel
import AsymTools
import AsymTrain
import Foundation
import XCTest

/// The repository root (for configs/), found from this file's path.
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

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
