/// The shape of a launch that the feature rules need: the trusted ranks and the size of each
/// one's untrusted group (under MPI, from the roles); nil for one process, where the
/// untrusted side runs in-process and computes every combination itself.
package struct LaunchShape: Equatable {
    package let trusted: Int
    /// Untrusted ranks per trusted rank, in trusted-rank order.
    package let groups: [Int]
    package init(trusted: Int, groups: [Int]) { self.trusted = trusted; self.groups = groups }
}

/// One combination of features, or of a feature and a launch, that cannot work, with the
/// line that says what to do.
package struct FeatureRule {
    /// A short name for tests and the docs.
    package let name: String
    /// Whether the rule needs the launch's shape (checked only under MPI).
    package let needsLaunch: Bool
    /// The error message when `config` (on `launch`) breaks the rule; nil when it holds.
    package let violation: (_ config: Config, _ launch: LaunchShape?) -> String?
}

/// Every feature and layout conflict, in one table, checked in one place before any step:
/// config-only rules when a config is loaded (`Config.validate`), launch rules once the roles
/// are known (`check(_:launch:)` from the MPI driver). No layer falls back silently instead.
package enum FeatureRules {
    package static let table: [FeatureRule] = [
        FeatureRule(name: "microbatches with residual noise", needsLaunch: false) { c, _ in
            let a = c.asym
            guard a.microbatches > 1 && a.noiseStd > 0 else { return nil }
            return "asym.microbatches: \(a.microbatches) does not work with asym.residual_noise yet (it takes whole batches); set asym.microbatches: 1"
        },
        // (Noised residuals are another model's inputs: there is no exact result to check.)
        FeatureRule(name: "checks with residual noise", needsLaunch: false) { c, _ in
            guard c.asym.verify && c.asym.noiseStd > 0 else { return nil }
            return "asym.verify does not work with asym.residual_noise (the checks' tolerances do not cover the noise); turn one of them off"
        },
        FeatureRule(name: "spread without masking", needsLaunch: false) { c, _ in
            guard c.asym.maskSpread && c.asym.maskGroup == 0 else { return nil }
            return "asym.mask.spread: needs masking on (asym.mask.inputs_per_group >= 1)"
        },
        FeatureRule(name: "global batch across trusted ranks", needsLaunch: true) { c, l in
            guard let l, c.data.batchSize % l.trusted != 0 else { return nil }
            return "data.batch_size: \(c.data.batchSize) does not divide among \(l.trusted) trusted ranks"
        },
        FeatureRule(name: "local batch across an untrusted group", needsLaunch: true) { c, l in
            guard let l, c.asym.mode == .asym, let widest = l.groups.max(), c.data.batchSize / l.trusted < widest else { return nil }
            return "data.batch_size: \(c.data.batchSize / l.trusted) samples per trusted rank cannot be split among \(widest) untrusted ranks"
        },
        FeatureRule(name: "spread on fewer than 3 untrusted ranks", needsLaunch: true) { c, l in
            guard let l, c.asym.mode == .asym, c.asym.maskGroup > 0, c.asym.maskSpread,
                  let narrowest = l.groups.min(), narrowest < 3 else { return nil }
            return "asym.mask.spread: needs at least 3 untrusted ranks per trusted rank, but a trusted rank here has \(narrowest): the private setting sends each sample as 3 noisy mixtures, one to each of 3 untrusted ranks; launch \(3 * l.trusted) untrusted ranks (launch/local.sh -t \(l.trusted) -u \(3 * l.trusted)), or opt out with --set asym.mask=off, which sends residuals and output gradients in the clear and gives the labels away"
        },
    ]

    /// Throws the first rule that `config` breaks: the config-only rules, and with a launch
    /// the launch rules too.
    package static func check(_ config: Config, launch: LaunchShape?) throws {
        for rule in table where launch != nil || !rule.needsLaunch {
            if let message = rule.violation(config, launch) { throw ConfigError(message) }
        }
    }
}
