import AsymModel
import AsymTools
import ArgumentParser
import AsymAttack
import AsymCluster
import AsymRun
import AsymSplit
import AsymKernels
import AsymTrain
import Foundation

/// One clear line on standard error and a non-zero exit, for every user-facing error.
func fail(_ error: Error) -> Never {
    FileHandle.standardError.write("asymml: error: \(error)\n".data(using: .utf8)!)
    exit(1)
}

struct Asymml: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "asymml",
        abstract: "Train neural networks on private data with trusted and untrusted ranks (AsymML).",
        subcommands: [Train.self, Evaluate.self, Plan.self, Bench.self, Inspect.self, Plot.self, Privacy.self, AttackCommand.self,
                      SelfTest.self])
}

struct ConfigOptions: ParsableArguments {
    @Option(help: "The YAML config file (see configs/).")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config key: --set optimizer.lr=0.1 (repeatable).")
    var overrides: [String] = []

    func load() throws -> Config { try Config.load(path: config, overrides: overrides) }

    /// The same options as command-line arguments (to hand them to a child process).
    var arguments: [String] { ["--config", config] + overrides.flatMap { ["--set", $0] } }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model and write a run folder.")
    @OptionGroup var options: ConfigOptions
    @Option(help: "Continue from a checkpoint: 'auto' (the newest in the run folder) or a path.")
    var resume: String?
    @Option(name: .customLong("init"), help: "Start a new run from the model tensors of a checkpoint or of scripts/from_torch.py's output (step 0, fresh optimizer state).")
    var initFrom: String?
    @Option(name: .customLong("run-dir"), help: "The run folder (default runs/<name>).")
    var runDir: String?
    @Flag(help: "Start over in a run folder that holds an earlier run, deleting its checkpoints, metrics and logs.")
    var force = false
    @Option(help: "This process's role in an MPMD launch: trusted or untrusted (default: by rank, cluster.trusted).")
    var role: Role?
    @Flag(name: .customLong("rank-logs"), help: "Under mpirun, ranks other than 0 log to rank-N.log in the run folder.")
    var rankLogs = false
    @Flag(help: "Also print the resolved config (it always goes to train.log and config.yaml).")
    var verbose = false
    @Option(name: .customLong("inject-fault"),
            help: "Make untrusted rank RANK misbehave from step STEP on (tests, demos): RANK:KIND:STEP, KIND one of flip, scale, zero, replay, grad (wrong results; in one process the untrusted side is rank 1) or, under MPI, a wire fault: magic, version, kind, step, layer, shard, shape, count-larger, count-smaller, truncated, checksum, duplicate, unrequested, nan, inf, flood. Repeatable.")
    var injectFault: [String] = []

    func run() throws {
        let config: Config
        var faults: [Int: Fault] = [:], wireFaults: [Int: WireFault] = [:]
        do {
            config = try options.load()
            for text in injectFault {
                if let (rank, fault) = WireFault.parse(text) {
                    guard Communicator.launchedByMPI else {
                        throw UsageError("--inject-fault \(text): a wire fault needs an MPI launch (launch/local.sh)")
                    }
                    wireFaults[rank] = fault
                } else {
                    let (rank, fault) = try Fault.parse(text)
                    faults[rank] = fault
                }
            }
        } catch {
            // Under mpirun every rank reads the same config and flags: rank 0 says it, once. The
            // others leave a moment later, so that mpirun, which ends the job when the first
            // rank exits with an error, cannot end rank 0 before its line is out.
            if Communicator.launchedByMPI && ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] != "0" {
                sleep(3)
                Foundation.exit(1)
            }
            fail(error)
        }
        var run = TrainOptions(runDir: runDir, resume: resume, role: role, rankLogs: rankLogs, verbose: verbose, force: force,
                               faults: faults)
        run.wireFaults = wireFaults
        run.initFrom = initFrom
        Interruption.install()
        if Communicator.launchedByMPI {
            Foundation.exit(DistributedTraining.train(config: config, options: run))
        }
        do { try Commands.train(config: config, options: run) } catch is TrainingInterrupted {
            Foundation.exit(Interruption.exitStatus)
        } catch { fail(error) }
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on the test set.")
    @Option(help: "The YAML config (default: the config stored in the checkpoint).")
    var config: String?
    @Option(name: .customLong("set"), help: "Override a config key: --set data.path=/other (repeatable).")
    var overrides: [String] = []
    @Option(help: "The checkpoint file (.h5).")
    var checkpoint: String

