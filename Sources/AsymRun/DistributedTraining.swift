import AsymModel
import AsymSplit
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
    /// Misbehaviour of untrusted ranks, by world rank (`--inject-fault`, tests and demos).
    package var faults: [Int: Fault] = [:]

    package init(runDir: String? = nil, resume: String? = nil, role: Role? = nil, rankLogs: Bool = false, verbose: Bool = false,
                 faults: [Int: Fault] = [:]) {
        self.runDir = runDir; self.resume = resume; self.role = role; self.rankLogs = rankLogs; self.verbose = verbose
        self.faults = faults
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
        world.timeout = config.cluster.timeoutSeconds
        // Roles first, before any heavy work: a world that does not fit ends here.
        // Every rank takes part in the gather, so that a launch that gave --role to some
        // ranks only gets an error instead of ranks waiting in different collectives.
        let codes = try world.allGather(options.role.map { $0 == .trusted ? 1 : 2 } ?? 0)
        let roles: [Role]
        if codes.contains(0) && codes.contains(where: { $0 != 0 }) {
            throw ConfigError("--role: give it to every rank of an MPMD launch or to none (ranks \(codes.indices.filter { codes[$0] == 0 }) have no role)")
        } else if options.role != nil {
            roles = codes.map { $0 == 1 ? .trusted : .untrusted }
        } else {
            roles = try ClusterLayout.rolesByRange(size: world.size, trusted: config.cluster.trusted)
        }
        let layout = try ClusterLayout(roles: roles, mode: config.asym.mode)
        let isTrusted = layout.trusted.contains(world.rank)
        let trustedComm = try world.split(color: isTrusted ? 0 : 1)
        trustedComm.timeout = world.timeout
        if config.asym.mode == .asym {
            let T = layout.trusted.count
            let widest = (0..<T).map { layout.group(ofTrusted: $0).count }.max()!
            guard config.data.batchSize / T >= widest else {
                throw ConfigError("data.batch_size: \(config.data.batchSize / T) samples per trusted rank cannot be split among \(widest) untrusted ranks")
            }
            let narrowest = (0..<T).map { layout.group(ofTrusted: $0).count }.min()!
            if config.asym.maskGroup > 0 && config.asym.maskSpread && narrowest < 3 {
                throw ConfigError("asym.mask.spread: needs at least 3 untrusted ranks per trusted rank, but a trusted rank here has \(narrowest) (\(layout.summary)): each group of k samples crosses as 3k combinations with k noise vectors per side, and a rank that got more than k of them could combine them free of noise; start more untrusted ranks (launch/local.sh -u \(3 * T)) or set asym.mask.spread=false")
            }
        }
        configureThreads(config)
        var audit: AuditLog?
        if isTrusted {
            try runTrusted(world, trustedComm, layout, config: config, options: options)
        } else {
            audit = config.asym.audit ? try AuditLog(folder: config.asym.auditDir, rank: world.rank) : nil
            audit?.recordCollective("roles", count: world.size)
            let server = try UntrustedServer(world: world, layout: layout, config: config, audit: audit)
            server.worker.fault = options.faults[world.rank]
            try server.run()
            // Done (or excluded): wait for the job to end, however long the trusted side trains on.
            world.timeout = .infinity
        }
        // Enclaves are small: report each role's peak memory (rank 0 prints it).
        let peaks = try world.allGather(Int32(peakMemoryMB()))
        audit?.recordCollective("peak memory", count: world.size)
        guard world.rank == 0 else { return }
        let trustedPeak = layout.trusted.map { peaks[$0] }.max() ?? 0
        let untrustedPeak = layout.untrusted.map { peaks[$0] }.max()
        print("peak memory: trusted ranks \(trustedPeak) MB" + (untrustedPeak.map { ", untrusted ranks \($0) MB" } ?? ""))
    }

    /// A trusted rank: the data shard, the whole model, the run folder (rank 0 writes it),
    /// checkpoints, and the untrusted group's state, which it sends over MPI.
    static func runTrusted(_ world: Communicator, _ trustedComm: Communicator, _ layout: ClusterLayout,
                           config: Config, options: TrainOptions) throws {
        let folder = options.runDir ?? "runs/\(config.name)"
        let T = layout.trusted.count
        let worldInfo = WorldInfo(trusted: T, untrusted: layout.untrusted.count, mode: config.asym.mode)
        let run = world.rank == 0 ? try RunFolder(path: folder)
            : try RunFolder(readOnly: folder, rankLog: options.rankLogs ? "rank-\(world.rank).log" : nil)
        run.verbose = options.verbose
        try run.writeConfig(config)
        try trustedComm.barrier()  // the folder exists before any rank looks for checkpoints in it
        run.say("asymml train: \(config.name) on \(layout.summary), \(kernelThreads) threads per rank; config \(folder)/config.yaml")
        run.detail("resolved config:\n" + config.yaml)
        let checkpoint = try options.resume.flatMap { r -> String? in
            r == "auto" ? try CheckpointStore(folder: run.checkpointsPath, keep: config.train.keep).latest() : r
        }
        if options.resume != nil && checkpoint == nil { run.say("resume auto: no checkpoint in \(run.checkpointsPath); starting from step 0") }

        let channel = config.cluster.encrypt ? try SecureChannel(keyFile: config.cluster.keyFile, rank: trustedComm.rank) : nil
        let session = TrustedSession(world: world, trustedComm: trustedComm, layout: layout, channel: channel)
        if config.asym.audit && config.asym.maskGroup > 0 && config.asym.maskSpread {
            session.placementAudit = try AuditLog(folder: config.asym.auditDir, rank: world.rank, name: "placement")
        }
        let trainer = try Trainer(config: config, collective: session, executor: config.asym.mode == .asym ? session : nil)
        trainer.model.residualsLeave()  // sent away: the session keeps no reference to them
        session.arena = trainer.model.arena
        session.currentStep = { [unowned trainer] in trainer.position.step }
        if let checkpoint {
            let notes = try Checkpoint.load(checkpoint, into: trainer)
            run.say("resumed from \(checkpoint) at step \(trainer.position.step); \(try Checkpoint.layoutNote(checkpoint, worldInfo, basis: config.asym.basis))")
            for n in notes { run.say("note: \(n)") }
        }
        guard try trustedComm.allAgree([Double(trainer.position.step)]) else {
            throw ProtocolError(description: "trusted ranks disagree on the step to resume from (rank \(world.rank) has \(trainer.position.step)); is the run folder shared by all trusted ranks?")
        }
        // The untrusted group gets its state from here, never from the run folder.
        try trainer.untrusted?.publishWeights()
        try TrainingLoop(trainer: trainer, run: run, world: worldInfo).fit()
        if config.asym.mode == .asym {
            run.say(String(format: "bytes to untrusted %.1f MB, from untrusted %.1f MB (this rank)",
                           Double(session.bytesSent) / 1e6, Double(session.bytesReceived) / 1e6))
        }
        try session.shutdown()
    }

    /// This process's peak resident memory in MB.
    static func peakMemoryMB() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss / 1024
    }

    /// Threads per rank: `train.threads`, or the machine's cores shared among its ranks.
    static func configureThreads(_ config: Config) {
        if config.train.threads > 0 { setThreads(config.train.threads); return }
        let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
        setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
    }
}
