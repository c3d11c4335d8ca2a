import AsymKernels
import AsymModel
import AsymTrain
import Dispatch
import Foundation

/// `asymml attack`: what an honest-but-curious untrusted rank can learn from one split layer.
package enum Attack {
    package struct Options {
        /// The split layer to attack (default: the first).
        package var layer: String?
        /// Training samples to capture; half fit the attacker's models, half test them.
        package var samples = 3072
        package var probeEpochs = 6
        package var decoderEpochs = 6
        /// Samples the decoders fit on, and held-out images they are scored on (at most).
        package var reconstructionFit = 768
        package var reconstructionHeldOut = 512
        package var seed = 0
        /// With `asym.mask.spread`: the untrusted rank (0, 1 or 2 of the three a group spreads
        /// over) whose view is attacked (nil: 0), or, with `colluding`, what all three received
        /// together. (With more ranks a rank sees fewer groups, not more of one.)
        package var rankView: Int?
        package var colluding = false
        package init() {}
    }

    /// PSNR (dB) and SSIM of reconstructed against true held-out images.
    package struct Quality {
        package var psnr: Double, ssim: Double
    }

    /// One reconstruction source (residual, full X, noise) under both decoders.
    package struct Reconstruction {
        package var source: String
        package var ridge: Quality, conv: Quality
        /// The adversary keeps the better decoder.
        package var best: Quality { ridge.psnr >= conv.psnr ? ridge : conv }
    }

    /// The unmixing attack on a masked capture: FastICA per mask group, each sample paired
    /// with its best-matching recovered source (see `unmix`), then the same label probe and
    /// decoders on those sources. Keys "residual" and "output_gradient".
    package struct Unmixing {
        /// Mean over samples of the best |correlation| between a recovered source and the truth.
        package var sourceCorrelation: [String: Double]
        /// Also the denoising probe, under `Attack.denoised(key)`.
        package var labelProbe: [String: Double]
        /// Input reconstruction from the recovered residuals.
        package var reconstruction: Reconstruction
    }

    package struct Report {
        package var layer: String, layerIndex: Int
        package var residualShape: [Int], outputGradientShape: [Int]
        package var samples: Int, fitCount: Int, trainingSetSize: Int
        package var reconstructionFit: Int, reconstructionHeldOut: Int
        package var residualEnergy: Double
        /// (source, held-out accuracy), in table order; "chance" last. The denoising probe's
        /// rows for what the rank received are keyed `Attack.denoised("residual")` and
        /// `Attack.denoised("output_gradient")`.
        package var labelProbe: [(String, Double)]
        package var reconstruction: [Reconstruction]
        /// Residuals (and output gradients) that crossed: `samples`, or with masking the
        /// K + 2 combinations of every group of K.
        package var received: Int
        /// (K, sigma) of `asym.mask`, (std, clip) of `asym.residual_noise`, when on.
        package var mask: (groupSize: Int, noiseScale: Double)?
        package var residualNoise: (std: Double, clip: Double)?
        /// Median per-sample ||R|| of the decomposition, before noise or masking (the scale
        /// that `asym.residual_noise.clip` is measured against).
        package var medianResidualNorm: Double
        /// With spread masking: the untrusted ranks, and the one whose view was attacked (nil:
        /// all of them, colluding).
        package var spread: (ranks: Int, view: Int?)?
        /// With masking only.
        package var unmixing: Unmixing?
        package var seconds: [(String, Double)]
        package var options: Options
    }

    /// The report key of the denoising probe (`ProbeDenoising.pooledBothSigns`) on `source`.
    package static func denoised(_ source: String) -> String { source + "_pooled_both_signs" }

    package static func run(config: Config, checkpoint: String, options: Options) throws -> Report {
        configureThreads(config)
        var clock = Stopwatch()
        let spread = config.asym.maskGroup > 0 && config.asym.maskSpread
        guard !options.colluding || (spread && options.rankView == nil) else {
            throw UsageError("--colluding: needs asym.mask.spread, and no --rank-view (it attacks what every untrusted rank received together)")
        }
        let view = spread && !options.colluding ? options.rankView ?? 0 : options.rankView
        let capture = try Capture.run(config: config, checkpoint: checkpoint, layerName: options.layer, samples: options.samples,
                                  rankView: view)
        let captureSeconds = clock.lap()
        let n = capture.labels.count, fit = n / 2
        let identity = Array(0..<n)
        // What crossed is judged against its target samples (itself without masking, the
        // dominant sample of each combination with it); the fit / held-out split of what
        // crossed falls between mask groups, at the first group from sample `fit` on.
        let receivedFit = capture.received(before: fit)
        // What the rank received is probed twice: as it is, and as an attacker facing masking's
        // noise and random signs would (pooled, fitted on both signs).
        let sources: [(String, Features, [Int], Int, ProbeDenoising)] = [
            ("residual", capture.residual, capture.residualTargets, receivedFit, .none),
            ("output_gradient", capture.outputGradient, capture.outputGradientTargets, receivedFit, .none),
            (denoised("residual"), capture.residual, capture.residualTargets, receivedFit, .pooledBothSigns),
            (denoised("output_gradient"), capture.outputGradient, capture.outputGradientTargets, receivedFit, .pooledBothSigns),
            ("full", capture.full, identity, fit, .none), ("raw_input", capture.images, identity, fit, .none)]
        func probeAccuracy(_ f: Features, targets: [Int], fitCount: Int, denoising: ProbeDenoising = .none) throws -> Double {
            try labelProbeAccuracy(f, labels: targets.map { capture.labels[$0] }, classes: capture.classes,
                                   fitCount: fitCount, epochs: options.probeEpochs, seed: options.seed, denoising: denoising)
        }
        var probe = try sources.map { ($0.0, try probeAccuracy($0.1, targets: $0.2, fitCount: $0.3, denoising: $0.4)) }
        probe.append(("chance", 1 / Double(capture.classes)))
        let probeSeconds = clock.lap()

        // The decoders cost far more per sample than the probes: they fit on at most
        // `reconstructionFit` samples and are scored on at most `reconstructionHeldOut`.
        // Each input is decoded towards the image of its target sample.
        let rf = min(fit, options.reconstructionFit), rh = min(n - fit, options.reconstructionHeldOut)
        let allPixels = toPixels(capture.images, config.data)
        let factor = try downsampling(image: allPixels.shape, map: capture.residual.shape)
        var rng = RNG(seed: UInt64(truncatingIfNeeded: options.seed), stream: 7)
        func gather(_ g: Features, _ indices: [Int]) -> Features {
            Features(shape: g.shape, values: indices.flatMap { g.slice($0..<($0 + 1)).values })
        }
        // Noise (the baseline) is drawn for the rows used only.
        let reconstructionSources: [(String, Features?, [Int], Int)] = [
            ("residual", capture.residual, capture.residualTargets, receivedFit),
            ("full", capture.full, identity, fit), ("noise", nil, identity, fit)]
        func reconstruct(_ name: String, _ f: Features?, _ targets: [Int], _ fitCount: Int) throws -> Reconstruction {
            let rows = Array(0..<min(fitCount, rf)) + Array(fitCount..<min(targets.count, fitCount + rh))
            let fitRows = min(fitCount, rf)
            let pixels = gather(allPixels, rows.map { targets[$0] })
            let picked = f.map { gather($0, rows) }
                ?? Features(shape: capture.residual.shape,
                            values: (0..<(rows.count * capture.residual.sampleSize)).map { _ in rng.normal() })
            let inputs = standardized(picked, fitOn: fitRows)
            let targetBlocks = spaceToDepth(pixels, factor: factor)
            let truth = pixels.slice(fitRows..<rows.count)
            func score(_ predicted: Features) -> Quality {
                let images = depthToSpace(predicted, factor: factor)
                let q = ImageQuality.compare(images.values.map { min(max($0, 0), 1) }, truth.values, shape: truth.shape)
                return Quality(psnr: q.psnr, ssim: q.ssim)
            }
            return Reconstruction(source: name,
                                  ridge: score(ridgeDecode(inputs, targets: targetBlocks, fitCount: fitRows)),
                                  conv: score(try convDecode(inputs, targets: targetBlocks, fitCount: fitRows,
                                                             epochs: options.decoderEpochs, seed: options.seed)))
        }
        let reconstruction = try reconstructionSources.map { try reconstruct($0.0, $0.1, $0.2, $0.3) }
        let reconstructionSeconds = clock.lap()

        // Unmixing gives one recovered source per sample, so it splits at sample `fit`.
        let unmixing = try capture.unmasked.map { truth in
            let spread = capture.spread != nil
            let r = unmix(capture.residual, groups: capture.groups, truth: truth.residual, spread: spread, seed: options.seed)
            let dy = unmix(capture.outputGradient, groups: capture.groups, truth: truth.outputGradient, spread: spread,
                           seed: options.seed)
            return Unmixing(sourceCorrelation: ["residual": r.meanCorrelation, "output_gradient": dy.meanCorrelation],
                            labelProbe: ["residual": try probeAccuracy(r.features, targets: identity, fitCount: fit),
                                         "output_gradient": try probeAccuracy(dy.features, targets: identity, fitCount: fit),
                                         denoised("residual"): try probeAccuracy(r.features, targets: identity, fitCount: fit,
                                                                                 denoising: .pooledBothSigns),
                                         denoised("output_gradient"): try probeAccuracy(dy.features, targets: identity, fitCount: fit,
                                                                                        denoising: .pooledBothSigns)],
                            reconstruction: try reconstruct("unmixed_residual", r.features, identity, fit))
        }
        let unmixingSeconds = clock.lap()
        return Report(layer: capture.layerName, layerIndex: capture.layerIndex, residualShape: capture.residual.shape,
                      outputGradientShape: capture.outputGradient.shape, samples: n, fitCount: fit,
                      trainingSetSize: capture.trainingSetSize,
                      reconstructionFit: rf, reconstructionHeldOut: rh, residualEnergy: capture.residualEnergy, labelProbe: probe,
                      reconstruction: reconstruction, received: capture.residual.count, mask: capture.mask,
                      residualNoise: capture.residualNoise, medianResidualNorm: median(capture.residualNorms),
                      spread: capture.spread, unmixing: unmixing,
                      seconds: [("capture", captureSeconds), ("label_probe", probeSeconds),
                                ("reconstruction", reconstructionSeconds)]
                        + (unmixing == nil ? [] : [("unmixing", unmixingSeconds)]) + [("total", clock.total)],
                      options: options)
    }

    /// Model inputs back to pixel / 255 in [0, 1]: undoes `data.normalize` (without it the
    /// loaders already give pixel / 255).
    package static func toPixels(_ images: Features, _ data: DataConfig) -> Features {
        guard let mean = data.normalizeMean, let std = data.normalizeStd else { return images }
        var out = images
        let plane = images.sampleSize / images.shape[0]
        for i in 0..<out.values.count {
            let c = (i / plane) % images.shape[0]
            let (m, s) = mean.count == 1 ? (mean[0], std[0]) : (mean[c], std[c])
            out.values[i] = Float(Double(images.values[i]) * s + m)
        }
        return out
    }

    /// The factor by which the attacked map is smaller than the image (pixels per position
    /// along each side); the decoders predict that block of pixels at each position.
    static func downsampling(image: [Int], map: [Int]) throws -> Int {
        let f = image[1] / map[1]
        guard f >= 1, image[1] == f * map[1], image[2] == f * map[2] else {
            throw UsageError("--layer: its \(map[1])x\(map[2]) map does not tile the \(image[1])x\(image[2]) input evenly; the decoders need a whole factor")
        }
        return f
    }
}

