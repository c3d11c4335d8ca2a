import AsymKernels
import Foundation

/// The command-level training driver: run folder, logging, evaluation and checkpoints around
/// `Trainer.step()`.
public struct TrainingLoop {
    public let trainer: Trainer
    public let run: RunFolder
    /// Who trains, as recorded in checkpoints.
    public let world: WorldInfo

    public init(trainer: Trainer, run: RunFolder, world: WorldInfo? = nil) {
        self.trainer = trainer
        self.run = run
        self.world = world ?? WorldInfo(trusted: 1, untrusted: trainer.untrusted == nil ? 0 : 1, mode: trainer.config.asym.mode)
    }

    /// Trains to the end of the configured epochs (or `train.max_steps`), evaluating at the
    /// end of each epoch and checkpointing as configured. Returns the final evaluation.
    @discardableResult
    public func fit() throws -> Evaluation? {
        let c = trainer.config
        let total = trainer.totalSteps
        let batch = c.data.batchSize
        run.say("model \(c.name): \(trainer.model.parameterCount) parameters, " +
                "\(String(format: "%.1f", Double(trainer.model.forwardFlops) / 1e6)) MFLOP/sample forward; " +
                "\(trainer.data.train.count) train / \(trainer.data.test.count) test samples; " +
                "\(trainer.order.batchesPerEpoch) steps/epoch, \(total) steps")
        let started = Date()
        var windowStart = Date(), windowSteps = 0, windowLoss = 0.0
        var windowTrusted = 0.0, windowUntrusted = 0.0
        var last: Evaluation?
        while trainer.position.step < total {
            let (loss, _) = try trainer.step()
            let step = trainer.position.step
            windowSteps += 1
            windowLoss += loss
            windowUntrusted += trainer.lastUntrustedSeconds
            windowTrusted += trainer.lastStepSeconds - trainer.lastUntrustedSeconds
            guard loss.isFinite else {
                throw ConfigError("training diverged at step \(step): the loss is \(loss); lower optimizer.lr")
            }
            let epochDone = step % trainer.order.batchesPerEpoch == 0
            if step % c.train.logEvery == 0 || step == total {
                let seconds = Date().timeIntervalSince(windowStart)
                let rate = Double(windowSteps * batch) / max(seconds, 1e-9)
                let lr = trainer.optimizer.learningRate(step: step - 1)
                let epoch = Double(step) / Double(trainer.order.batchesPerEpoch)
                var line = String(format: "step %6d/%d  epoch %5.2f  loss %.4f  lr %.5f  %6.0f samples/s",
                                  step, total, epoch, windowLoss / Double(windowSteps), lr, rate)
                var fields: [(String, JSONValue)] = [
                    ("step", .int(step)), ("epoch", .number(epoch)), ("loss", .number(windowLoss / Double(windowSteps))),
                    ("lr", .number(lr)), ("samples_per_s", .number(rate)),
                ]
                if trainer.untrusted != nil {
                    let n = Double(windowSteps)
                    line += String(format: "  trusted %.0f ms  untrusted %.0f ms", 1000 * windowTrusted / n, 1000 * windowUntrusted / n)
                    fields += [("trusted_s", .number(windowTrusted / n)), ("untrusted_s", .number(windowUntrusted / n)),
                               ("bytes_to_untrusted", .int(trainer.bytesToUntrustedPerStep)),
                               ("residual_energy", .object(trainer.residualEnergies.map { ($0.0, .number($0.1)) }))]
                }
                run.say(line)
                run.record(fields)
                windowStart = Date(); windowSteps = 0; windowLoss = 0; windowTrusted = 0; windowUntrusted = 0
            }
            if (c.train.evalEvery > 0 && step % c.train.evalEvery == 0) || (c.train.evalEvery == 0 && epochDone) || step == total {
                last = try evaluateAndRecord()
            }
            if c.train.checkpointEvery > 0 && step % c.train.checkpointEvery == 0 && step < total {
                try saveCheckpoint()
            }
        }
        try saveCheckpoint()
        let minutes = Date().timeIntervalSince(started) / 60
        if let last {
            run.say(String(format: "done: %d steps in %.1f min; test accuracy %.2f%%, test loss %.4f",
                           total, minutes, 100 * last.accuracy, last.loss))
        }
        return last
    }

    func evaluateAndRecord() throws -> Evaluation {
        let e = try trainer.evaluate(trainer.data.test)
        let step = trainer.position.step
        let epoch = Double(step) / Double(trainer.order.batchesPerEpoch)
        run.say(String(format: "eval  step %6d  epoch %5.2f  test loss %.4f  test accuracy %.2f%%",
                       step, epoch, e.loss, 100 * e.accuracy))
        run.record(["step": .int(step), "epoch": .number(epoch), "test_loss": .number(e.loss),
                    "test_accuracy": .number(e.accuracy)])
        return e
    }

    func saveCheckpoint() throws {
        guard run.isWriter else { return }
        let path = try CheckpointStore(folder: run.checkpointsPath, keep: trainer.config.train.keep)
            .save(trainer, world: world)
        run.say("checkpoint \(path)")
    }
}
