import AsymCluster
import AsymHDF5
import AsymKernels
import AsymModel
import AsymTrain
import AsymTestSupport
import Foundation
import XCTest

let repoRoot = repositoryRoot
let binary = releaseBinary

/// The MPI tests need the release binary (make test builds it first). Without it they skip
/// on a developer's machine, but fail under CI, where a skip would hide a broken build.
func requireBinary() throws {
    guard !FileManager.default.isExecutableFile(atPath: binary) else { return }
    if ProcessInfo.processInfo.environment["CI"] != nil {
        XCTFail("\(binary) is missing: make test builds it before the tests")
        throw XCTSkip("no binary")
    }
    throw XCTSkip("build the release binary first (make test does)")
}

func mpirun(_ ranks: Int, _ args: [String]) -> [String] {
    var flags = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "\(ranks)"]
    if getuid() == 0 { flags.insert("--allow-run-as-root", at: 1) }
    return flags + [binary] + args
}

func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "asymml-mpi-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

final class MPIJobTests: XCTestCase {
    override func setUpWithError() throws { try requireBinary() }

    let steps = 12
    let smoke = repoRoot + "/configs/smoke.yaml"

    /// The parameters of a checkpoint, flattened in model order.
    func checkpointWeights(_ path: String, _ model: Model) throws -> [Float] {
        let f = try HDF5File.open(path: path)
        return try model.leaves.flatMap { l in try l.parameters.flatMap { try f.readFloats("/model/\(l.name)/\($0.name)").values } }
    }