func median(_ v: [Double]) -> Double {
    guard !v.isEmpty else { return .nan }
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Wall-clock laps.
struct Stopwatch {
    private let start = DispatchTime.now().uptimeNanoseconds
    private var last = DispatchTime.now().uptimeNanoseconds

    mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { last = now }
        return Double(now - last) / 1e9
    }

    var total: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}

extension Attack.Report {
    /// The combinations of one group the adversary holds.
    private var perGroup: String { spread.map { $0.view == nil ? "3K" : "K" } ?? "K + 2" }

    private var headline: String {
        "asymml attack: layer \(layer) (split layer \(layerIndex)); the adversary holds R \(residualShape) forward and dY \(outputGradientShape) backward per sample\n"
            + "samples: the first \(samples) of \(trainingSetSize) training samples (a subsample), \(fitCount) to fit the attacker's models, \(samples - fitCount) held out; "
            + String(format: "residual energy ||R||^2/||X||^2 %.4f, median per-sample ||R|| %.4g (before noise or masking)",
                     residualEnergy, medianResidualNorm)
            + (residualNoise.map { String(format: "\nresidual noise on: each residual clipped to norm %g, plus N(0, (%g x %g)^2) per value; the adversary holds the noisy residuals", $0.clip, $0.std, $0.clip) } ?? "")
            + (mask.map { "\nmasking on (K \($0.groupSize), noise scale \($0.noiseScale)): the adversary holds \(received) noisy combinations for \(samples) samples (\(perGroup) per group of K); "
                + "each is labelled, and decoded towards the image of, the group's sample with the largest |mixing coefficient| in it; "
                + "its fit / held-out split falls between groups. The unmixing attack runs FastICA on each group's \(perGroup) combinations "
                + "and pairs every sample with its best-matching recovered source (sign and scale fitted to the truth)." } ?? "")
            + (spread.map { s in "\nspread on: each group of K crosses as 3K combinations (K noise vectors per side) placed over \(s.ranks) untrusted ranks, K per rank; "
                + (s.view.map { "the adversary is untrusted rank \($0) of \(s.ranks) and holds only its K combinations of each group (FastICA looks for K sources in them)" }
                   ?? "the adversary holds what all \(s.ranks) ranks received (colluding: FastICA looks for 2K sources in each group's 3K)") } ?? "")
    }