    func run() throws {
        do {
            let resolved = try config.map { try Config.load(path: $0, overrides: overrides) }
                ?? Commands.storedConfig(checkpoint, overrides: overrides)
            let e = try Commands.evaluate(config: resolved, checkpoint: checkpoint)
            print(String(format: "test loss %.4f  test accuracy %.2f%%  (%d samples)", e.loss, 100 * e.accuracy, e.samples))
        } catch { fail(error) }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training and inference samples/s.")
    @OptionGroup var options: ConfigOptions
    @Option(help: "Timed steps (after two warm-up steps).")
    var steps = 20
    @Flag(help: "Also print the trusted time of every layer (plain, tee-only and asym) and each layer type's share.")
    var profile = false
    @Flag(name: .customLong("plain-only"), help: "Time plain mode only (what scripts/torch_reference.py compares).")
    var plainOnly = false
    @Flag(help: "Print one JSON object.")
    var json = false
    @Flag(help: "Measure this machine's rate per kernel class on the config's layers, and the MPI link between two ranks here; write a hardware file for `plan --hardware`.")
    var calibrate = false
    @Option(help: "The hardware file --calibrate writes.")
    var output = "runs/hardware.yaml"
    @Flag(name: .customLong("link-probe"), help: .hidden)
    var linkProbe = false

    func run() throws {
        do {
            let config = try options.load()
            configureThreads(config)
            if linkProbe {
                let world = try Communicator.world()
                if let r = try LinkProbe.measureLink(world) { print(LinkProbe.report(r)) }
                Communicator.finalize()
                return
            }
            if calibrate {
                guard !Communicator.launchedByMPI else {
                    throw ConfigError("bench --calibrate: run it without mpirun; it starts its own 2-rank link probe")
                }
                let c = try AsymTools.calibrate(config: config, steps: steps) {
                    let r = try LinkProbe.measureBySpawning(binary: CommandLine.arguments[0],
                                                            arguments: ["bench", "--link-probe"] + options.arguments)
                    return (r.gbps, r.latencyMicroseconds)
                }
                let folder = (output as NSString).deletingLastPathComponent
                try FileManager.default.createDirectory(atPath: folder.isEmpty ? "." : folder, withIntermediateDirectories: true)
                try c.file.write(toFile: output, atomically: true, encoding: .utf8)
                print(c.hardware.summary + "\nwrote \(output); use it with asymml plan --config ... --hardware \(output)")
                return
            }
            let r = try benchmark(config: config, steps: steps, profile: profile, plainOnly: plainOnly)
            print(json ? r.json : r.text)
        } catch { fail(error) }
    }
}

/// Hidden: the convolution kernels of this process (`ASYMML_CONV`, oneDNN capped by
/// `ONEDNN_MAX_CPU_ISA`) against reference loops; a test runs it once per kernel path.
struct SelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest", abstract: "Check this process's convolution kernels against reference loops.", shouldDisplay: false)

