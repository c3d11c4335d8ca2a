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
    /// `--init`: a new run whose model starts from this file's tensors (`InitialWeights`).
    package var initFrom: String?
    /// This process's role in an MPMD launch (nil: by rank, `cluster.trusted`).
    package var role: Role?
    /// Ranks other than 0 log to rank-N.log.
    package var rankLogs = false
    /// The resolved config and other details on the console too.
    package var verbose = false
    /// Echo log lines to standard output (tests turn it off).
    package var echo = true
    /// Start over in a run folder that holds an earlier run (`--force`), clearing it.
    package var force = false
    /// Misbehaviour of untrusted ranks, by world rank (`--inject-fault`, tests and demos); in
    /// one process the untrusted side is rank 1.
    package var faults: [Int: Fault] = [:]
    /// Message-level misbehaviour of untrusted ranks, by world rank (under MPI only).
    package var wireFaults: [Int: WireFault] = [:]

    package init(runDir: String? = nil, resume: String? = nil, initFrom: String? = nil, role: Role? = nil, rankLogs: Bool = false,
                 verbose: Bool = false, echo: Bool = true, force: Bool = false, faults: [Int: Fault] = [:]) {
        self.runDir = runDir; self.resume = resume; self.initFrom = initFrom; self.role = role; self.rankLogs = rankLogs
        self.verbose = verbose; self.echo = echo; self.force = force; self.faults = faults
    }

    /// The run folder's path for `config`.
    package func folder(_ config: Config) -> String { runDir ?? "runs/\(config.name)" }
}

/// The start of a training run, the same in one process and on every trusted rank of an MPI
/// job. Nothing in the run folder is written until the config and any resume are valid:
///
/// 1. `claim` (rank 0): a folder that holds an earlier run is refused unless resuming or
///    `--force` (which clears it);
/// 2. `checkpoint`: the one to resume from (`auto`: the newest that verifies, skipping a
///    damaged latest one);
/// 3. the caller builds the trainer and `resume`s it, which checks the checkpoint against
///    the config, or `initialize`s its model (`--init`);
/// 4. `openFolder` writes the resolved config, keeps metrics.jsonl up to the resumed step and
///    says the header line.
package enum RunStart {
    /// Refuses to start a new run over an earlier one: a run folder is never clobbered.
    package static func claim(_ config: Config, _ options: TrainOptions) throws {
        let path = options.folder(config)
        if options.initFrom != nil && options.resume != nil {
            throw UsageError("--init starts a new run from a model's tensors and --resume continues a run: give one of them")
        }
        if options.force {
            guard options.resume == nil else { throw UsageError("--force starts over and --resume continues: give one of them") }
            try RunFolder.clear(path)
            return
        }
        let earlier = RunFolder.earlierRun(at: path)
        guard options.resume == nil, !earlier.isEmpty else { return }
        throw UsageError("run folder \(path) holds an earlier run (\(earlier.joined(separator: ", "))): continue it with --resume auto, start over with --force, or choose another --run-dir")
    }

    /// The checkpoint `--resume` names (`auto`: the newest in the run folder that verifies),
    /// and lines to say about it (damaged ones skipped, or none found). Reads, never writes.
    package static func checkpoint(_ config: Config, _ options: TrainOptions) throws -> (path: String?, notes: [String]) {
        guard let resume = options.resume else { return (nil, []) }
        guard resume == "auto" else { return (resume, []) }
        let folder = options.folder(config) + "/checkpoints"
        let (path, skipped) = CheckpointStore(folder: folder, keep: config.train.keep).newestValid()
        var notes = skipped.map { "resume auto: skipped \($0)" }
        if path == nil { notes.append("resume auto: no usable checkpoint in \(folder); starting from step 0") }
        return (path, notes)
    }

    /// Loads `checkpoint` into `trainer` (checking it against the config) and returns the lines
    /// to say: where the run continues, and the notes of accepted config differences.
    package static func resume(_ trainer: Trainer, from checkpoint: String, world: WorldInfo) throws -> [String] {
        let notes = try Checkpoint.load(checkpoint, into: trainer)
        return ["resumed from \(checkpoint) at step \(trainer.position.step); " +
                (try Checkpoint.layoutNote(checkpoint, world, basis: trainer.config.asym.basis))] + notes.map { "note: \($0)" }
    }

    /// `--init`: loads the file's tensors into the trainer's model (before any step, so the
    /// optimizer state and the position stay fresh). Returns the lines to say and what the
    /// trusted ranks compare to be sure they start alike: the tensor count and a hash of the
    /// tensors' crc32s, each exact in a Double (`[0, 0, 0]` without `--init`).
    package static func initialize(_ trainer: Trainer, _ options: TrainOptions) throws -> (lines: [String], fingerprint: [Double]) {
        guard let path = options.initFrom else { return ([], [0, 0, 0]) }
        let crcs = try InitialWeights.load(path, into: trainer.model)
        // FNV-1a over the crc32s, split into two 32-bit halves.
        let hash = crcs.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64(UInt32(truncatingIfNeeded: $1))) &* 0x100_0000_01b3 }
        return (["initialized from \(path): \(crcs.count) model tensors (parameters, batch-norm statistics); step 0, fresh optimizer state"],
                [Double(crcs.count), Double(hash >> 32), Double(hash & 0xffff_ffff)])
    }

    /// Opens the run folder (`writer`: rank 0 or the only process; other ranks get a view that
    /// writes nothing but their own `rank-N.log` where asked), saves the resolved config,
    /// says `header` and then `lines`. `resumedStep`: see `RunFolder.init(path:resumedStep:)`.
    package static func openFolder(_ config: Config, _ options: TrainOptions, writer: Bool, rankLog: String? = nil,
                                   resumedStep: Int?, lines: [String], header: (_ folder: String) -> String) throws -> RunFolder {
        let path = options.folder(config)
        let run = writer ? try RunFolder(path: path, resumedStep: resumedStep) : try RunFolder(readOnly: path, rankLog: rankLog)
        if writer { run.echo = options.echo }
        run.verbose = options.verbose
        try run.writeConfig(config)
        run.say(header(path) + "; " + config.protection)
        run.detail("resolved config:\n" + config.yaml)
        for line in lines { run.say(line) }
        return run
    }
}
