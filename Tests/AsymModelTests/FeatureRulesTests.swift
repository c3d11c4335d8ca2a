import AsymModel
import XCTest

/// Every row of the feature-conflict table (`FeatureRules.table`): a config (and launch) that
/// breaks it gives its one line, and the nearest config that keeps it passes.
final class FeatureRulesTests: XCTestCase {
    /// Per rule name: overrides and a launch that break the rule, the line's start, and
    /// overrides and a launch that keep it.
    let cases: [String: (breaking: [String], launch: LaunchShape?, message: String, keeping: [String], keptLaunch: LaunchShape?)] = [
        "microbatches with residual noise":
            (["asym.microbatches=2", "asym.residual_noise={std: 0.1, clip: 1}"], nil, "asym.microbatches: 2 does not work with asym.residual_noise",
             ["asym.microbatches=2", "asym.mask={inputs_per_group: 2, spread: true}", "asym.verify=true"], nil),
        "checks with residual noise":
            (["asym.verify=true", "asym.residual_noise={std: 0.1, clip: 1}"], nil, "asym.verify does not work with asym.residual_noise",
             ["asym.verify=true", "asym.mask={inputs_per_group: 1, spread: true}"], nil),
        "spread without masking":
            (["asym.mask={inputs_per_group: 0, spread: true}"], nil, "asym.mask.spread: needs masking on",
             ["asym.mask={inputs_per_group: 1, spread: true}"], nil),
        "global batch across trusted ranks":
            ([], LaunchShape(trusted: 3, groups: [1, 1, 1]), "data.batch_size: 16 does not divide among 3 trusted ranks",
             [], LaunchShape(trusted: 2, groups: [1, 1])),
        "local batch across an untrusted group":
            (["asym.mode=asym", "data.batch_size=16"], LaunchShape(trusted: 8, groups: Array(repeating: 3, count: 8)),
             "data.batch_size: 2 samples per trusted rank cannot be split among 3 untrusted ranks",
             ["asym.mode=asym", "data.batch_size=16"], LaunchShape(trusted: 4, groups: Array(repeating: 3, count: 4))),
        "spread on fewer than 3 untrusted ranks":
            (["asym.mode=asym", "asym.mask={inputs_per_group: 1, spread: true}"], LaunchShape(trusted: 1, groups: [2]),
             "asym.mask.spread: needs at least 3 untrusted ranks per trusted rank, but a trusted rank here has 2",
             ["asym.mode=asym", "asym.mask={inputs_per_group: 1, spread: true}"], LaunchShape(trusted: 1, groups: [3])),
    ]

    func testEveryRuleHasACase() {
        XCTAssertEqual(Set(FeatureRules.table.map(\.name)), Set(cases.keys))
        XCTAssertEqual(FeatureRules.table.count, cases.count, "rule names are unique")
    }

    func testEveryRuleRefusesItsConflictAndPassesItsNeighbour() throws {
        for rule in FeatureRules.table {
            guard let c = cases[rule.name] else { continue }
            // The config-only rules already refuse at load; the launch rules once the roles are known.
            let message = errorMessage {
                let config = try smokeConfig(c.breaking)
                try FeatureRules.check(config, launch: c.launch)
            }
            XCTAssertTrue(message.hasPrefix(c.message), "\(rule.name): \(message)")
            let kept = try smokeConfig(c.keeping)
            XCTAssertNil(rule.violation(kept, c.keptLaunch), rule.name)
            XCTAssertNoThrow(try FeatureRules.check(kept, launch: c.keptLaunch), rule.name)
        }
    }

    /// Launch rules do not apply in one process: spread then runs in-process for any group.
    func testLaunchRulesNeedALaunch() throws {
        let spread = try smokeConfig(["asym.mode=asym", "asym.mask={inputs_per_group: 1, spread: true}"])
        XCTAssertNoThrow(try FeatureRules.check(spread, launch: nil))
        XCTAssertTrue(FeatureRules.table.contains { $0.needsLaunch } && FeatureRules.table.contains { !$0.needsLaunch })
    }
}
