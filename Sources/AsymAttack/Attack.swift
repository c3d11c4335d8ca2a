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

    package struct Report {
        package var layer: String, layerIndex: Int
        package var residualShape: [Int], outputGradientShape: [Int]
        package var samples: Int, fitCount: Int, trainingSetSize: Int
        package var reconstructionFit: Int, reconstructionHeldOut: Int
        package var residualEnergy: Double
        /// (source, held-out accuracy), in table order; "chance" last.
        package var labelProbe: [(String, Double)]
        package var reconstruction: [Reconstruction]
        package var seconds: [(String, Double)]
        package var options: Options
    }

    package static func run(config: Config, checkpoint: String, options: Options) throws -> Report {
        Commands.configureThreads(config)
        var clock = Stopwatch()
        let capture = try Capture.run(config: config, checkpoint: checkpoint, layerName: options.layer, samples: options.samples)
        let captureSeconds = clock.lap()
        let n = capture.labels.count, fit = n / 2

        let sources = [("residual", capture.residual), ("output_gradient", capture.outputGradient),
                       ("full", capture.full), ("raw_input", capture.images)]
        var probe = try sources.map { name, f in
            (name, try labelProbeAccuracy(f, labels: capture.labels, classes: capture.classes, fitCount: fit,
                                          epochs: options.probeEpochs, seed: options.seed))
        }
        probe.append(("chance", 1 / Double(capture.classes)))
        let probeSeconds = clock.lap()

        // The decoders cost far more per sample than the probes: they fit on at most
        // `reconstructionFit` samples and are scored on at most `reconstructionHeldOut`.
        let rf = min(fit, options.reconstructionFit), rh = min(n - fit, options.reconstructionHeldOut)
        func subset(_ f: Features) -> Features {
            Features(shape: f.shape, values: f.slice(0..<rf).values + f.slice(fit..<(fit + rh)).values)
        }
        let pixels = subset(toPixels(capture.images, config.data))
        let factor = try downsampling(image: pixels.shape, map: capture.residual.shape)
        let targets = spaceToDepth(pixels, factor: factor)
        let truth = pixels.slice(rf..<(rf + rh))
        var rng = RNG(seed: UInt64(truncatingIfNeeded: options.seed), stream: 7)
        let noise = Features(shape: capture.residual.shape,
                             values: (0..<((rf + rh) * capture.residual.sampleSize)).map { _ in rng.normal() })
        let reconstruction = try [("residual", subset(capture.residual)), ("full", subset(capture.full)), ("noise", noise)].map { name, f in
            let inputs = standardized(f, fitOn: rf)
            func score(_ predicted: Features) -> Quality {
                let images = depthToSpace(predicted, factor: factor)
                let q = ImageQuality.compare(images.values.map { min(max($0, 0), 1) }, truth.values, shape: truth.shape)
                return Quality(psnr: q.psnr, ssim: q.ssim)
            }
            return Reconstruction(source: name,
                                  ridge: score(ridgeDecode(inputs, targets: targets, fitCount: rf)),
                                  conv: score(try convDecode(inputs, targets: targets, fitCount: rf,
                                                             epochs: options.decoderEpochs, seed: options.seed)))
        }
        let reconstructionSeconds = clock.lap()
        return Report(layer: capture.layerName, layerIndex: capture.layerIndex, residualShape: capture.residual.shape,
                      outputGradientShape: capture.outputGradient.shape, samples: n, fitCount: fit,
                      trainingSetSize: capture.trainingSetSize,
                      reconstructionFit: rf, reconstructionHeldOut: rh, residualEnergy: capture.residualEnergy, labelProbe: probe,
                      reconstruction: reconstruction,
                      seconds: [("capture", captureSeconds), ("label_probe", probeSeconds),
                                ("reconstruction", reconstructionSeconds), ("total", clock.total)],
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
            throw ConfigError("--layer: its \(map[1])x\(map[2]) map does not tile the \(image[1])x\(image[2]) input evenly; the decoders need a whole factor")
        }
        return f
    }
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
    private var headline: String {
        "asymml attack: layer \(layer) (split layer \(layerIndex)); the adversary holds R \(residualShape) forward and dY \(outputGradientShape) backward per sample\n"
            + "samples: the first \(samples) of \(trainingSetSize) training samples (a subsample), \(fitCount) to fit the attacker's models, \(samples - fitCount) held out; "
            + String(format: "residual energy ||R||^2/||X||^2 %.4f", residualEnergy)
    }

    /// One aligned table: label probes, then reconstructions.
    package var table: String {
        var lines = [headline, "",
                     "label probe (conv-relu-pool-conv-relu-pool-linear, \(options.probeEpochs) epochs)   held-out accuracy"]
        let names = ["residual": "residual R (untrusted)", "output_gradient": "output gradient dY (untrusted)",
                     "full": "full X (reference)", "raw_input": "raw input (reference)", "chance": "chance",
                     "noise": "Gaussian noise (baseline)"]
        for (source, accuracy) in labelProbe {
            lines.append("  " + names[source]!.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: "%8.4f", accuracy))
        }
        lines += ["", "input reconstruction: decoders fit on \(reconstructionFit) samples (ridge on the first \(min(reconstructionFit, ridgeFitSamples))), scored on \(reconstructionHeldOut) held-out images",
                  "  (pixels in [0,1]; PSNR dB, mean over images; SSIM 11x11 Gaussian sigma 1.5, valid window)",
                  "  " + "from".padding(toLength: 34, withPad: " ", startingAt: 0)
                    + ["ridge PSNR", "ridge SSIM", "conv PSNR", "conv SSIM"].map { $0.leftPadded(12) }.joined()]
        for r in reconstruction {
            lines.append("  " + names[r.source]!.padding(toLength: 34, withPad: " ", startingAt: 0)
                         + [r.ridge.psnr, r.ridge.ssim, r.conv.psnr, r.conv.ssim].map { String(format: "%12.4f", $0) }.joined())
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
        let object: [String: Any] = [
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
            "seconds": Dictionary(uniqueKeysWithValues: seconds.map { ($0.0, $0.1) }),
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
