import AsymTestSupport
import AsymTrain
import Foundation
import XCTest

/// `launch/local.sh --restarts N`: a job that loses a rank once training has begun is
/// relaunched from its last checkpoint and ends exactly where an uninterrupted run ends; a
/// mistake that a restart would repeat is not restarted.
final class RestartTests: XCTestCase {
    let smoke = repositoryRoot + "/configs/smoke.yaml"
    let epochs = 60  // 32 steps an epoch: 1920 steps, a few seconds on 1T + 2U
    var folders: [String] = []

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: releaseBinary) else {
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail("\(releaseBinary) is missing: make test builds it before the tests") }
            throw XCTSkip("build the release binary first (make test does)")
        }
    }

    override func tearDown() {
        for folder in folders { try? FileManager.default.removeItem(atPath: folder) }
    }

    func runFolder() -> String {
        let path = NSTemporaryDirectory() + "asymml-restart-\(UUID().uuidString)"
        folders.append(path)
        return path
    }

    func launch(_ restarts: Int, _ train: [String]) -> [String] {
        [repositoryRoot + "/launch/local.sh", "-t", "1", "-u", "2", "--restarts", "\(restarts)", "--", "train", "--config", smoke,
         "--set", "asym.mode=asym"] + train
    }

    /// SIGKILL one untrusted rank mid-run: the launcher logs one restart with its cause, resumes
    /// from the last checkpoint, exits 0, and the final checkpoint equals an uninterrupted run's
    /// tensor for tensor (the crc32 of every dataset). Prints what the restart cost: seconds from
    /// the kill to the reload and to the first step after it, and the steps done twice.
    func testKilledRankIsRestartedFromTheLastCheckpointExactly() throws {
        let ref = runFolder(), dir = runFolder()
        let train = ["--set", "train.epochs=\(epochs)", "--set", "train.checkpoint_every=50", "--set", "cluster.timeout_s=5",
                     "--set", "train.log_every=1"]
        let full = try runJob(launch(1, train + ["--run-dir", ref]), timeout: 120)
        XCTAssertEqual(full.status, 0, full.output)
        XCTAssertFalse(full.output.contains(": restart "), full.output)

        var killedAt: Date?, firstEnded: Date?, reloaded: Date?, trainingAgain: Date?
        let log = dir + "/train.log"
        func lines() -> [Substring] { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n") }
        func waitFor(_ p: Process, _ seconds: Double, _ done: () -> Bool) -> Date? {
            let deadline = Date().addingTimeInterval(seconds)
            while p.isRunning && Date() < deadline {
                if done() { return Date() }
                usleep(2_000)
            }
            return nil
        }
        let killed = try runJob(launch(1, train + ["--run-dir", dir]), timeout: 120) { p in
            // Mid-run (of 1920 steps), between the checkpoints of steps 128 (epoch 4) and 150.
            func logged(_ step: Int) -> Bool { lines().contains { number(after: "step ", in: $0, atStart: true).map { $0 >= step } ?? false } }
            guard waitFor(p, 60, { logged(1) }) != nil,
                  let rank2 = asymmlRank(runDir: dir, rank: 2), let mpirun = processState(rank2)?.parent,
                  waitFor(p, 60, { logged(134) }) != nil else { return }
            kill(rank2, SIGKILL)
            killedAt = Date()
            firstEnded = waitFor(p, 60) { processState(mpirun).map { $0.state == "Z" } ?? true }
            reloaded = waitFor(p, 60) { lines().contains { $0.hasPrefix("resumed from ") } }
            trainingAgain = waitFor(p, 60) {
                lines().drop { !$0.hasPrefix("resumed from ") }.contains { $0.hasPrefix("step ") }
            }
        }
        XCTAssertNotNil(killedAt, "the job ended (status \(killed.status)) before the kill:\n\(killed.output)")
        XCTAssertEqual(killed.status, 0, killed.output)
        let restarts = killed.output.split(separator: "\n").filter { $0.contains("launch/local.sh: restart ") }
        XCTAssertEqual(restarts.count, 1, killed.output)
        if let line = restarts.first {
            XCTAssertTrue(line.hasPrefix("launch/local.sh: restart 1 of 1 after exit ") && line.contains(" (")
                          && line.hasSuffix("); resuming from the last checkpoint"), String(line))
            print(line)
        }
        XCTAssertTrue(killed.output.contains("same rank layout: the continuation is bit-exact"), killed.output)

        // The cost of the restart: the steps that the first attempt did after the checkpoint
        // the second one resumed from (to the last step it logged), and the seconds.
        let output = killed.output.split(separator: "\n")
        let resumed = output.first { $0.hasPrefix("resumed from ") }.flatMap { number(after: " at step ", in: $0) }
        let before = output.prefix { !$0.contains("launch/local.sh: restart ") }.compactMap { number(after: "step ", in: $0, atStart: true) }.max()
        if let k = killedAt, let r = resumed, let b = before {
            func since(_ d: Date?) -> String { d.map { String(format: "%.2f s", $0.timeIntervalSince(k)) } ?? "?" }
            print("restart cost: the first mpirun ended \(since(firstEnded)) after the kill, reloaded (resumed from step \(r)) after "
                  + "\(since(reloaded)), training again after \(since(trainingAgain)); steps redone: \(b - r) (the first attempt logged step \(b))")
        } else {
            XCTFail("no resumed step or no step line before the restart:\n\(killed.output)")
        }

        let final = CheckpointStore.fileName(step: epochs * 32)
        let a = try Checkpoint.verify("\(dir)/checkpoints/\(final)"), b = try Checkpoint.verify("\(ref)/checkpoints/\(final)")
        XCTAssertFalse(a.isEmpty)
        XCTAssertEqual(a.map(\.dataset), b.map(\.dataset))
        for (x, y) in zip(a, b) { XCTAssertEqual(x.crc32, y.crc32, x.dataset) }
    }

    /// Ctrl-C stops a launch with --restarts like any other: a checkpoint, status 130, no restart.
    func testCtrlCStopsTheRestartLoop() throws {
        let dir = runFolder()
        let job = try runJob(launch(2, ["--set", "train.epochs=\(epochs)", "--set", "train.log_every=1", "--run-dir", dir]), timeout: 60) { p in
            let deadline = Date().addingTimeInterval(30)
            while p.isRunning && Date() < deadline
                    && !((try? String(contentsOfFile: dir + "/train.log", encoding: .utf8)) ?? "").contains("\nstep     40/") {
                usleep(2_000)
            }
            kill(p.processIdentifier, SIGINT)
        }
        XCTAssertEqual(job.status, 130, job.output)
        XCTAssertTrue(job.output.contains("stopped after step"), job.output)
        XCTAssertFalse(job.output.contains(": restart "), job.output)
    }

    /// Mistakes end the job before training begins, and --restarts does not repeat them: a run
    /// folder that holds an earlier run (rank 0's one error line, exit 1 once, no restart) and
    /// a config error (said by rank 0 alone; the other ranks leave only after it).
    func testMistakesAreNotRestarted() throws {
        let earlier = runFolder()
        try FileManager.default.createDirectory(atPath: earlier, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: earlier + "/metrics.jsonl", contents: Data())
        let folder = try runJob(launch(2, ["--run-dir", earlier]), timeout: 60)
        XCTAssertEqual(folder.status, 1, folder.output)
        XCTAssertEqual(folder.output.components(separatedBy: "asymml: error:").count, 2, folder.output)
        XCTAssertTrue(folder.output.contains("asymml: error: rank 0: run folder \(earlier) holds an earlier run"), folder.output)
        XCTAssertFalse(folder.output.contains(": restart "), folder.output)
        XCTAssertTrue(folder.output.contains("launch/local.sh: no restart: the job ended (exit 1) before training began"), folder.output)

        let config = try runJob(launch(2, ["--set", "train.bogus=1", "--run-dir", runFolder()]), timeout: 60)
        XCTAssertEqual(config.status, 1, config.output)
        let errors = config.output.split(separator: "\n").filter { $0.contains("asymml: error:") }
        XCTAssertEqual(errors.count, 1, config.output)
        XCTAssertTrue(errors.first?.contains("train.bogus") ?? false, config.output)
        XCTAssertFalse(config.output.contains(": restart "), config.output)
        XCTAssertTrue(config.output.contains("launch/local.sh: no restart: the job ended (exit 1) before training began"), config.output)
    }
}

/// The number that follows `marker` in `line` (spaces skipped), if any.
private func number(after marker: String, in line: Substring, atStart: Bool = false) -> Int? {
    guard let r = line.range(of: marker), !atStart || r.lowerBound == line.startIndex else { return nil }
    return Int(line[r.upperBound...].drop { $0 == " " }.prefix { $0.isNumber })
}

/// The state letter and the parent of process `pid` (/proc/PID/stat), while it exists.
private func processState(_ pid: Int32) -> (state: Character, parent: Int32)? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 1,
          let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
    return (state, parent)
}

/// The asymml process of MPI world rank `rank` whose command line names `runDir`.
private func asymmlRank(runDir: String, rank: Int) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for entry in entries {
        guard let pid = Int32(entry), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
              let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
        let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        let vars = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if args.first?.hasSuffix("asymml") == true, args.contains(runDir), vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
    }
    return nil
}
