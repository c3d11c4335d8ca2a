import AsymModel
import AsymTrain
import AsymHDF5
import AsymKernels
import AsymSplit
import Foundation

/// The work behind each CLI command, kept out of the executable so tests can call it.
package enum Commands {
    /// `asymml train` in one process (the untrusted half of `asym` mode runs in-process):
    /// returns the final evaluation.
    @discardableResult
    package static func train(config: Config, options: TrainOptions) throws -> Evaluation? {
        configureThreads(config)
        let run = try RunStart.openFolder(config, options, writer: true) {
            "asymml train: \(config.name), mode \(config.asym.mode), one process, \(kernelThreads) threads; config \($0)/config.yaml"
        }
        let local = LocalUntrusted()
        local.worker.fault = options.faults[1]
        let trainer = try Trainer(config: config, executor: local)
        let loop = TrainingLoop(trainer: trainer, run: run)
        if let checkpoint = try RunStart.checkpoint(options, run, keep: config.train.keep) {
            try RunStart.resume(trainer, from: checkpoint, run, world: loop.world)
        }
        return try loop.fit()
    }

    /// `asymml evaluate`: the test-set loss and accuracy of a checkpoint.
    package static func evaluate(config: Config, checkpoint: String) throws -> Evaluation {
        configureThreads(config)
        let trainer = try Trainer(config: config)
        try Checkpoint.load(checkpoint, into: trainer, for: .evaluate)
        return try trainer.evaluate(trainer.data.test)
    }

    /// `asymml inspect`: a human-readable listing of a checkpoint.
    package static func inspect(path: String) throws -> String {
        let f: HDF5File
        do { f = try HDF5File.open(path: path) } catch { throw CheckpointError("\(error)") }
        let h = try Checkpoint.header(f)
        var lines = ["\(path)", "  step \(h.step), epoch \(h.epoch), samples seen \(h.samplesSeen)",
                     "  world \(h.world)", "  software \(h.softwareVersion)"]
        if let c = try? Config.parse(yaml: h.config) {
            lines.append("  config: name \(c.name), dataset \(c.data.dataset), batch \(c.data.batchSize), " +
                         "\(c.model.layers.count) layers, input \(c.model.input), sgd lr \(c.optimizer.lr) " +
                         "momentum \(c.optimizer.momentum), schedule \(c.optimizer.schedule.type.rawValue), " +
                         "epochs \(c.train.epochs), mode \(c.asym.mode.rawValue)")
        }
        func walk(_ group: String) throws {
            for child in try f.listChildren(group) {
                let p = group == "/" ? "/\(child)" : "\(group)/\(child)"
                if try f.kind(of: p) == .group {
                    try walk(p)
                    continue
                }
                let shape = try f.datasetShape(p)
                let crc = try f.int64Attribute("crc32", at: p)
                lines.append("  \(p.padding(toLength: 44, withPad: " ", startingAt: 0)) \(shape)  crc32 \(String(format: "%08x", crc))")
            }
        }
        do { try walk("/") } catch { throw CheckpointError("\(error)") }
        return lines.joined(separator: "\n")
    }
}
