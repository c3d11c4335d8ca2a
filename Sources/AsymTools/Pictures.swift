import AsymModel
import AsymTrain
import AsymKernels
import AsymViz
import Foundation

/// `asymml plot` and `asymml privacy`: PNG pictures of a run and of what each side sees.
package enum Pictures {
    /// Reads metrics.jsonl into (step, field) series; nested objects become `field/key`.
    /// Every record counts (each evaluation, whether every `train.eval_every` steps or
    /// at epoch ends). Steps that a file repeats (a run resumed from an earlier
    /// checkpoint into a folder whose records went past it) read as the run last went:
    /// a record whose step is below an earlier record's drops the points at that step
    /// and after it, and a repeated step replaces the point of its series.
    package static func readMetrics(_ path: String) throws -> [String: [(Double, Double)]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw FileError("\(path): cannot read it; is this a run folder (asymml train writes metrics.jsonl)?")
        }
        var series: [String: [(Double, Double)]] = [:]
        var lastStep = -Double.infinity
        for (n, line) in text.split(separator: "\n").enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (object["step"] as? NSNumber)?.doubleValue else {
                throw FileError("\(path): line \(n + 1) is not a metrics record")
            }
            if step < lastStep {
                for key in series.keys { series[key]!.removeAll { $0.0 >= step } }
            }
            lastStep = step
            func add(_ key: String, _ value: Any) {
                if let v = value as? NSNumber {
                    if series[key]?.last?.0 == step { series[key]!.removeLast() }
                    series[key, default: []].append((step, v.doubleValue))
                }
                if let inner = value as? [String: Any] { for (k, v) in inner { add("\(key)/\(k)", v) } }
            }
            for (k, v) in object where k != "step" { add(k, v) }
        }
        return series
    }

    /// Writes loss.png, accuracy.png and (asym runs) residual_energy.png into `out`.
    /// Returns the paths written.
    @discardableResult
    package static func plot(runDir: String, out: String) throws -> [String] {
        let m = try readMetrics(runDir + "/metrics.jsonl")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var written: [String] = []
        func save(_ chart: LineChart, _ name: String) throws {
            let path = "\(out)/\(name)"
            try writePNG(chart.render(), to: path)
            written.append(path)
        }
        // Every chart spans the run's steps from 0, so that they line up.
        let steps = m.values.flatMap { $0.map(\.0) }
        let run = steps.max().map { 0...Swift.max($0, 1) }
        // Training values are averages over the last log_every steps: lines. Evaluations
        // are measurements at their steps: markers where they are sparse.
        var loss = LineChart(title: "Loss", xLabel: "step", yLabel: "cross-entropy", logY: true,
                             xInclude: run, emptyMessage: "no loss in metrics.jsonl yet")
        if let train = m["loss"] { loss.addSeries(name: "train loss", points: train, markers: .never) }
        if let test = m["test_loss"] { loss.addSeries(name: "test loss", points: test, markers: .auto) }
        try save(loss, "loss.png")
        // metrics.jsonl holds accuracy as a fraction; the chart reads in percent, like the console.
        var accuracy = LineChart(title: "Test accuracy", xLabel: "step", yLabel: "accuracy", yFormat: .percent,
                                 yBounds: 0...1, xInclude: run, emptyMessage: "no evaluation in metrics.jsonl yet")
        if let test = m["test_accuracy"] { accuracy.addSeries(name: "test accuracy", points: test, markers: .auto) }
        try save(accuracy, "accuracy.png")
        let energies = m.keys.filter { $0.hasPrefix("residual_energy/") }.sorted()
        if !energies.isEmpty {
            var chart = LineChart(title: "Residual energy ratio, R over X", xLabel: "step", yLabel: "energy ratio", xInclude: run)
            for key in energies {
                chart.addSeries(name: String(key.dropFirst("residual_energy/".count)), points: m[key]!, markers: .never)
            }
            try save(chart, "residual_energy.png")
        }
        return written
    }

    /// For the first `samples` test samples: the input and, for the first `layers` split
    /// layers, the strongest channel of the feature map X, of its low-rank part L (trusted)
    /// and of its residual R (sent to the untrusted side), all three on X's gray scale, with
    /// ||R||^2 / ||X||^2 of the whole map.
    @discardableResult
    package static func privacy(config: Config, checkpoint: String, out: String, samples: Int = 4, layers: Int = 2) throws -> String {
        var c = config
        c.asym.mode = .asym
        let trainer = try Trainer(config: c)
        try Checkpoint.load(checkpoint, into: trainer, for: .evaluate)
        let n = min(samples, trainer.data.test.count)
        let x = Tensor(shape: [n] + c.model.input)
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: n)
        defer { labels.deallocate() }
        trainer.data.test.gather(indices: Int32(0)..<Int32(n), images: x.data, labels: labels)
        _ = trainer.model.forward(x, batch: n, training: false)
        let splits = Array(trainer.splitLayers.prefix(layers))
        guard !splits.isEmpty else { throw ConfigError("model.layers: the model has no split convolution to picture") }

        let tile = 84, pad = 12, label = 14
        let columns = 1 + 3 * splits.count
        var image = RGBImage(width: pad + columns * (tile + pad), height: 40 + n * (tile + label + pad), background: .white)
        image.drawText("What each side sees: input, then per split layer X = L (trusted) + R (untrusted)", x: pad, y: 8, color: .black)
        let input = c.model.input
        for s in 0..<n {
            let top = 30 + s * (tile + label + pad)
            // The input's first channel.
            let plane = Array(UnsafeBufferPointer(start: x.data + s * input.reduce(1, *), count: input[1] * input[2]))
            image.blit(tileImage(plane, input[2], input[1], tile, range: extent(plane)), x: pad, y: top + label)
            image.drawText("input", x: pad, y: top, color: .black)
            for (l, conv) in splits.enumerated() {
                let g = conv.geometry, P = g.height * g.width
                let (low, res) = conv.split!.lastDecomposition(sample: s)
                let full = zip(low, res).map { $0 + $1 }
                // The channel with the most energy in X.
                let strongest = (0..<g.inChannels).max { a, b in
                    energy(full, a * P, P) < energy(full, b * P, P)
                }!
                let ratio = energy(res, 0, res.count) / max(energy(full, 0, full.count), 1e-30)
                let parts = [("\(conv.name) X", full), ("L", low), (String(format: "R %.3f", ratio), res)]
                // One gray scale for X, L and R of a channel, so that R looks as faint as it is.
                let range = extent(Array(full[(strongest * P)..<((strongest + 1) * P)]))
                for (k, (name, values)) in parts.enumerated() {
                    let left = pad + (1 + 3 * l + k) * (tile + pad)
                    let channel = Array(values[(strongest * P)..<((strongest + 1) * P)])
                    image.blit(tileImage(channel, g.width, g.height, tile, range: range), x: left, y: top + label)
                    image.drawText(name, x: left, y: top, color: .black)
                }
            }
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let path = out + "/privacy.png"
        try writePNG(image, to: path)
        return path
    }

    static func energy(_ v: [Float], _ start: Int, _ count: Int) -> Double {
        var s = 0.0
        for i in start..<(start + count) { s += Double(v[i]) * Double(v[i]) }
        return s
    }

    static func extent(_ values: [Float]) -> ClosedRange<Float> {
        let lo = values.min() ?? 0, hi = values.max() ?? 0
        return lo...max(hi, lo + 1e-12)
    }

    /// A grayscale tile of about `size` pixels for a width x height plane, mapping `range`
    /// to black..white (values outside are clipped).
    static func tileImage(_ values: [Float], _ width: Int, _ height: Int, _ size: Int, range: ClosedRange<Float>) -> RGBImage {
        let scale = max(1, size / max(width, height))
        var image = RGBImage(width: width * scale, height: height * scale)
        for y in 0..<height {
            for x in 0..<width {
                let t = (min(max(values[y * width + x], range.lowerBound), range.upperBound) - range.lowerBound)
                    / (range.upperBound - range.lowerBound)
                let v = UInt8((255 * t).rounded())
                image.fillRect(x: x * scale, y: y * scale, width: scale, height: scale, color: RGBColor(v, v, v))
            }
        }
        return image
    }
}