    /// What the denoising probe does to a map of `shape`, as the tables name it.
    private func denoising(_ shape: [Int]) -> String {
        let window = poolingWindow(shape)
        return (window > 1 ? "pooled \(window)x\(window), " : "") + "both signs"
    }

    /// One aligned table: label probes, then reconstructions.
    package var table: String {
        var lines = [headline, "",
                     "label probe (conv-relu-pool-conv-relu-pool-linear, \(options.probeEpochs) epochs)   held-out accuracy",
                     "  (pooled: average pooling, stride = window, before the probe; both signs: fitted on x and -x alike, scored as received)"]
        let names = ["residual": "residual R (untrusted)", "output_gradient": "output gradient dY (untrusted)",
                     Attack.denoised("residual"): "residual R (\(denoising(residualShape)))",
                     Attack.denoised("output_gradient"): "output gradient dY (\(denoising(outputGradientShape)))",
                     "full": "full X (reference)", "raw_input": "raw input (reference)", "chance": "chance",
                     "noise": "Gaussian noise (baseline)"]
        for (source, accuracy) in labelProbe {
            lines.append("  " + names[source]!.padding(toLength: 46, withPad: " ", startingAt: 0) + String(format: "%8.4f", accuracy))
        }
        lines += ["", "input reconstruction: decoders fit on \(reconstructionFit) samples (ridge on the first \(min(reconstructionFit, ridgeFitSamples))), scored on \(reconstructionHeldOut) held-out images",
                  "  (pixels in [0,1]; PSNR dB, mean over images; SSIM 11x11 Gaussian sigma 1.5, valid window)",
                  "  " + "from".padding(toLength: 34, withPad: " ", startingAt: 0)
                    + ["ridge PSNR", "ridge SSIM", "conv PSNR", "conv SSIM"].map { $0.leftPadded(12) }.joined()]
        for r in reconstruction {
            lines.append("  " + names[r.source]!.padding(toLength: 34, withPad: " ", startingAt: 0)
                         + [r.ridge.psnr, r.ridge.ssim, r.conv.psnr, r.conv.ssim].map { String(format: "%12.4f", $0) }.joined())
        }
        if let unmixing {
            lines += ["", "unmixing (symmetric FastICA, logcosh, per mask group)   R            dY",
                      "  " + "best |corr(source, truth)|".padding(toLength: 34, withPad: " ", startingAt: 0)
                        + ["residual", "output_gradient"].map { String(format: "%13.4f", unmixing.sourceCorrelation[$0]!) }.joined(),
                      "  " + "label probe on recovered sources".padding(toLength: 34, withPad: " ", startingAt: 0)
                        + ["residual", "output_gradient"].map { String(format: "%13.4f", unmixing.labelProbe[$0]!) }.joined(),
                      "  " + "  denoised as above".padding(toLength: 34, withPad: " ", startingAt: 0)
                        + ["residual", "output_gradient"].map { String(format: "%13.4f", unmixing.labelProbe[Attack.denoised($0)]!) }.joined(),
                      "  " + "reconstruction from recovered R".padding(toLength: 34, withPad: " ", startingAt: 0)
                        + String(format: "  ridge %.2f dB (SSIM %.3f), conv %.2f dB (SSIM %.3f)", unmixing.reconstruction.ridge.psnr,
                                 unmixing.reconstruction.ridge.ssim, unmixing.reconstruction.conv.psnr, unmixing.reconstruction.conv.ssim)]
        }
        lines.append("")
        lines.append("seconds: " + seconds.map { "\($0.0) " + String(format: "%.1f", $0.1) }.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }

    /// One JSON object; non-finite numbers (PSNR of a perfect reconstruction) become null.
    package var json: String {
        func number(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        func bySource(_ value: (Attack.Reconstruction) -> Double) -> [String: Any] {
            Dictionary(uniqueKeysWithValues: reconstruction.map { ($0.source, number(value($0))) })
        }
        var object: [String: Any] = [
            "layer": layer, "layer_index": layerIndex,
            "residual_shape": residualShape, "output_gradient_shape": outputGradientShape,
            "samples": samples, "fit_samples": fitCount, "held_out_samples": samples - fitCount,
            "reconstruction_fit_samples": reconstructionFit, "reconstruction_held_out_samples": reconstructionHeldOut,
            "ridge_fit_samples": min(reconstructionFit, ridgeFitSamples),
            "training_set_size": trainingSetSize, "residual_energy": residualEnergy,
            "label_probe": Dictionary(uniqueKeysWithValues: labelProbe.map { ($0.0, $0.1) }),
            "reconstruction_psnr": bySource { $0.best.psnr },
            "reconstruction_ssim": bySource { $0.best.ssim },
            "reconstruction": [
                "ridge": ["psnr": bySource { $0.ridge.psnr }, "ssim": bySource { $0.ridge.ssim }],
                "conv": ["psnr": bySource { $0.conv.psnr }, "ssim": bySource { $0.conv.ssim }],
                "pixel_range": "[0,1]", "psnr": "mean over held-out images",
                "ssim_window": "11x11 Gaussian, sigma 1.5, valid",
            ],
            "probe_epochs": options.probeEpochs, "decoder_epochs": options.decoderEpochs,
            "denoising_probe": [
                "keys": [Attack.denoised("residual"), Attack.denoised("output_gradient")],
                "pooling_window": ["residual": poolingWindow(residualShape), "output_gradient": poolingWindow(outputGradientShape)],
                "method": "average pooling (window x window, stride window) before the probe; fitted on x and -x with the same label, held-out scored as received",
            ] as [String: Any],
            "seconds": Dictionary(uniqueKeysWithValues: seconds.map { ($0.0, $0.1) }),
        ]
        object["median_residual_norm"] = number(medianResidualNorm)
        if let mask {
            object["masked"] = ["inputs_per_group": mask.groupSize, "noise_scale": mask.noiseScale, "received": received,
                                "target": "the group's sample with the largest |mixing coefficient| in each combination"] as [String: Any]
        }
        if let unmixing {
            object["unmixing"] = ["source_correlation": unmixing.sourceCorrelation, "label_probe": unmixing.labelProbe,
                                  "psnr": ["residual": number(unmixing.reconstruction.best.psnr)],
                                  "ssim": ["residual": number(unmixing.reconstruction.best.ssim)],
                                  "method": "symmetric FastICA (logcosh) per mask group; each sample paired with its best-matching source, sign and scale fitted"]
                as [String: Any]
        }
        if let residualNoise { object["residual_noise"] = ["std": residualNoise.std, "clip": residualNoise.clip] }
        if let spread {
            object["spread"] = ["untrusted_ranks": spread.ranks, "rank_view": spread.view.map { $0 as Any } ?? "all (colluding)"] as [String: Any]
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
