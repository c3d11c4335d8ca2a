import AsymKernels
import AsymModel
import XCTest

/// `optimizer.type: adamw`: the update against a plain Double reference, and its config keys.
final class AdamWTests: XCTestCase {
    /// torch.optim.AdamW's algorithm as written in its documentation, in Double, one parameter
    /// tensor at a time.
    struct ReferenceAdamW {
        var p: [Double], m: [Double], v: [Double]
        let beta1: Double, beta2: Double, eps: Double, weightDecay: Double

        mutating func step(_ t: Int, lr: Double, grad: [Double]) {
            for i in p.indices {
                p[i] -= lr * weightDecay * p[i]
                m[i] = beta1 * m[i] + (1 - beta1) * grad[i]
                v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i]
                let mHat = m[i] / (1 - pow(beta1, Double(t))), vHat = v[i] / (1 - pow(beta2, Double(t)))
                p[i] -= lr * mHat / (vHat.squareRoot() + eps)
            }
        }
    }

    /// max |a - b| / max |b| over one tensor.
    func relative(_ a: [Float], _ b: [Double]) -> Double {
        let scale = b.map(abs).max() ?? 0
        return zip(a, b).map { abs(Double($0) - $1) }.max()! / scale
    }

    /// Eight steps with random gradients and a cosine schedule, over a small CNN's parameters,
    /// with the default betas and eps and with others: every parameter, first and second
    /// moment within 1e-6 (relative) of the reference.
    func testMatchesReferenceOverSeveralSteps() throws {
        try checkAgainstReference(betas: (0.9, 0.999), eps: 1e-8)
        try checkAgainstReference(betas: (0.8, 0.99), eps: 1e-6)
        // SGD keeps no AdamW state.
        XCTAssertNil(Optimizer(try smokeConfig().optimizer, stepsPerEpoch: 1, totalSteps: 1).adamW)
    }

    func checkAgainstReference(betas: (Double, Double), eps: Double) throws {
        let c = try smokeConfig(["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.lr=0.01",
                                 "optimizer.weight_decay=0.05", "optimizer.betas=[\(betas.0), \(betas.1)]",
                                 "optimizer.eps=\(eps)", "optimizer.schedule=cosine"])
        let model = try Model(c.model)
        model.initialize(seed: 7)
        let initial = model.parameters.map(\.value.array)
        let steps = 8
        let optimizer = Optimizer(c.optimizer, stepsPerEpoch: steps, totalSteps: steps)
        var references = model.parameters.map {
            ReferenceAdamW(p: $0.value.array.map(Double.init), m: Array(repeating: 0, count: $0.value.count),
                           v: Array(repeating: 0, count: $0.value.count), beta1: betas.0, beta2: betas.1, eps: eps, weightDecay: 0.05)
        }
        var rng = RNG(seed: 3)
        for step in 0..<steps {
            // Gradients of varied scale per tensor, as real layers have.
            for (k, p) in model.parameters.enumerated() {
                let scale = Float(pow(10, Double(k % 3) - 2))
                for i in 0..<p.grad.count { p.grad[i] = scale * rng.normal() }
            }
            let lr = optimizer.learningRate(step: step)
            optimizer.apply(learningRate: lr, to: model.parameters)
            for (k, p) in model.parameters.enumerated() {
                references[k].step(step + 1, lr: lr, grad: p.grad.array.map(Double.init))
            }
        }
        let state = try XCTUnwrap(optimizer.adamW)
        XCTAssertEqual(state.steps, steps)
        var worst = (p: 0.0, m: 0.0, v: 0.0)
        for (k, (p, r)) in zip(model.parameters, references).enumerated() {
            let moments = state.moments(of: p)
            let d = (relative(p.value.array, r.p), relative(moments.expAvg.array, r.m), relative(moments.expAvgSq.array, r.v))
            XCTAssertLessThanOrEqual(d.0, 1e-6, "\(p.name) \(p.value.shape)")
            XCTAssertLessThanOrEqual(d.1, 1e-6, "\(p.name) exp_avg")
            XCTAssertLessThanOrEqual(d.2, 1e-6, "\(p.name) exp_avg_sq")
            worst = (max(worst.p, d.0), max(worst.m, d.1), max(worst.v, d.2))
            // Every tensor moved far beyond float rounding: the comparison is not vacuous.
            XCTAssertGreaterThan(relative(p.value.array, initial[k].map(Double.init)), 1e-3, p.name)
        }
        print("AdamW betas \(betas), eps \(eps) vs Double reference, \(steps) steps, worst max|a-b|/max|b|: parameters \(worst.p), exp_avg \(worst.m), exp_avg_sq \(worst.v)")
    }

    func testConfigKeysAndTheirChecks() throws {
        let c = try smokeConfig(["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.betas=[0.85, 0.995]", "optimizer.eps=1e-7"])
        XCTAssertEqual(c.optimizer.type, .adamw)
        XCTAssertEqual([c.optimizer.beta1, c.optimizer.beta2, c.optimizer.eps], [0.85, 0.995, 1e-7])
        // The resolved YAML holds AdamW's keys, not SGD's, and reads back the same.
        XCTAssertTrue(c.yaml.contains("betas: [0.85, 0.995]") && c.yaml.contains("eps: 1e-07"), c.yaml)
        XCTAssertFalse(c.yaml.contains("momentum"), c.yaml)
        XCTAssertEqual(try Config.parse(yaml: c.yaml), c)
        XCTAssertEqual(try Config.parse(yaml: try smokeConfig().yaml), try smokeConfig())

        let bad: [([String], String)] = [
            (["optimizer.type=adam"], "optimizer.type: 'adam' is not accepted; use one of: sgd, adamw"),
            (["optimizer.type=adamw"], "optimizer.momentum, dampening, nesterov: only sgd uses them; adamw's moments decay by optimizer.betas"),
            (["optimizer.betas=[0.9, 0.99]"], "optimizer.betas, optimizer.eps: only adamw uses them, and optimizer.type is sgd"),
            (["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.betas=[0.9, 1.0]"], "optimizer.betas: each must lie in [0, 1), got [0.9, 1.0]"),
            (["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.betas=[0.9]"], "optimizer.betas: expected two numbers [beta1, beta2], got 1"),
            (["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.betas=[0.9, x]"], "optimizer.betas: expected numbers, got 'x'"),
            (["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.eps=0"], "optimizer.eps: must be positive, got 0.0"),
            (["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.weight_decay=-1"], "optimizer.weight_decay: must be >= 0"),
        ]
        for (overrides, expected) in bad {
            let message = errorMessage { _ = try smokeConfig(overrides) }
            XCTAssertEqual(message, expected, "\(overrides)")
        }
    }

    func testAugmentKeys() throws {
        let c = try smokeConfig(["data.augment={random_crop: 4, horizontal_flip: true}"])
        XCTAssertEqual(c.data.augment, AugmentConfig(randomCrop: 4, horizontalFlip: true))
        XCTAssertTrue(c.yaml.contains("random_crop: 4") && c.yaml.contains("horizontal_flip: true"), c.yaml)
        XCTAssertEqual(try Config.parse(yaml: c.yaml), c)
        XCTAssertTrue(try smokeConfig().data.augment.isOff)
        for (overrides, expected) in [
            (["data.augment.random_crop=-1"], "data.augment.random_crop: the padding must lie in 0...65536 (0: no crop), got -1"),
            (["data.augment.horizontal_flip=sometimes"], "data.augment.horizontal_flip: expected true or false, got 'sometimes'"),
            (["data.augment.rotate=10"], "data.augment.rotate: unknown key; accepted keys here: random_crop, horizontal_flip"),
            (["data.augment=true"], "data.augment: expected a mapping of keys"),
        ] {
            XCTAssertEqual(errorMessage { _ = try smokeConfig(overrides) }, expected)
        }
    }
}
