extension Config {
    /// What protects the run, for its header line: the privacy layers on what crosses to the
    /// untrusted ranks and whether their results are checked.
    package var protection: String {
        let a = asym
        guard a.mode == .asym else { return "mode \(a.mode.rawValue): nothing crosses to untrusted ranks" }
        var privacy: String
        if a.maskGroup > 0 {
            let mixing = "K = \(a.maskGroup), noise \(a.maskNoise)"
            privacy = a.maskSpread ? "spread masking (\(mixing)), each group over 3 untrusted ranks"
                : "masking (\(mixing)), each group whole on one untrusted rank, which can unmix it"
        } else {
            privacy = "no masking: residuals and output gradients cross in the clear"
        }
        if a.noiseStd > 0 { privacy += ", residual noise std \(a.noiseStd) (not exact)" }
        let checks = a.verify ? "integrity checks on (\(a.onVerifyFailure.rawValue))" : "integrity checks off"
        return "privacy: \(privacy); \(checks)"
    }
}
