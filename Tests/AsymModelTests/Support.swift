import AsymModel
import AsymTestSupport
import Foundation
import XCTest

let repoRoot = repositoryRoot

/// The names of every config in configs/ (what the shipped-config tests cover).
let shippedConfigNames: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: repoRoot + "/configs")) ?? [])
    .filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()

func smokeConfig(_ overrides: [String] = []) throws -> Config {
    try Config.load(path: repoRoot + "/configs/smoke.yaml", overrides: overrides)
}

/// Runs `body` and returns the message of the error it throws (fails if none).
func errorMessage(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
    do { try body() } catch { return "\(error)" }
    XCTFail("expected an error", file: file, line: line)
    return ""
}
