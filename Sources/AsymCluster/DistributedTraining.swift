import AsymModel
import AsymKernels
import AsymTrain
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

    package init(runDir: String? = nil, resume: String? = nil, role: Role? = nil, rankLogs: Bool = false, verbose: Bool = false) {
        self.runDir = runDir; self.resume = resume; self.role = role; self.rankLogs = rankLogs; self.verbose = verbose
    }
}

/// `asymml train` under mpirun: roles, data-parallel trusted ranks, untrusted servers.
package enum DistributedTraining {
    /// Runs this rank's part of the job. Any error on any rank ends the whole job.
    package static func train(config: Config, options: TrainOptions) {
        let world: Communicator
        do { world = try Communicator.world() } catch {
            FileHandle.standardError.write("asymml: error: cannot start MPI: \(error)\n".data(using: .utf8)!)
            exit(1)
        }
        do {
            try run(world, config: config, options: options)
        } catch {
            failJob(world, "\(error)")
        }
        Communicator.finalize()
    }

    static func run(_ world: Communicator, config: Config, options: TrainOptions) throws {
        let role = options.role, resume = options.resume
        // Roles first, before any heavy work: a world that does not fit ends here.
        // Every rank takes part in the gather, so that a launch that gave --role to some
        // ranks only gets an error instead of ranks waiting in different collectives.
        let codes = try world.allGather(role.map { $0 == .trusted ? 1 : 2 } ?? 0)
        let roles: [Role]
        if codes.contains(0) && codes.contains(where: { $0 != 0 }) {
            throw ConfigError("--role: give it to every rank of an MPMD launch or to none (ranks \(codes.indices.filter { codes[$0] == 0 }) have no role)")
        } else if role != nil {
            roles = codes.map { $0 == 1 ? .trusted : .untrusted }
        } else {
            // Plain mode makes every rank a worker, so cluster.trusted does not apply there.
            let trusted = config.asym.mode == .plain ? world.size : config.cluster.trusted
            roles = try ClusterLayout.rolesByRange(size: world.size, trusted: trusted)
        }
        let layout = try ClusterLayout(roles: roles, mode: config.asym.mode)
        let isTrusted = layout.trusted.contains(world.rank)
        let trustedComm = try world.split(color: isTrusted ? 0 : 1)
        let gradientComm = config.asym.mode == .asym ? world : trustedComm
        let T = layout.trusted.count
        guard config.data.batchSize % T == 0 else {
            throw ConfigError("data.batch_size: \(config.data.batchSize) does not divide among \(T) trusted ranks")
        }
        if config.asym.mode == .asym {
            let widest = (0..<T).map { layout.group(ofTrusted: $0).count }.max()!
            guard config.data.batchSize / T >= widest else {
                throw ConfigError("data.batch_size: \(config.data.batchSize / T) samples per trusted rank cannot be split among \(widest) untrusted ranks")
            }
        }
        configureThreads(config)

        let folder = options.runDir ?? "runs/\(config.name)"
        let worldInfo = WorldInfo(trusted: T, untrusted: layout.untrusted.count, mode: config.asym.mode)
        let run = world.rank == 0 ? try RunFolder(path: folder)
            : try RunFolder(readOnly: folder, rankLog: options.rankLogs ? "rank-\(world.rank).log" : nil)
        try run.writeConfig(config)
        try world.barrier()  // the folder exists before any rank looks for checkpoints in it
        run.verbose = options.verbose
        run.say("asymml train: \(config.name) on \(layout.summary), \(kernelThreads) threads per rank; config \(folder)/config.yaml")
        run.detail("resolved config:\n" + config.yaml)
        let checkpoint = try resume.flatMap { r -> String? in
            r == "auto" ? try CheckpointStore(folder: run.checkpointsPath, keep: config.train.keep).latest() : r
        }
        if resume != nil && checkpoint == nil { run.say("resume auto: no checkpoint in \(run.checkpointsPath); starting from step 0") }

        if isTrusted {
            let session = TrustedSession(world: world, trustedComm: trustedComm, gradientComm: gradientComm, layout: layout)
            let trainer = try Trainer(config: config, collective: session,
                                      executor: config.asym.mode == .asym ? session : nil)
            if let checkpoint {
                let notes = try Checkpoint.load(checkpoint, into: trainer)
                session.resume(atStep: trainer.position.step)
                try agreeOnStep(world, trainer.position.step)
                run.say("resumed from \(checkpoint) at step \(trainer.position.step); \(try Checkpoint.layoutNote(checkpoint, worldInfo, basis: config.asym.basis))")
                for n in notes { run.say("note: \(n)") }
            } else {
                try agreeOnStep(world, 0)
            }
            let loop = TrainingLoop(trainer: trainer, run: run, world: worldInfo)
            try loop.fit()
            run.say(String(format: "bytes to untrusted %.1f MB, from untrusted %.1f MB (this rank)",
                           Double(session.bytesSent) / 1e6, Double(session.bytesReceived) / 1e6))
            try session.shutdown()
        } else {
            // An untrusted rank: the replicated model, never the data.
            let model = try Model(config.model)
            model.initialize(seed: UInt64(truncatingIfNeeded: config.seed), scheme: config.model.initScheme)
            var start = 0
            if let checkpoint { start = try Checkpoint.load(checkpoint, model: model, config: config).0.step }
            try agreeOnStep(world, start)
            if config.asym.mode == .asym {
                try UntrustedServer(world: world, gradientComm: gradientComm, layout: layout, model: model, config: config,
                                    startStep: start).run()
            } else {
                try idleUntilShutdown(world, layout: layout)
            }
        }
        // Enclaves are small: report each role's peak memory.
        let peaks = try world.allGather(Int32(peakMemoryMB()))
        let trustedPeak = layout.trusted.map { peaks[$0] }.max() ?? 0
        let untrustedPeak = layout.untrusted.map { peaks[$0] }.max()
        run.say("peak memory: trusted ranks \(trustedPeak) MB" + (untrustedPeak.map { ", untrusted ranks \($0) MB" } ?? ""))
    }

    /// This process's peak resident memory in MB.
    static func peakMemoryMB() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss / 1024
    }

    /// Every rank must start from the same step.
    static func agreeOnStep(_ world: Communicator, _ step: Int) throws {
        guard try world.allAgree([Double(step)]) else {
            throw ProtocolError(description: "ranks disagree on the step to resume from (rank \(world.rank) has \(step)); is the run folder shared by all ranks?")
        }
    }

    /// tee-only mode: untrusted ranks compute nothing; they wait for the end of the job.
    static func idleUntilShutdown(_ world: Communicator, layout: ClusterLayout) throws {
        let (trusted, _) = layout.server(ofUntrusted: world.rank)
        let header = UnsafeMutableRawPointer.allocate(byteCount: WireHeader.size, alignment: 8)
        defer { header.deallocate() }
        var requests = [try world.receiveBytes(header, count: WireHeader.size, from: trusted, tag: wireTag)]
        try world.waitAll(&requests)
        let h = WireHeader(decoding: header)
        guard h.magic == WireHeader.magic, h.kind == MessageKind.shutdown.rawValue else {
            throw ProtocolError(description: "wire protocol: rank \(world.rank) (idle untrusted) expected shutdown from rank \(trusted), got [\(h)]")
        }
    }

    /// Threads per rank: `train.threads`, or the machine's cores shared among its ranks.
    static func configureThreads(_ config: Config) {
        if config.train.threads > 0 { setThreads(config.train.threads); return }
        let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
        setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
    }
}
