import AsymKernels
import AsymModel
import XCTest

final class ConfigTests: XCTestCase {
    func testShippedConfigsBuild() throws {
        XCTAssertGreaterThanOrEqual(shippedConfigNames.count, 7)
        for name in shippedConfigNames {
            let c = try Config.load(path: "\(repoRoot)/configs/\(name).yaml")
            let m = try Model(c.model)
            XCTAssertEqual(m.classes, 10 - (name == "smoke" ? 6 : 0), name)
        }
        let fm = try Config.load(path: "\(repoRoot)/configs/fmnist-cnn.yaml")
        XCTAssertEqual(fm.data.batchSize, 64)
        XCTAssertEqual(fm.optimizer.lr, 0.05)
        XCTAssertEqual(fm.optimizer.schedule.type, .cosine)
        XCTAssertEqual(try Model(fm.model).parameterCount, 320 + 9248 + 18496 + 36928 + 401_536 + 1290)
    }

    func testOverridesAreTypedAndValidated() throws {
        let c = try smokeConfig(["optimizer.lr=0.2", "train.epochs=3", "data.normalize=[0.5, 0.25]",
                                 "model.layers.0.out=6"])
        XCTAssertEqual(c.optimizer.lr, 0.2)
        XCTAssertEqual(c.train.epochs, 3)
        XCTAssertEqual(c.data.normalizeMean, [0.5]); XCTAssertEqual(c.data.normalizeStd, [0.25])
        XCTAssertEqual(c.model.layers[0].out, 6)

        let typo = errorMessage { _ = try smokeConfig(["optimizer.lrr=0.2"]) }
        XCTAssertTrue(typo.contains("optimizer.lrr: unknown key") && typo.contains("lr"), typo)
        let type = errorMessage { _ = try smokeConfig(["train.epochs=many"]) }
        XCTAssertTrue(type.contains("train.epochs: expected an integer"), type)
        let choice = errorMessage { _ = try smokeConfig(["asym.mode=fast"]) }
        XCTAssertTrue(choice.contains("plain, tee-only, asym"), choice)
        let index = errorMessage { _ = try smokeConfig(["model.layers.99.out=3"]) }
        XCTAssertTrue(index.contains("not an index"), index)
        let placement = errorMessage { _ = try smokeConfig(["model.layers.2.placement=untrusted"]) }
        XCTAssertTrue(placement.contains("use one of: trusted, split"), placement)
        XCTAssertEqual(try smokeConfig(["asym.rank=64"]).asym.rank.max, 64)
        let syntax = errorMessage { _ = try smokeConfig(["optimizer.lr"]) }
        XCTAssertTrue(syntax.contains("key.path=value"), syntax)
    }

    func testBadConfigsGiveOneClearLine() throws {
        let yaml = errorMessage { _ = try Config.parse(yaml: "model: [unclosed", source: "bad.yaml") }
        XCTAssertTrue(yaml.hasPrefix("bad.yaml: invalid YAML"), yaml)
        let missing = errorMessage { _ = try Config.load(path: "/nonexistent/x.yaml") }
        XCTAssertTrue(missing.contains("/nonexistent/x.yaml"), missing)
        let unknownLayer = errorMessage { _ = try smokeConfig(["model.layers.1.type=gelu"]) }
        XCTAssertTrue(unknownLayer.contains("'gelu' is not accepted") && unknownLayer.contains("relu"), unknownLayer)
        let shapes = errorMessage { _ = try Model(try smokeConfig(["model.layers.8.in=65"]).model) }
        XCTAssertTrue(shapes.contains("declares in: 65, but 64 features"), shapes)
        let noisy = errorMessage { _ = try smokeConfig(["asym.verify=true", "asym.residual_noise={std: 0.1, clip: 1}"]) }
        XCTAssertTrue(noisy.contains("asym.verify does not work with asym.residual_noise"), noisy)
        let spreadAlone = errorMessage { _ = try smokeConfig(["asym.mask={inputs_per_group: 0, spread: true}"]) }
        XCTAssertTrue(spreadAlone.contains("asym.mask.spread: needs masking on"), spreadAlone)
        // The private setting is the default; `mask: off` (smoke's) is the unprotected split,
        // and a key of the mask set on top of it turns masking on with the defaults.
        let byDefault = try Config.parse(yaml: "model: {input: [1, 4, 4], layers: [{type: flatten}, {type: linear, out: 2}]}\ndata: {dataset: synthetic, classes: 2}")
        XCTAssertEqual([byDefault.asym.maskGroup, byDefault.asym.maskSpread ? 1 : 0, byDefault.asym.verify ? 1 : 0], [1, 1, 1])
        XCTAssertEqual(byDefault.asym.maskNoise, AsymConfig.privateNoise)
        XCTAssertEqual(try smokeConfig().asym.maskGroup, 0)
        XCTAssertFalse(try smokeConfig().asym.maskSpread)
        XCTAssertEqual(try smokeConfig(["asym.mask=false"]).asym.maskGroup, 0)
        let spread = try smokeConfig(["asym.mask.noise_scale=10"])
        XCTAssertEqual([spread.asym.maskGroup, spread.asym.maskSpread ? 1 : 0], [1, 1])
        XCTAssertTrue(spread.yaml.contains("spread: true"), spread.yaml)
        let whole = try smokeConfig(["asym.mask={inputs_per_group: 2, spread: false}"])
        XCTAssertEqual([whole.asym.maskGroup, whole.asym.maskSpread ? 1 : 0], [2, 0])
        let none = errorMessage { _ = try smokeConfig(["data.train_samples=0"]) }
        XCTAssertTrue(none.contains("data.train_samples: must be positive"), none)
    }

    func testResolvedConfigRoundTrips() throws {
        for name in shippedConfigNames {
            let c = try Config.load(path: "\(repoRoot)/configs/\(name).yaml")
            XCTAssertEqual(try Config.parse(yaml: c.yaml), c, name)
        }
    }

    func testSchedules() throws {
        var c = try smokeConfig()
        c.optimizer.lr = 1
        c.optimizer.schedule.type = .cosine
        let cosine = SGDOptimizer(c.optimizer, stepsPerEpoch: 10, totalSteps: 100)
        XCTAssertEqual(cosine.learningRate(step: 0), 1)
        XCTAssertEqual(cosine.learningRate(step: 50), 0.5, accuracy: 1e-12)
        XCTAssertEqual(cosine.learningRate(step: 100), 0, accuracy: 1e-12)
        c.optimizer.schedule = ScheduleConfig()
        c.optimizer.schedule.type = .step; c.optimizer.schedule.stepEpochs = 2; c.optimizer.schedule.gamma = 0.1
        let step = SGDOptimizer(c.optimizer, stepsPerEpoch: 10, totalSteps: 100)
        XCTAssertEqual(step.learningRate(step: 19), 1)
        XCTAssertEqual(step.learningRate(step: 20), 0.1, accuracy: 1e-12)
        XCTAssertEqual(step.learningRate(step: 45), 0.01, accuracy: 1e-12)
        c.optimizer.schedule.type = .constant
        XCTAssertEqual(SGDOptimizer(c.optimizer, stepsPerEpoch: 10, totalSteps: 100).learningRate(step: 77), 1)
    }
}
