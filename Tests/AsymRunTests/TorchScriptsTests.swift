import AsymKernels
import AsymModel
import AsymRun
import AsymTestSupport
import AsymTrain
import Foundation
import XCTest

/// scripts/to_torch.py and scripts/from_torch.py without PyTorch: a checkpoint to a state_dict
/// (.npz, the same conversion code as .pt) and back gives every tensor bit-identical, the same
/// evaluation, and a file that `train --init` starts from. Skipped where python3 lacks numpy,
/// h5py or yaml (`make deps` installs Debian's).
final class TorchScriptsTests: XCTestCase {
    func testRoundTripIsBitIdentical() throws {
        setThreads(1)
        let python = try pythonWithModules()
        let dir = InitFixtures.folder(self)
        var c = try InitFixtures.config()
        c.train.maxSteps = 6
        try Commands.train(config: c, options: TrainOptions(runDir: dir, echo: false))
        let source = dir + "/checkpoints/step-00000006.h5"
        let state = dir + "/state.npz", back = dir + "/back.h5"

        let export = try runJob([python, scripts + "/to_torch.py", source, state])
        XCTAssertEqual(export.status, 0, export.output)
        XCTAssertTrue(export.output.hasPrefix("\(state): 26 tensors"), export.output)
        // torchvision's key names (the block's shortcut is `downsample`), in model order.
        let keys = try runJob([python, "-c", "import numpy, sys; print(' '.join(numpy.load(sys.argv[1]).files))", state])
        XCTAssertEqual(keys.output.split(separator: " ").prefix(4).joined(separator: " "),
                       "conv1.weight bn1.weight bn1.bias bn1.running_mean")
        XCTAssertTrue(keys.output.contains("layer1.0.downsample.0.weight layer1.0.downsample.1.weight"), keys.output)

        let importing = try runJob([python, scripts + "/from_torch.py", state, back, "--config", source])
        XCTAssertEqual(importing.status, 0, importing.output)
        XCTAssertEqual(try InitFixtures.modelBits(back), try InitFixtures.modelBits(source))
        XCTAssertNoThrow(try Checkpoint.verify(back))
        let a = try Commands.evaluate(config: c, checkpoint: source), b = try Commands.evaluate(config: c, checkpoint: back)
        XCTAssertEqual(a.loss, b.loss)
        XCTAssertEqual(a.accuracy, b.accuracy)

        // The imported file starts a new run: its step-0 model is the source's.
        let run = InitFixtures.folder(self)
        c.train.maxSteps = 0
        try Commands.train(config: c, options: TrainOptions(runDir: run, initFrom: back, echo: false))
        XCTAssertEqual(try InitFixtures.modelBits(run + "/checkpoints/step-00000000.h5"), try InitFixtures.modelBits(source))
        let e = try Commands.evaluate(config: c, checkpoint: run + "/checkpoints/step-00000000.h5")
        XCTAssertEqual(e.loss, a.loss)
        XCTAssertEqual(e.accuracy, a.accuracy)

        // A state_dict of another model is one error line.
        let wrong = try runJob([python, scripts + "/from_torch.py", state, dir + "/wrong.h5", "--config", repositoryRoot + "/configs/smoke.yaml"])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertEqual(wrong.output.split(separator: "\n").count, 1, wrong.output)
        XCTAssertTrue(wrong.output.hasPrefix("from_torch.py: error: \(state): key 'bn1.weight' is not a tensor of the config's model"), wrong.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/wrong.h5"))
    }

    let scripts = repositoryRoot + "/scripts"

    /// Debian's python3 where it has the modules (what `make deps` installs), else the first
    /// python3 on PATH that has them; skips the test otherwise.
    func pythonWithModules() throws -> String {
        for python in ["/usr/bin/python3", "python3"] {
            if (try? runJob([python, "-c", "import numpy, h5py, yaml"], timeout: 60))?.status == 0 { return python }
        }
        throw XCTSkip("python3 with numpy, h5py and yaml is not available")
    }
}