    func run() throws {
        let failures = checkConvolutionKernels()
        print("conv kernels \(convKernels), oneDNN isa \(dnnlISA): \(failures.isEmpty ? "ok" : "\(failures.count) failures")")
        for f in failures { print("  " + f) }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where every layer runs, the FLOPs on each side and the bytes that cross per step.")
    @OptionGroup var options: ConfigOptions
    @Flag(help: "Print one JSON object with `layers` and `totals` (and `prediction` with --hardware).")
    var json = false
    @Option(help: "Predict step times on this hardware: a file from `bench --calibrate` and/or key=value pairs, comma-separated: tee_gflops, accel_gflops, link_gbps (required), tee_split_gflops, tee_elementwise_gflops, link_latency_us.")
    var hardware: String?

    func run() throws {
        do {
            let plan = try AsymTools.Plan(try options.load())
            let prediction = try hardware.map { Prediction(plan: plan, hardware: try Hardware.parse($0)) }
            if json {
                print(plan.json(extra: prediction.map { [("prediction", $0.json)] } ?? []))
            } else {
                print(plan.table + (prediction.map { "\n\n" + $0.table } ?? ""))
            }
        } catch { fail(error) }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a checkpoint's step, world, config and tensors.")
    @Argument(help: "The checkpoint file (.h5).")
    var path: String

    func run() throws {
        do { print(try Commands.inspect(path: path)) } catch let e as InspectionFailed {
            print(e.listing)
            fail(e)
        } catch { fail(error) }
    }
}

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write PNG charts of a run's loss, accuracy and residual energy.")
    @Argument(help: "The run folder.")
    var runDir: String
    @Option(help: "Where to write the PNG files (default RUN_DIR/plots).")
    var out: String?

    func run() throws {
        do {
            for path in try Pictures.plot(runDir: runDir, out: out ?? runDir + "/plots") { print(path) }
        } catch { fail(error) }
    }
}

struct Privacy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Picture what each side sees: inputs, feature maps, their low-rank parts and residuals.")
    @OptionGroup var options: ConfigOptions
    @Option(help: "The checkpoint file (.h5).")
    var checkpoint: String
    @Option(help: "The folder for privacy.png.")
    var out: String

    func run() throws {
        do {
            print(try Pictures.privacy(config: try options.load(), checkpoint: checkpoint, out: out))
        } catch { fail(error) }
    }
}

struct AttackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attack",
        abstract: "Play an untrusted rank: infer labels and rebuild inputs from what one split layer sends it.")
    @OptionGroup var options: ConfigOptions
    @Option(help: "The checkpoint file (.h5).")
    var checkpoint: String
    @Option(help: "The split layer to attack (default: the first split layer).")
    var layer: String?
    @Option(help: "Training samples to capture (whole batches); half fit the attacker's models, half test them.")
    var samples = 3072
    @Option(help: "With asym.mask.spread: play this one of the 3 untrusted ranks (0, 1 or 2; default 0), holding only its combinations.")
    var rankView: Int?
    @Flag(help: "With asym.mask.spread: attack what all 3 untrusted ranks received together (colluding ranks).")
    var colluding = false
    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        do {
            var o = Attack.Options()
            o.layer = layer
            o.samples = samples
            o.rankView = rankView
            o.colluding = colluding
            let report = try Attack.run(config: try options.load(), checkpoint: checkpoint, options: o)
            print(json ? report.json : report.table)
        } catch { fail(error) }
    }
}

extension Role: ExpressibleByArgument {}

// oneDNN's threads are libgomp's, which reads OMP_WAIT_POLICY once, as the process loads:
// by default its idle workers spin, and they starve the other threads a rank runs between
// convolutions (OpenBLAS, the element-wise kernels, MPI progress); on the shared 2-core
// machine that made plain fmnist-cnn steps 2.5x slower. So unless the caller chose a policy,
// the process restarts itself once with the passive one (execv returns only on failure, and
// then the run goes on with the default).
if ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil {
    setenv("OMP_WAIT_POLICY", "passive", 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
}
// ASYMML_CONV=blas|dnnl picks the convolution kernels for the whole process (design §10).
do { convKernels = try ConvKernels(environment: ProcessInfo.processInfo.environment["ASYMML_CONV"]) } catch { fail(error) }
// ASYMML_BLOCKED=0 keeps every map NCHW between oneDNN convolutions (same results, slower).
blockedMaps = ProcessInfo.processInfo.environment["ASYMML_BLOCKED"] != "0"
Asymml.main()
