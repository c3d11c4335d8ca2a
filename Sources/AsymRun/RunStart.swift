import AsymModel
import AsymTrain
import AsymCluster
import AsymSplit
import Foundation

/// How `asymml train` was asked to run, beyond the config.
package struct TrainOptions {
    /// The run folder (default runs/<name>).
    package var runDir: String?
    /// `auto` or a checkpoint path.
    package var resume: String?
    /// This process's role in an MPMD launch (nil: by rank, `cluster.trusted`).
    package var role: Role?
    /// Ranks other than 0 log to rank-N.log.
    package var rankLogs = false
    /// The resolved config and other details on the console too.
    package var verbose = false
    /// Echo log lines to standard output (tests turn it off).
    package var echo = true
    /// Misbehaviour of untrusted ranks, by world rank (`--inject-fault`, tests and demos); in
    /// one process the untrusted side is rank 1.
    package var faults: [Int: Fault] = [:]

    package init(runDir: String? = nil, resume: String? = nil, role: Role? = nil, rankLogs: Bool = false, verbose: Bool = false,
                 echo: Bool = true, faults: [Int: Fault] = [:]) {
        self.runDir = runDir; self.resume = resume; self.role = role; self.rankLogs = rankLogs; self.verbose = verbose
        self.echo = echo; self.faults = faults
    }

    /// The run folder's path for `config`.
    package func folder(_ config: Config) -> String { runDir ?? "runs/\(config.name)" }
}

/// The start of a training run, the same in one process and on every trusted rank of an MPI
/// job: the run folder with the resolved config and the header line, then the checkpoint
/// to resume from, loaded into the trainer.
package enum RunStart {
    /// Opens the run folder (`writer`: rank 0 or the only process; other ranks get a view that
    /// writes nothing but their own `rank-N.log` where asked), saves the resolved config and
    /// says `header`, which names the run and where it runs.
    package static func openFolder(_ config: Config, _ options: TrainOptions, writer: Bool, rankLog: String? = nil,
                                   header: (_ folder: String) -> String) throws -> RunFolder {
        let path = options.folder(config)
        let run = writer ? try RunFolder(path: path) : try RunFolder(readOnly: path, rankLog: rankLog)
        if writer { run.echo = options.echo }
        run.verbose = options.verbose
        try run.writeConfig(config)
        run.say(header(path))
        run.detail("resolved config:\n" + config.yaml)
        return run
    }

    /// The checkpoint `--resume` names (`auto`: the newest in the run folder); nil, and says so,
    /// when `auto` finds none.
    package static func checkpoint(_ options: TrainOptions, _ run: RunFolder, keep: Int) throws -> String? {
        guard let resume = options.resume else { return nil }
        guard resume == "auto" else { return resume }
        let latest = try CheckpointStore(folder: run.checkpointsPath, keep: keep).latest()
        if latest == nil { run.say("resume auto: no checkpoint in \(run.checkpointsPath); starting from step 0") }
        return latest
    }

    /// Loads `checkpoint` into `trainer` and says where the run continues, with the notes of
    /// a layout that differs from the one the checkpoint was written on.
    package static func resume(_ trainer: Trainer, from checkpoint: String, _ run: RunFolder, world: WorldInfo) throws {
        let notes = try Checkpoint.load(checkpoint, into: trainer)
        run.say("resumed from \(checkpoint) at step \(trainer.position.step); " +
                (try Checkpoint.layoutNote(checkpoint, world, basis: trainer.config.asym.basis)))
        for n in notes { run.say("note: \(n)") }
    }
}
