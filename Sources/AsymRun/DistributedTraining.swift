import AsymModel
import AsymSplit
import AsymKernels
import AsymTrain
import AsymCluster
import Foundation

/// `asymml train` under mpirun: roles, data-parallel trusted ranks, untrusted servers.
package enum DistributedTraining {
    /// Runs this rank's part of the job and returns its exit status: 0, or
    /// `Interruption.exitStatus` when a signal stopped training (after its checkpoint). Any
    /// error on any rank ends the whole job, with one line from the rank that saw it.
    package static func train(config: Config, options: TrainOptions) -> Int32 {
        let world: Communicator
        do { world = try Communicator.world() } catch {
            FileHandle.standardError.write("asymml: error: cannot start MPI: \(error)\n".data(using: .utf8)!)
            exit(1)
        }
        world.timeout = config.cluster.timeoutSeconds
        // The launch's roles and the feature rules give every rank the same answer: a launch
        // that does not fit is said once, by rank 0, and every rank ends without an abort.
        let layout: ClusterLayout
        do { layout = try roles(world, config: config, options: options) } catch {
            if world.rank == 0 { FileHandle.standardError.write("asymml: error: \(error)\n".data(using: .utf8)!) }
            // No rank leaves before rank 0's line is out (mpirun ends the job at the first exit).
            try? world.barrier()
            Communicator.finalize()
            exit(1)
        }
        var status: Int32 = 0
        do {
            status = try run(world, layout, config: config, options: options)
        } catch {
            failJob(world, "\(error)")
        }
        Communicator.finalize()
        return status
    }

    /// Every rank's role, and the launch checked against the feature rules.
    static func roles(_ world: Communicator, config: Config, options: TrainOptions) throws -> ClusterLayout {
        // Roles first, before any heavy work: a world that does not fit ends here.
        // Every rank takes part in the gather, so that a launch that gave --role to some
        // ranks only gets an error instead of ranks waiting in different collectives.
        let codes = try world.allGather(options.role.map { $0 == .trusted ? 1 : 2 } ?? 0)
        let roles: [Role]
        if codes.contains(0) && codes.contains(where: { $0 != 0 }) {
            throw UsageError("--role: give it to every rank of an MPMD launch or to none (ranks \(codes.indices.filter { codes[$0] == 0 }) have no role)")
        } else if options.role != nil {
            roles = codes.map { $0 == 1 ? .trusted : .untrusted }
        } else {
            roles = try ClusterLayout.rolesByRange(size: world.size, trusted: config.cluster.trusted)
        }
        let layout = try ClusterLayout(roles: roles, mode: config.asym.mode)
        try FeatureRules.check(config, launch: LaunchShape(trusted: layout.trusted.count,
                                                           groups: layout.trusted.indices.map { layout.group(ofTrusted: $0).count }))
        return layout
    }

    static func run(_ world: Communicator, _ layout: ClusterLayout, config: Config, options: TrainOptions) throws -> Int32 {
        let isTrusted = layout.trusted.contains(world.rank)
        let trustedComm = try world.split(color: isTrusted ? 0 : 1)
        trustedComm.timeout = world.timeout
        configureThreads(config)
        var audit: AuditLog?
        var interrupted = false
        if isTrusted {
            interrupted = try runTrusted(world, trustedComm, layout, config: config, options: options)
        } else {
            audit = config.asym.audit ? try AuditLog(folder: auditFolder(config, options), rank: world.rank) : nil
            audit?.recordCollective("roles", count: world.size)
            let server = try UntrustedServer(world: world, layout: layout, config: config, audit: audit)
            server.worker.fault = options.faults[world.rank]
            server.wireFault = options.wireFaults[world.rank]
            try server.run()
            // Done (or excluded): wait for the job to end, however long the trusted side trains on.
            world.timeout = .infinity
        }
        // Enclaves are small: report each role's peak memory (rank 0 prints it).
        let peaks = try world.allGather(Int32(peakMemoryMB()))
        audit?.recordCollective("peak memory", count: world.size)
        let status: Int32 = interrupted ? Interruption.exitStatus : 0
        guard world.rank == 0 else { return status }
        let trustedPeak = layout.trusted.map { peaks[$0] }.max() ?? 0
        let untrustedPeak = layout.untrusted.map { peaks[$0] }.max()
        print("peak memory: trusted ranks \(trustedPeak) MB" + (untrustedPeak.map { ", untrusted ranks \($0) MB" } ?? ""))
        return status
    }

    /// Where the audit logs go (`asym.audit`): `asym.audit_dir`, inside the run folder unless
    /// it is an absolute path. Each rank writes its own file there, on its own machine.
    static func auditFolder(_ config: Config, _ options: TrainOptions) -> String {
        config.asym.auditDir.hasPrefix("/") ? config.asym.auditDir : options.folder(config) + "/" + config.asym.auditDir
    }

    /// A trusted rank: the data shard, the whole model, the run folder (rank 0 writes it),
    /// checkpoints, and the untrusted group's state, which it sends over MPI. Returns whether
    /// a signal stopped training (after its checkpoint was written).
    static func runTrusted(_ world: Communicator, _ trustedComm: Communicator, _ layout: ClusterLayout,
                           config: Config, options: TrainOptions) throws -> Bool {
        let worldInfo = WorldInfo(trusted: layout.trusted.count, untrusted: layout.untrusted.count, mode: config.asym.mode)
        if world.rank == 0 { try RunStart.claim(config, options) }
        try trustedComm.barrier()  // a cleared (--force) folder is cleared before any rank looks in it
        let (checkpoint, notes) = try RunStart.checkpoint(config, options)
        let channel = config.cluster.encrypt ? try SecureChannel(keyFile: config.cluster.keyFile, rank: trustedComm.rank) : nil
        let session = TrustedSession(world: world, trustedComm: trustedComm, layout: layout, channel: channel)
        if config.asym.audit && config.asym.maskGroup > 0 && config.asym.maskSpread {
            session.placementAudit = try AuditLog(folder: auditFolder(config, options), rank: world.rank, name: "placement")
        }
        let trainer = try Trainer(config: config, collective: session, executor: config.asym.mode == .asym ? session : nil)
        trainer.messagesLeave()  // sent away: the session keeps no reference to them
        session.arena = trainer.model.arena
        session.currentStep = { [unowned trainer] in trainer.position.step }
        let resumed = try checkpoint.map { try RunStart.resume(trainer, from: $0, world: worldInfo) } ?? []
        guard try trustedComm.allAgree([Double(trainer.position.step)]) else {
            throw ProtocolError("trusted ranks disagree on the step to resume from (rank \(world.rank) has \(trainer.position.step)); is the run folder shared by all trusted ranks?")
        }
        // --init: every trusted rank reads the file itself (as a resume does); the replicas
        // must start identical, so they compare what they loaded before any step.
        let initialized = try RunStart.initialize(trainer, options)
        guard try trustedComm.allAgree(initialized.fingerprint) else {
            throw ProtocolError("trusted ranks loaded different --init tensors (rank \(world.rank): \(options.initFrom ?? "no --init")); give every trusted rank the same file")
        }
        let run = try RunStart.openFolder(config, options, writer: world.rank == 0,
                                          rankLog: options.rankLogs ? "rank-\(world.rank).log" : nil,
                                          resumedStep: checkpoint == nil ? nil : trainer.position.step,
                                          lines: notes + resumed + initialized.lines) {
            "asymml train: \(config.name) on \(layout.summary), \(kernelThreads) threads per rank; config \($0)/config.yaml"
        }
        // The untrusted group gets its state from here, never from the run folder.
        try trainer.untrusted?.publishWeights()
        var interrupted = false
        do {
            try TrainingLoop(trainer: trainer, run: run, world: worldInfo).fit()
        } catch is TrainingInterrupted {
            interrupted = true
        }
        if config.asym.mode == .asym {
            run.say(String(format: "bytes to untrusted %.1f MB, from untrusted %.1f MB (this rank)",
                           Double(session.bytesSent) / 1e6, Double(session.bytesReceived) / 1e6))
        }
        try session.shutdown()
        return interrupted
    }

    /// This process's peak resident memory in MB.
    static func peakMemoryMB() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss / 1024
    }
}
