import AsymKernels
import AsymModel
import AsymTrain
import Foundation
import XCTest

/// `data.augment` reaches training batches: a run with it moves away from one without, and
/// it is a pure function of (seed, epoch, sample), so a resumed run is bit-exact.
final class AugmentedTrainingTests: XCTestCase {
    func testAugmentationTrainsAndResumesExactly() throws {
        setThreads(1)
        let base = ["train.epochs=2", "train.max_steps=40", "model.input=[2, 8, 8]"]
        let augment = "data.augment={random_crop: 2, horizontal_flip: true}"
        let c = try smokeConfig(base + [augment])
        let plain = try Trainer(config: try smokeConfig(base))
        let straight = try Trainer(config: c)
        for _ in 0..<40 { try plain.step(); try straight.step() }
        XCTAssertNotEqual(modelValues(straight), modelValues(plain), "data.augment changed nothing")

        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try Trainer(config: c)
        for _ in 0..<37 { try first.step() }  // past the epoch end at step 32
        let path = try CheckpointStore(folder: folder, keep: 2).save(first, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))
        let resumed = try Trainer(config: c)
        _ = try Checkpoint.load(path, into: resumed)
        for _ in 37..<40 { try resumed.step() }
        XCTAssertEqual(modelValues(resumed), modelValues(straight), "a resumed augmented run differs from the uninterrupted one")
    }
}