    /// Each layout trains `steps` steps and ends with the weights of one plain process over
    /// the same global batches, to 1e-4 relative.
    /// `bench --calibrate` measures the kernel classes and, through its own 2-rank mpirun,
    /// the link; `plan --hardware` reads the file it writes and predicts from it.
    func testCalibrationFeedsThePlan() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/hardware.yaml"
        let calibrate = try runJob([binary, "bench", "--calibrate", "--config", smoke, "--steps", "2", "--output", file])
        XCTAssertEqual(calibrate.status, 0, calibrate.output)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        print(text)
        for key in ["tee_gflops", "tee_split_gflops", "tee_elementwise_gflops", "accel_gflops", "link_gbps", "link_latency_us"] {
            let value = text.split(separator: "\n").first { $0.hasPrefix(key + ":") }.flatMap { Double($0.split(separator: " ")[1]) }
            XCTAssertGreaterThan(value ?? 0, 0, key)
        }
        let plan = try runJob([binary, "plan", "--config", smoke, "--hardware", file + ",link_gbps=1"])
        XCTAssertEqual(plan.status, 0, plan.output)
        XCTAssertTrue(plan.output.contains("link 1 Gbit/s") && plan.output.contains("training step"), plan.output)
        let underMPI = try runJob(mpirun(2, ["bench", "--calibrate", "--config", smoke, "--output", file]))
        XCTAssertTrue(underMPI.output.contains("run it without mpirun"), underMPI.output)
    }

    func testLayoutsTrainTheSameModelAsOneProcess() throws {
        setThreads(1)
        let overrides = ["train.max_steps=\(steps)", "train.threads=1"]
        let reference = try Trainer(config: try Config.load(path: smoke, overrides: overrides))
        for _ in 0..<steps { try reference.step() }
        let expected = reference.model.parameters.flatMap(\.value.array)
        let scale = expected.map(abs).max()!

        // Micro-batches pipeline only over MPI: each goes out as its own message while the
        // untrusted rank answers earlier ones without waiting for them to be taken.
        let layouts: [(ranks: Int, trusted: Int, mode: String, microbatches: Int)] =
            [(2, 1, "asym", 1), (3, 1, "asym", 1), (4, 2, "asym", 1), (2, 2, "plain", 1), (2, 1, "asym", 4), (3, 1, "asym", 2)]
        for layout in layouts {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let args = ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=\(layout.mode)",
                        "--set", "cluster.trusted=\(layout.trusted)", "--set", "asym.microbatches=\(layout.microbatches)"]
                + overrides.flatMap { ["--set", $0] }
            let job = try runJob(mpirun(layout.ranks, args))
            let name = "\(layout.trusted)T+\(layout.ranks - layout.trusted)U \(layout.mode), \(layout.microbatches) micro-batches"
            XCTAssertEqual(job.status, 0, "\(name): \(job.output)")
            guard job.status == 0 else { continue }
            let got = try checkpointWeights("\(dir)/checkpoints/step-\(String(format: "%08d", steps)).h5", reference.model)
            let diff = zip(got, expected).map { abs($0 - $1) }.max()! / scale
            print("\(name): max relative weight difference to one plain process \(diff) (\(String(format: "%.1f", job.seconds)) s)")
            XCTAssertLessThan(diff, 1e-4, name)
        }
    }

    /// Interrupted and resumed under mpirun (1 trusted + 1 untrusted, asym) equals the
    /// uninterrupted run bit for bit; resuming on another layout works and says it is not
    /// bit-exact.
    func testResumeUnderMPIIsBitExact() throws {
        let straight = temporaryFolder(), interrupted = temporaryFolder()
        defer { for d in [straight, interrupted] { try? FileManager.default.removeItem(atPath: d) } }
        func train(_ dir: String, ranks: Int = 2, steps: Int, _ extra: [String] = []) throws -> JobResult {
            let job = try runJob(mpirun(ranks, ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym",
                                                "--set", "train.threads=1", "--set", "train.max_steps=\(steps)"] + extra))
            XCTAssertEqual(job.status, 0, job.output)
            return job
        }
        _ = try train(straight, steps: 12)
        _ = try train(interrupted, steps: 5)
        let resumed = try train(interrupted, steps: 12, ["--resume", "auto"])
        XCTAssertTrue(resumed.output.contains("at step 5; same rank layout: the continuation is bit-exact"), resumed.output)
        let model = try Model(try Config.load(path: smoke).model)
        let a = try checkpointWeights("\(straight)/checkpoints/step-00000012.h5", model)
        let b = try checkpointWeights("\(interrupted)/checkpoints/step-00000012.h5", model)
        XCTAssertEqual(a, b, "resumed weights differ from the uninterrupted run")
        let other = try train(interrupted, ranks: 3, steps: 16, ["--resume", "\(interrupted)/checkpoints/step-00000005.h5"])
        XCTAssertTrue(other.output.contains("a different rank layout"), other.output)
    }

    /// A trainer killed (SIGKILL) while it writes checkpoints leaves only complete files:
    /// `latest` and every visible checkpoint load.
    func testKillDuringCheckpointWritesLeavesLoadableCheckpoints() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vgg = repoRoot + "/configs/vgg-cifar.yaml"
        let overrides = ["train.checkpoint_every=1", "train.keep=3", "train.max_steps=10000", "train.threads=1",
                         "data.batch_size=2", "data.synthetic_train=64", "data.synthetic_test=16"]
        let job = try runJob(["env", binary, "train", "--config", vgg, "--run-dir", dir] + overrides.flatMap { ["--set", $0] },
                             timeout: 60) { process in
            // Let it write a few checkpoints (18 MB each), then kill it at an arbitrary moment.
            let deadline = Date().addingTimeInterval(40)
            while Date() < deadline && CheckpointStoreProbe.count(dir) < 3 { usleep(20_000) }
            usleep(useconds_t(Int.random(in: 0..<150_000)))
            kill(process.processIdentifier, SIGKILL)
        }
        XCTAssertNotEqual(job.status, 0)
        let config = try Config.load(path: vgg, overrides: overrides)
        let store = CheckpointStore(folder: dir + "/checkpoints", keep: 3)
        let latest = try XCTUnwrap(store.latest())
        for path in store.checkpoints() {
            let model = try Model(config.model)
            XCTAssertNoThrow(try Checkpoint.load(path, model: model, config: config), path)
        }
        print("killed while checkpointing: \(store.checkpoints().count) complete files, latest \((latest as NSString).lastPathComponent)")
    }

    /// A rank killed mid-run makes mpirun return non-zero within seconds, and nothing hangs.
    func testKilledRankEndsTheJob() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym", "--set", "train.epochs=100000",
                    "--set", "train.threads=1"]
        var killedAt = Date()
        let job = try runJob(mpirun(2, args), timeout: 60) { mpirun in
            // Wait until training runs, then SIGKILL the untrusted rank (world rank 1).
            let metrics = dir + "/metrics.jsonl"
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline && ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").isEmpty { usleep(50_000) }
            if let pid = rankProcess(parent: mpirun.processIdentifier, rank: 1) {
                kill(pid, SIGKILL)
                killedAt = Date()
            }
        }
        let after = Date().timeIntervalSince(killedAt)
        print("killed rank 1: mpirun exited with \(job.status) after \(String(format: "%.1f", after)) s")
        XCTAssertNotEqual(job.status, 0)
        XCTAssertLessThan(after, 20, job.output)
    }

    /// A trusted and an untrusted rank that disagree (an MPMD launch with another model on
    /// the untrusted side: its second split layer has 6 input channels, not 8) are caught by
    /// the header check, and the message names both ranks.
    func testMismatchedHeaderIsCaught() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var command = mpirun(1, ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym", "--role", "trusted",
                                 "--set", "train.threads=1"])
        command += [":", "-np", "1", binary, "train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym",
                    "--role", "untrusted", "--set", "train.threads=1", "--set", "model.layers.2.out=6",
                    "--set", "model.layers.5.padding=0", "--set", "model.layers.8.in=16"]
        let job = try runJob(command, timeout: 60)
        print(job.output.split(separator: "\n").filter { $0.contains("error") }.joined(separator: "\n"))
        XCTAssertNotEqual(job.status, 0)
        // Whichever side notices first names itself and its peer.
        let caught = job.output.contains("wire protocol: rank 0 (trusted) received from rank 1 (untrusted)")
            || job.output.contains("wire protocol: rank 1 (untrusted) received from rank 0 (trusted)")
        XCTAssertTrue(caught, job.output)
    }

    /// An evaluation batch smaller than the untrusted group leaves some members idle.
    func testSmallEvaluationBatchWithALargeGroup() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = try runJob(mpirun(3, ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym",
                                        "--set", "train.threads=1", "--set", "train.max_steps=2", "--set", "data.synthetic_test=17"]))
        XCTAssertEqual(job.status, 0, job.output)
    }

    /// An MPMD launch that gives --role to some ranks only is an error, not a hang.
    func testRoleOnSomeRanksOnlyIsRejected() throws {
        var command = mpirun(1, ["train", "--config", smoke, "--run-dir", temporaryFolder(), "--set", "asym.mode=asym",
                                 "--role", "trusted", "--set", "train.threads=1"])
        command += [":", "-np", "1", binary, "train", "--config", smoke, "--run-dir", temporaryFolder(), "--set", "asym.mode=asym",
                    "--set", "train.threads=1"]
        let job = try runJob(command, timeout: 60)
        XCTAssertNotEqual(job.status, 0)
        XCTAssertTrue(job.output.contains("--role: give it to every rank"), job.output)
    }

    /// The launch scripts run real jobs: local.sh by rank ranges, cluster.sh in MPMD form
    /// from two hostfiles (both naming this machine here).
    func testLaunchScripts() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let train = ["train", "--config", smoke, "--set", "asym.mode=asym", "--set", "train.max_steps=4"]
        let local = try runJob([repoRoot + "/launch/local.sh", "-t", "1", "-u", "2", "--"] + train
                               + ["--run-dir", dir + "/local", "--set", "asym.audit=true"])
        XCTAssertEqual(local.status, 0, local.output)
        XCTAssertTrue(local.output.contains("1 trusted + 2 untrusted ranks, mode asym"), local.output)
        // The header names the privacy setting and the checks; the audit logs live in the run folder.
        XCTAssertTrue(local.output.contains("privacy: no masking: residuals and output gradients cross in the clear; integrity checks off"),
                      local.output)
        for rank in 1...2 { XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/local/audit/audit-rank-\(rank).jsonl")) }
        try "localhost slots=1\n".write(toFile: dir + "/tee.hosts", atomically: true, encoding: .utf8)
        try "localhost slots=2\n".write(toFile: dir + "/gpu.hosts", atomically: true, encoding: .utf8)
        let cluster = try runJob(["MPIRUN_FLAGS=--oversubscribe", repoRoot + "/launch/cluster.sh", dir + "/tee.hosts", dir + "/gpu.hosts", "--"]
                                 + train + ["--set", "train.threads=1", "--run-dir", dir + "/cluster"])
        XCTAssertEqual(cluster.status, 0, cluster.output)
        XCTAssertTrue(cluster.output.contains("1 trusted + 2 untrusted ranks, mode asym"), cluster.output)
    }

    /// Spread masking needs 3 untrusted ranks per trusted rank: with 1 or 2 the job ends at
    /// once with a config error that says why.
    func testSpreadMaskingWithFewerThanThreeUntrustedRanksIsRejected() throws {
        for ranks in [2, 3] {
            let job = try runJob(mpirun(ranks, ["train", "--config", smoke, "--run-dir", temporaryFolder(), "--set", "asym.mode=asym",
                                                "--set", "asym.mask={inputs_per_group: 2, spread: true}", "--set", "train.threads=1"]),
                                 timeout: 60)
            XCTAssertNotEqual(job.status, 0)
            XCTAssertTrue(job.output.contains("asym.mask.spread: needs at least 3 untrusted ranks per trusted rank, but a trusted rank here has \(ranks - 1)"),
                          job.output)
            XCTAssertTrue(job.output.contains("launch/local.sh -t 1 -u 3") && job.output.contains("--set asym.mask=off"), job.output)
            XCTAssertFalse(job.output.contains("step "), "no step ran: \(job.output)")
        }
    }

    /// Ctrl-C on launch/local.sh: the job finishes its step, writes a checkpoint, says so and
    /// exits with status 130; `--resume auto` then ends with every tensor bit-identical to an
    /// uninterrupted run's (the crc32 of each dataset of the final checkpoints).
    func testCtrlCStopsWithACheckpointAndResumeIsExact() throws {
        let ref = temporaryFolder(), dir = temporaryFolder()
        defer { for d in [ref, dir] { try? FileManager.default.removeItem(atPath: d) } }
        let launch = [repoRoot + "/launch/local.sh", "-t", "1", "-u", "1", "--", "train", "--config", smoke, "--set", "asym.mode=asym",
                      "--set", "train.epochs=300", "--set", "train.log_every=1000", "--set", "train.checkpoint_epochs=false"]
        let full = try runJob(launch + ["--run-dir", ref], timeout: 600)
        XCTAssertEqual(full.status, 0, full.output)
        let stopped = try runJob(launch + ["--run-dir", dir], timeout: 600) { p in
            // Once the first epoch's evaluation is in metrics.jsonl, training is under way
            // and far from its end (300 epochs).
            let deadline = Date().addingTimeInterval(120)
            while p.isRunning && Date() < deadline
                    && ((try? String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8)) ?? "").isEmpty {
                usleep(20_000)
            }
            kill(p.processIdentifier, SIGINT)
        }
        XCTAssertEqual(stopped.status, Int32(Interruption.exitStatus), stopped.output)
        XCTAssertTrue(stopped.output.contains("stopped after step") && stopped.output.contains("continue with --resume auto"), stopped.output)
        XCTAssertEqual(stopped.output.components(separatedBy: "asymml: error").count, 1, stopped.output)
        let resumed = try runJob(launch + ["--run-dir", dir, "--resume", "auto"], timeout: 600)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("same rank layout: the continuation is bit-exact"), resumed.output)
        let final = CheckpointStore.fileName(step: 300 * 32)
        let a = try Checkpoint.verify("\(dir)/checkpoints/\(final)"), b = try Checkpoint.verify("\(ref)/checkpoints/\(final)")
        XCTAssertEqual(a.map(\.dataset), b.map(\.dataset))
        for (x, y) in zip(a, b) { XCTAssertEqual(x.crc32, y.crc32, x.dataset) }
    }

    /// A hostile untrusted rank at the message level (`--inject-fault 2:KIND:2`, every wire
    /// kind): the trusted rank ends the job in one line that names the rank and what was
    /// wrong, well within `cluster.timeout_s`, never with a trap. Prints the matrix.
    func testWireFaultsEndTheJobWithOneLine() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let expected: [WireFault.Kind: String] = [
            .magic: "bad magic", .version: "protocol version", .kind: "got [input gradient", .step: "got [output share, step 3",
            .layer: "got [output share, step 2, layer 1", .shard: "shard 2", .shape: "shape [8, 9, 8, 8]",
            .countLarger: "sent a message longer than the one awaited", .countSmaller: "4032 values], expected",
            .truncated: "payload checksum mismatch", .checksum: "payload checksum mismatch",
            .duplicate: "sent a message longer than the one awaited", .unrequested: "got [output share, step 2, layer 0, shard 1, shape [1, 4",
            .nan: "is nan", .inf: "is inf", .flood: "0 values], expected",
        ]
        XCTAssertEqual(Set(expected.keys), Set(WireFault.Kind.allCases))
        for kind in WireFault.Kind.allCases {
            let job = try runJob([repoRoot + "/launch/local.sh", "-t", "1", "-u", "2", "--", "train", "--config", smoke, "--set", "asym.mode=asym",
                                  "--set", "cluster.timeout_s=20", "--set", "train.max_steps=6", "--run-dir", "\(dir)/\(kind.rawValue)",
                                  "--inject-fault", "2:\(kind.rawValue):2"], timeout: 60)
            let errors = job.output.split(separator: "\n").filter { $0.hasPrefix("asymml: error:") }
            print(String(format: "wire fault %@: exit %d after %.1f s: %@", kind.rawValue, job.status, job.seconds, errors.first.map(String.init) ?? "-"))
            XCTAssertEqual(job.status, 1, "\(kind): \(job.output)")
            XCTAssertEqual(errors.count, 1, "\(kind): \(job.output)")
            XCTAssertTrue(errors.first?.contains("rank 2 (untrusted)") ?? false, "\(kind): \(job.output)")
            XCTAssertTrue(errors.first?.contains(expected[kind]!) ?? false, "\(kind): \(job.output)")
            XCTAssertLessThan(job.seconds, 20, "\(kind): ended by a deadline, not by the check")
            for crash in ["crashed", "Fatal error", "malloc"] { XCTAssertFalse(job.output.contains(crash), "\(kind): \(job.output)") }
            // The private setting on 1T+3U under `recompute`: a protocol fault is no result to
            // recompute, it ends the job just as promptly.
            let spread = try runJob([repoRoot + "/launch/local.sh", "-t", "1", "-u", "3", "--", "train", "--config", smoke,
                                     "--set", "asym.mode=asym", "--set", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}",
                                     "--set", "asym.verify=true", "--set", "asym.on_verify_failure=recompute",
                                     "--set", "cluster.timeout_s=20", "--set", "train.max_steps=6", "--run-dir", "\(dir)/spread-\(kind.rawValue)",
                                     "--inject-fault", "2:\(kind.rawValue):2"], timeout: 60)
            let spreadErrors = spread.output.split(separator: "\n").filter { $0.hasPrefix("asymml: error:") }
            print(String(format: "private 1T+3U, wire fault %@: exit %d after %.1f s: %@", kind.rawValue, spread.status, spread.seconds,
                         spreadErrors.first.map(String.init) ?? "-"))
            XCTAssertEqual(spread.status, 1, "private \(kind): \(spread.output)")
            XCTAssertEqual(spreadErrors.count, 1, "private \(kind): \(spread.output)")
            XCTAssertTrue(spreadErrors.first?.contains("rank 2 (untrusted)") ?? false, "private \(kind): \(spread.output)")
            XCTAssertLessThan(spread.seconds, 20, "private \(kind): ended by a deadline, not by the check")
            for crash in ["crashed", "Fatal error", "malloc"] { XCTAssertFalse(spread.output.contains(crash), "private \(kind): \(spread.output)") }
        }
        // A wire fault needs an MPI launch.
        let alone = try runJob([binary, "train", "--config", smoke, "--run-dir", dir + "/alone", "--inject-fault", "1:flood:2"])
        XCTAssertEqual(alone.status, 1)
        XCTAssertTrue(alone.output.contains("a wire fault needs an MPI launch"), alone.output)
    }

    /// One failure, one line: through launch/local.sh a launch that does not fit, a bad config
    /// and a failed integrity check each print one `asymml: error:` line and no Open MPI banner.
    func testOneErrorLineUnderMPI() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let launch = [repoRoot + "/launch/local.sh", "-t", "1", "-u", "2", "--", "train", "--config", smoke, "--set", "asym.mode=asym"]
        for (n, extra) in [["--set", "asym.mask={inputs_per_group: 1, spread: true}"], ["--set", "asym.rank.value=0"],
                           ["--set", "asym.verify=true", "--inject-fault", "2:grad:2"]].enumerated() {
            let job = try runJob(launch + extra + ["--run-dir", "\(dir)/\(n)"], timeout: 120)
            XCTAssertEqual(job.status, 1, job.output)
            XCTAssertEqual(job.output.components(separatedBy: "asymml: error:").count, 2, "\(extra): \(job.output)")
            for banner in ["MPI_ABORT", "-----", "Primary job", "mpirun"] { XCTAssertFalse(job.output.contains(banner), "\(extra): \(job.output)") }
        }
    }

    func testWorldThatDoesNotFitIsRejected() throws {
        let job = try runJob(mpirun(2, ["train", "--config", smoke, "--run-dir", temporaryFolder(), "--set", "asym.mode=asym",
                                        "--set", "cluster.trusted=2", "--set", "train.threads=1"]), timeout: 60)
        XCTAssertNotEqual(job.status, 0)
        XCTAssertTrue(job.output.contains("asym mode needs at least one untrusted rank per trusted rank"), job.output)
    }
}

enum CheckpointStoreProbe {
    static func count(_ dir: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? []).filter { $0.hasPrefix("step-") }.count
    }
}

/// The child of `parent` whose environment says it is MPI world rank `rank`.
func rankProcess(parent: Int32, rank: Int) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for entry in entries {
        guard let pid = Int32(entry),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { continue }
        // Field 4 of /proc/PID/stat is the parent pid (after the "(comm)" field).
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        guard fields.count > 2, Int32(fields[1]) == parent,
              let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
        let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
    }
    return nil
}
