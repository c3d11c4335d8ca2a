import AsymModel
import AsymKernels
import AsymIntegrity
import AsymSplit
import AsymPrivacy
import Foundation

/// The command-level training driver: run folder, logging, evaluation and checkpoints around
/// `Trainer.step()`.
package struct TrainingLoop {
    package let trainer: Trainer
    package let run: RunFolder
    /// Who trains, as recorded in checkpoints.
    package let world: WorldInfo

    package init(trainer: Trainer, run: RunFolder, world: WorldInfo? = nil) {
        self.trainer = trainer
        self.run = run
        trainer.log = { [run] in run.say($0) }
        self.world = world ?? WorldInfo(trusted: 1, untrusted: trainer.untrusted == nil ? 0 : 1, mode: trainer.config.asym.mode)
    }

    /// Trains to the end of the configured epochs (or `train.max_steps`), evaluating at the
    /// end of each epoch and checkpointing as configured. Returns the final evaluation.
    @discardableResult
    package func fit() throws -> Evaluation? {
        let c = trainer.config
        let total = trainer.totalSteps
        let batch = c.data.batchSize
        let perEpoch = trainer.order.batchesPerEpoch
        run.say(trainer.model.summary)
        if c.asym.mode == .asym && c.asym.noiseStd > 0 {
            let (epsilon, delta) = ResidualNoiseExecutor.privacy(std: c.asym.noiseStd)
            run.say(String(format: "asym.residual_noise: residuals are clipped to norm %g and noised (std %g x clip): NOT exact, the model differs from plain training; per release epsilon %.2f at delta %g (it composes over layers and steps)",
                           c.asym.noiseClip, c.asym.noiseStd, epsilon, delta))
        }
        run.say("data: \(trainer.data.train.count) train / \(trainer.data.test.count) test samples, " +
                "\(perEpoch) steps/epoch, \(total) steps")
        let started = Date(), startStep = trainer.position.step
        let bar = ProgressBar(total: total, enabled: run.echo && ProgressBar.onTerminal)
        var window = Window(), epochWindow = Window()
        var last: Evaluation?
        if startStep >= total && startStep > 0 {
            run.say("the run is already at step \(startStep) of \(total): nothing left to train (raise train.epochs or train.max_steps to go on)")
        }
        while trainer.position.step < total {
            let (loss, _) = try trainer.step()
            let step = trainer.position.step
            guard loss.isFinite else {
                throw TrainingError("training diverged at step \(step): the loss is \(loss); lower optimizer.lr")
            }
            let trusted = trainer.lastStepSeconds - trainer.lastUntrustedSeconds
            window.add(loss: loss, trusted: trusted, untrusted: trainer.lastUntrustedSeconds, load: trainer.lastUntrustedLoad)
            epochWindow.add(loss: loss, trusted: trusted, untrusted: trainer.lastUntrustedSeconds)
            let asym = trainer.untrusted != nil
            bar.update(step: step, startStep: startStep, loss: window.loss, samplesPerSecond: window.rate(batch),
                       trustedMs: asym ? 1000 * window.trusted : nil, untrustedMs: asym ? 1000 * window.untrusted : nil)
            if step % c.train.logEvery == 0 || step == total {
                bar.clear()
                logTraining(step: step, window: window, batch: batch)
                window = Window()
            }
            let epochDone = step % perEpoch == 0
            if (c.train.evalEvery > 0 && step % c.train.evalEvery == 0) || (c.train.evalEvery == 0 && epochDone) || step == total {
                bar.clear()
                last = try evaluateAndRecord()
            }
            if epochDone || step == total {
                bar.clear()
                // A run that train.max_steps ends inside an epoch says where it stopped.
                let which = epochDone ? String(format: "epoch %d/%d done", step / perEpoch, c.train.epochs)
                    : String(format: "stopped at epoch %.2f of %d (train.max_steps %d)", Double(step) / Double(perEpoch),
                             c.train.epochs, total)
                run.say(String(format: "%@: train loss %.4f, %.0f samples/s, %@%@", which, epochWindow.loss,
                               epochWindow.rate(batch), ProgressBar.clock(epochWindow.seconds),
                               last.map { String(format: ", test accuracy %.2f%%", 100 * $0.accuracy) } ?? ""))
                epochWindow = Window()
            }
            let scheduled = (c.train.checkpointEvery > 0 && step % c.train.checkpointEvery == 0)
                || (c.train.checkpointEpochs && epochDone)
            if scheduled && step < total {
                bar.clear()
                try saveCheckpoint()
            }
            if step < total, let signal = trainer.stopRequested {
                bar.clear()
                let path = try saveCheckpoint()
                run.say("\(Interruption.name(signal)): stopped after step \(step) of \(total)" +
                        (path.map { "; checkpoint \($0) written, continue with --resume auto" } ?? ""))
                throw TrainingInterrupted(step: step, checkpoint: path)
            }
        }
        try saveCheckpoint()
        let seconds = Date().timeIntervalSince(started)
        var summary = String(format: "done: %d steps in %@", total - startStep, ProgressBar.clock(seconds))
        if let last { summary += String(format: "; test accuracy %.2f%%, test loss %.4f", 100 * last.accuracy, last.loss) }
        if trainer.untrusted != nil {
            summary += String(format: "; %.1f MB to the untrusted side per step, %.1f MB back", Double(trainer.bytesToUntrustedPerStep) / 1e6,
                              Double(trainer.bytesFromUntrustedPerStep) / 1e6)
        }
        run.say(summary)
        let headroom = trainer.integrityHeadroom
        if !headroom.isEmpty {
            run.say("integrity checks, largest discrepancy / allowed (over 1 fails): "
                    + IntegrityCheck.allCases.compactMap { c in headroom[c].map { String(format: "%@ %.3f", c.rawValue, $0) } }
                        .joined(separator: ", "))
        }
        return last
    }

    /// Running sums over the steps since the last log line (or epoch).
    struct Window {
        var steps = 0, lossSum = 0.0, trustedSum = 0.0, untrustedSum = 0.0
        /// The untrusted ranks' own compute and idle seconds, summed, when they report them.
        var load: (compute: Double, idle: Double)?
        let start = Date()
        mutating func add(loss: Double, trusted: Double, untrusted: Double, load stepLoad: (compute: Double, idle: Double)? = nil) {
            steps += 1; lossSum += loss; trustedSum += trusted; untrustedSum += untrusted
            if let stepLoad { load = ((load?.compute ?? 0) + stepLoad.compute, (load?.idle ?? 0) + stepLoad.idle) }
        }
        var n: Double { Double(max(steps, 1)) }
        var loss: Double { lossSum / n }
        var trusted: Double { trustedSum / n }
        var untrusted: Double { untrustedSum / n }
        var seconds: Double { Date().timeIntervalSince(start) }
        func rate(_ batch: Int) -> Double { Double(steps * batch) / max(seconds, 1e-9) }
    }

    /// One training line on the console and in metrics.jsonl.
    func logTraining(step: Int, window: Window, batch: Int) {
        let lr = trainer.optimizer.learningRate(step: step - 1)
        let epoch = Double(step) / Double(trainer.order.batchesPerEpoch)
        var line = String(format: "step %6d/%d  epoch %5.2f  loss %.4f  lr %.5f  %6.0f samples/s",
                          step, trainer.totalSteps, epoch, window.loss, lr, window.rate(batch))
        var fields: [(String, JSONValue)] = [
            ("step", .int(step)), ("epoch", .number(epoch)), ("loss", .number(window.loss)),
            ("lr", .number(lr)), ("samples_per_s", .number(window.rate(batch))),
        ]
        if trainer.untrusted != nil {
            // Per step: the trusted rank's own compute, and its wait for untrusted results.
            line += String(format: "  trusted %.0f ms  waiting on untrusted %.0f ms", 1000 * window.trusted, 1000 * window.untrusted)
            fields += [("trusted_s", .number(window.trusted)), ("untrusted_s", .number(window.untrusted)),
                       ("bytes_to_untrusted", .int(trainer.bytesToUntrustedPerStep)),
                       ("bytes_from_untrusted", .int(trainer.bytesFromUntrustedPerStep)),
                       ("residual_energy", .object(trainer.residualEnergies.map { ($0.0, .number($0.1)) }))]
        }
        if let load = window.load {
            // The untrusted rank's own busy and idle time per step (the slowest group member's):
            // busy can exceed the trusted rank's wait, as it overlaps the trusted compute.
            line += String(format: " (untrusted rank busy %.0f ms, idle %.0f ms, overlapping the trusted compute)",
                           1000 * load.compute / window.n, 1000 * load.idle / window.n)
            fields += [("untrusted_compute_s", .number(load.compute / window.n)), ("untrusted_idle_s", .number(load.idle / window.n))]
        }
        run.say(line)
        run.record(fields)
    }

    func evaluateAndRecord() throws -> Evaluation {
        try trainer.synchronizeReplicas()
        let started = Date()
        let e = try trainer.evaluate(trainer.data.test)
        let rate = Double(e.samples) / max(Date().timeIntervalSince(started), 1e-9)
        let step = trainer.position.step
        let epoch = Double(step) / Double(trainer.order.batchesPerEpoch)
        run.say(String(format: "eval  step %6d  epoch %5.2f  test loss %.4f  test accuracy %.2f%%  %6.0f samples/s",
                       step, epoch, e.loss, 100 * e.accuracy, rate))
        run.record(["step": .int(step), "epoch": .number(epoch), "test_loss": .number(e.loss),
                    "test_accuracy": .number(e.accuracy), "test_samples_per_s": .number(rate)])
        return e
    }

    /// Writes a checkpoint of the current step (rank 0 only; every trusted rank synchronises
    /// its replica first) and returns its path.
    @discardableResult
    func saveCheckpoint() throws -> String? {
        try trainer.synchronizeReplicas()
        guard run.isWriter else { return nil }
        let path = try CheckpointStore(folder: run.checkpointsPath, keep: trainer.config.train.keep)
            .save(trainer, world: world)
        run.say("checkpoint \(path)")
        return path
    }
}
