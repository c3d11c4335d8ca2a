import AsymHDF5
import AsymKernels
import AsymModel
import AsymTrain
import Foundation
import XCTest

/// `optimizer.type: adamw` in training and in checkpoints.
final class AdamWTrainingTests: XCTestCase {
    func adamW(_ more: [String] = []) throws -> Config {
        try smokeConfig(["optimizer.type=adamw", "optimizer.momentum=0", "optimizer.lr=0.003",
                         "optimizer.weight_decay=0.01"] + more)
    }

    /// Every AdamW moment of a trainer, flattened, and its step count.
    func adamState(_ t: Trainer) throws -> (moments: [Float], steps: Int) {
        let state = try XCTUnwrap(t.optimizer.adamW)
        return (t.model.parameters.flatMap { state.moments(of: $0).expAvg.array + state.moments(of: $0).expAvgSq.array }, state.steps)
    }

    func testPlainTrainingReducesTheLoss() throws {
        setThreads(1)
        let t = try Trainer(config: try adamW(["train.epochs=3", "optimizer.schedule=cosine"]))
        let (first, last, before, after) = try trainAndMeasure(t, steps: 96, window: 8)
        print("adamw, synthetic: train loss \(first) -> \(last), test accuracy \(before.accuracy) -> \(after.accuracy)")
        XCTAssertLessThan(last, 0.5 * first)
        XCTAssertGreaterThan(after.accuracy, 0.9)
    }

    /// N steps straight equal k steps, a checkpoint, a resume and N - k steps: parameters,
    /// both moments and the step count bit for bit.
    func testSaveAndResumeIsBitExact() throws {
        setThreads(1)
        let c = try adamW(["train.max_steps=24", "train.epochs=2", "optimizer.schedule=cosine"])
        let straight = try Trainer(config: c)
        for _ in 0..<24 { try straight.step() }

        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try Trainer(config: c)
        for _ in 0..<11 { try first.step() }
        let path = try CheckpointStore(folder: folder, keep: 2).save(first, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))

        // The layout: AdamW's moments under each parameter's /optimizer group, and its step.
        let f = try HDF5File.open(path: path)
        XCTAssertEqual(try f.readInt64s("/state/adamw_step").values, [11])
        XCTAssertEqual(try f.readFloats("/optimizer/conv1/weight/exp_avg_sq").shape, [8, 2, 3, 3])
        XCTAssertEqual(try f.readFloats("/optimizer/fc/bias/exp_avg").values,
                       try XCTUnwrap(first.optimizer.adamW).moments(of: first.model.parameters.last!).expAvg.array)
        try f.close()
        XCTAssertEqual(try Checkpoint.verify(path).filter { $0.dataset.hasPrefix("/optimizer/") }.count,
                       2 * first.model.parameters.count)

        let resumed = try Trainer(config: c)
        XCTAssertEqual(try Checkpoint.load(path, into: resumed), [])
        XCTAssertEqual(resumed.position.step, 11)
        XCTAssertEqual(try adamState(resumed).steps, 11)
        for _ in 11..<24 { try resumed.step() }
        XCTAssertEqual(modelValues(resumed), modelValues(straight), "parameters differ from the uninterrupted run")
        let (a, b) = (try adamState(resumed), try adamState(straight))
        XCTAssertEqual(a.steps, 24)
        XCTAssertEqual(a.steps, b.steps)
        XCTAssertEqual(a.moments, b.moments, "moments differ from the uninterrupted run")
        XCTAssertTrue(a.moments.contains { $0 != 0 })
    }

    /// An SGD checkpoint still loads; switching the optimizer on resume starts its state fresh, and says so.
    func testSwitchingOptimizersOnResume() throws {
        setThreads(1)
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let store = CheckpointStore(folder: folder, keep: 5), world = WorldInfo(trusted: 1, untrusted: 0, mode: .plain)
        let sgd = try Trainer(config: try smokeConfig())
        for _ in 0..<3 { try sgd.step() }
        let sgdPath = try store.save(sgd, world: world)

        let sgdAgain = try Trainer(config: try smokeConfig())
        XCTAssertEqual(try Checkpoint.load(sgdPath, into: sgdAgain), [])
        XCTAssertEqual(modelValues(sgdAgain), modelValues(sgd), "an SGD checkpoint restores weights and momentum as before")

        let toAdam = try Trainer(config: try adamW())
        let notes = try Checkpoint.load(sgdPath, into: toAdam)
        XCTAssertEqual(notes.first, "optimizer.type changed from sgd to adamw")
        XCTAssertTrue(notes.contains("the checkpoint holds sgd state but optimizer.type is adamw: adamw starts from fresh state"), "\(notes)")
        XCTAssertEqual(try adamState(toAdam).steps, 0)
        XCTAssertEqual(toAdam.model.parameters.map(\.value.array), sgd.model.parameters.map(\.value.array))
        try toAdam.step()

        let adamPath = try store.save(toAdam, world: world)
        let backToSGD = try Trainer(config: try smokeConfig())
        XCTAssertTrue(try Checkpoint.load(adamPath, into: backToSGD)
            .contains("the checkpoint holds adamw state but optimizer.type is sgd: sgd starts from fresh state"))
        XCTAssertFalse(backToSGD.model.parameters.contains { $0.hasMomentum })
    }
}
