import AsymModel
import AsymTrain
import AsymHDF5
import AsymKernels
import AsymSplit
import Foundation

/// The work behind each CLI command, kept out of the executable so tests can call it.
package enum Commands {
    /// `asymml train` in one process (the untrusted half of `asym` mode runs in-process):
    /// returns the final evaluation. Throws `TrainingInterrupted` after a signal stopped it
    /// (with its checkpoint written).
    @discardableResult
    package static func train(config: Config, options: TrainOptions) throws -> Evaluation? {
        configureThreads(config)
        try RunStart.claim(config, options)
        let (checkpoint, notes) = try RunStart.checkpoint(config, options)
        let local = LocalUntrusted()
        local.worker.fault = options.faults[1]
        let trainer = try Trainer(config: config, executor: local)
        let world = WorldInfo(trusted: 1, untrusted: config.asym.mode == .asym ? 1 : 0, mode: config.asym.mode)
        let resumed = try checkpoint.map { try RunStart.resume(trainer, from: $0, world: world) } ?? []
        let initialized = try RunStart.initialize(trainer, options)
        let run = try RunStart.openFolder(config, options, writer: true, resumedStep: checkpoint == nil ? nil : trainer.position.step,
                                          lines: notes + resumed + initialized.lines) {
            "asymml train: \(config.name), mode \(config.asym.mode), one process, \(kernelThreads) threads; config \($0)/config.yaml"
        }
        return try TrainingLoop(trainer: trainer, run: run, world: world).fit()
    }

    /// `asymml evaluate`: the test-set loss and accuracy of a checkpoint.
    package static func evaluate(config: Config, checkpoint: String) throws -> Evaluation {
        configureThreads(config)
        let trainer = try Trainer(config: config)
        try Checkpoint.load(checkpoint, into: trainer, for: .evaluate)
        return try trainer.evaluate(trainer.data.test)
    }

    /// The config a checkpoint was trained with (its `config` attribute), with `overrides`.
    package static func storedConfig(_ checkpoint: String, overrides: [String]) throws -> Config {
        let f: HDF5File
        do { f = try HDF5File.open(path: checkpoint) } catch { throw CheckpointError("checkpoint \(checkpoint): cannot open it: \(error)") }
        defer { try? f.close() }
        return try Config.parse(yaml: try Checkpoint.header(f).config, source: "\(checkpoint) config attribute", overrides: overrides)
    }

    /// `asymml inspect`: a human-readable listing of a checkpoint, each dataset's crc32
    /// verified (`evaluate` reports a mismatch the same way). Throws after the listing when a
    /// dataset does not match its crc32.
    package static func inspect(path: String) throws -> String {
        let f: HDF5File
        do { f = try HDF5File.open(path: path) } catch { throw CheckpointError("checkpoint \(path): cannot open it: \(error)") }
        defer { try? f.close() }
        let h = try Checkpoint.header(f)
        var lines = ["\(path)", "  step \(h.step), epoch \(h.epoch), samples seen \(h.samplesSeen)",
                     "  world \(h.world)", "  software \(h.softwareVersion)"]
        if let c = try? Config.parse(yaml: h.config) {
            lines.append("  config: name \(c.name), dataset \(c.data.dataset), batch \(c.data.batchSize), " +
                         "\(c.model.layers.count) layers, input \(c.model.input), \(c.optimizer.type.rawValue) lr \(c.optimizer.lr) " +
                         (c.optimizer.type == .sgd ? "momentum \(c.optimizer.momentum)" : "betas [\(c.optimizer.beta1), \(c.optimizer.beta2)]") +
                         ", schedule \(c.optimizer.schedule.type.rawValue), " +
                         "epochs \(c.train.epochs), mode \(c.asym.mode.rawValue)")
        }
        var failures: [String] = []
        do {
            for p in try Checkpoint.datasets(f) {
                let shape = try f.datasetShape(p)
                let crc = try f.int64Attribute("crc32", at: p)
                var status = "ok"
                do { try f.verifyChecksum(p) } catch {
                    status = "MISMATCH"
                    failures.append("\(error)")
                }
                lines.append("  \(p.padding(toLength: 44, withPad: " ", startingAt: 0)) \(shape)  crc32 \(crc) \(status)")
            }
        } catch { throw CheckpointError("checkpoint \(path): \(error)") }
        guard failures.isEmpty else {
            throw InspectionFailed(listing: lines.joined(separator: "\n"),
                                   description: "checkpoint \(path): \(failures.count) dataset(s) fail their crc32: " + failures.joined(separator: "; "))
        }
        return lines.joined(separator: "\n")
    }
}

/// `inspect` found datasets that do not match their crc32: the listing (printed first) and
/// the one error line.
package struct InspectionFailed: Error, CustomStringConvertible {
    package let listing: String
    package let description: String
}
