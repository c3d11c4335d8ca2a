import AsymCluster
import AsymHDF5
import AsymKernels
import AsymModel
import AsymSplit
import AsymTrain
import Crypto
import Foundation
import AsymTestSupport
import XCTest

/// fmnist-cnn's layers (conv2..conv4 split, 64,672 split-layer values) on seeded synthetic
/// images of Fashion-MNIST's shape: real-sized layers, no data set needed. Plain SGD at a
/// small constant rate: each layout sums the weight-gradient shares in another order, so
/// the weights differ by ~1e-7 after one step, and within a few steps such a difference can
/// break an exact tie (a max-pool window, a ReLU at zero) the other way. That moves one
/// gradient entry to a neighbouring pixel, a change of size lr x gradient that says nothing
/// about the split; at lr 0.01 it stays under the 1e-5 bound, at 0.05 it reaches 5e-5.
let fmnistCNN = repoRoot + "/configs/fmnist-cnn.yaml"
let fmnistSynthetic = ["data.dataset=synthetic", "data.synthetic_train=320", "data.synthetic_test=64",
                       "data.shuffle=false", "train.threads=1", "train.log_every=1",
                       "optimizer.momentum=0", "optimizer.schedule=constant", "optimizer.lr=0.01",
                       // The unprotected split: these tests check its layouts and messages bit by bit.
                       "asym.mask=off", "asym.verify=false"]

/// Every model tensor of a checkpoint against the same tensor of `reference`, on its own:
/// (name, max |a - b| / max |b|).
func tensorDifferences(_ path: String, _ reference: Model) throws -> [(String, Float)] {
    let f = try HDF5File.open(path: path)
    return try reference.leaves.flatMap { l in
        try (l.parameters.map { ($0.name, $0.value) } + l.buffers.map { ($0.name, $0.value) }).map { name, value in
            let saved = Tensor(shape: value.shape, values: try f.readFloats("/model/\(l.name)/\(name)").values)
            return ("\(l.name)/\(name)", relativeDifference(saved, value))
        }
    }
}

func args(_ overrides: [String]) -> [String] { overrides.flatMap { ["--set", $0] } }

final class TrustBoundaryTests: XCTestCase {
    override func setUpWithError() throws { try requireBinary() }
    let smoke = repoRoot + "/configs/smoke.yaml"

    /// Every layout trains the model one process trains, tensor by tensor, for every basis
    /// and rank policy: within 1e-6 after one step and 1e-5 after five.
    func testEveryLayoutIsExactPerTensor() throws {
        setThreads(1)
        let layouts = [(1, 1), (1, 2), (1, 3), (2, 2)]
        let variants = [["asym.rank=4"], [], ["asym.rank={policy: energy, tau: 0.1, max: 16}"]]  // fixed, schedule, energy
        var worst: [String: Float] = [:]
        for basis in Basis.allCases {
            for variant in variants {
                let overrides = fmnistSynthetic + variant + ["asym.basis=\(basis)", "train.max_steps=5"]
                let reference = try Trainer(config: try Config.load(path: fmnistCNN, overrides: overrides))
                var afterOne: [(String, Tensor)] = []
                for step in 1...5 {
                    try reference.step()
                    if step == 1 {
                        afterOne = reference.model.leaves.flatMap { l in l.parameters.map { p in
                            ("\(l.name)/\(p.name)", Tensor(shape: p.value.shape, values: p.value.array)) } }
                    }
                }
                for (trusted, untrusted) in layouts {
                    let dir = temporaryFolder()
                    defer { try? FileManager.default.removeItem(atPath: dir) }
                    let job = try runJob(mpirun(trusted + untrusted, ["train", "--config", fmnistCNN, "--run-dir", dir]
                        + args(overrides + ["cluster.trusted=\(trusted)", "train.checkpoint_every=1", "train.keep=5"])))
                    let name = "\(trusted)T+\(untrusted)U \(basis) \(variant.first ?? "schedule")"
                    XCTAssertEqual(job.status, 0, "\(name): \(job.output)")
                    guard job.status == 0 else { continue }
                    let one = try HDF5File.open(path: "\(dir)/checkpoints/step-00000001.h5")
                    for (tensor, value) in afterOne {
                        let saved = Tensor(shape: value.shape, values: try one.readFloats("/model/\(tensor)").values)
                        let d = relativeDifference(saved, value)
                        XCTAssertLessThanOrEqual(d, 1e-6, "\(name), step 1, \(tensor)")
                        worst["step 1"] = max(worst["step 1"] ?? 0, d)
                    }
                    for (tensor, d) in try tensorDifferences("\(dir)/checkpoints/step-00000005.h5", reference.model) {
                        XCTAssertLessThanOrEqual(d, 1e-5, "\(name), step 5, \(tensor)")
                        worst["step 5"] = max(worst["step 5"] ?? 0, d)
                        worst["\(name) \(tensor)"] = d
                    }
                }
            }
        }
        print("per-tensor differences to one process (max over layouts x bases x policies): step 1 \(worst["step 1"] ?? -1), step 5 \(worst["step 5"] ?? -1)")
        for (k, v) in worst.sorted(by: { $0.key < $1.key }) where k.hasPrefix("2T+2U sample schedule") { print("  \(k): \(v)") }
    }

    /// With the audit on (2 trusted + 2 untrusted, fmnist-cnn), an untrusted rank receives
    /// only: its shard of residuals and output gradients of split layers, the split layers'
    /// weights (64,672 values: conv2..conv4), and control headers. No buffer exceeds the
    /// largest of those, and nothing else arrives: no trusted-only tensor (conv1, fc1, fc2),
    /// no gradient of any layer, no label, no checkpoint.
    func testUntrustedRanksReceiveOnlyWhatTheSplitNeeds() throws {
        let dir = temporaryFolder(), audit = temporaryFolder()
        defer { for d in [dir, audit] { try? FileManager.default.removeItem(atPath: d) } }
        let overrides = fmnistSynthetic + ["train.max_steps=3", "cluster.trusted=2", "asym.audit=true", "asym.audit_dir=\(audit)"]
        let job = try runJob(mpirun(4, ["train", "--config", fmnistCNN, "--run-dir", dir] + args(overrides)))
        XCTAssertEqual(job.status, 0, job.output)
        let config = try Config.load(path: fmnistCNN, overrides: overrides)
        let model = try Model(config.model)
        let split = try model.splitConvolutions(config)
        let splitValues = split.map { $0.conv.parameters.map(\.value.count).reduce(0, +) }.reduce(0, +)
        XCTAssertEqual(splitValues, 64_672)
        let shard = config.data.batchSize / 2  // each trusted rank has one untrusted rank
        var allowedShapes: Set<[Int]> = []
        for s in split {
            let g = s.info.geometry
            allowedShapes.insert([shard, g.inChannels, g.height, g.width])
            allowedShapes.insert([shard, g.outChannels, g.outHeight, g.outWidth])
        }
        let largestAllowed = max(splitValues, allowedShapes.map { $0.reduce(1, *) }.max()!)
        for rank in [2, 3] {
            let lines = try String(contentsOfFile: "\(audit)/audit-rank-\(rank).jsonl", encoding: .utf8).split(separator: "\n")
            XCTAssertGreaterThan(lines.count, 10)
            var largest = 0, kinds: Set<String> = []
            for line in lines {
                let entry = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                if let collective = entry["collective"] as? String {
                    XCTAssertLessThanOrEqual(entry["count"] as! Int, 4, "collective \(collective)")  // one value per rank
                    continue
                }
                let kind = entry["kind"] as! String, count = entry["count"] as! Int
                kinds.insert(kind)
                largest = max(largest, count)
                XCTAssertLessThanOrEqual(count, largestAllowed, line.description)
                switch kind {
                case "weights": XCTAssertEqual(count, splitValues, line.description)
                case "residual", "output gradient":
                    let shape = entry["shape"] as! [Int]
                    // Only a split layer's input or output shape, for this rank's shard.
                    XCTAssertTrue(allowedShapes.contains(shape), line.description)
                case "step end", "shutdown": XCTAssertEqual(count, 0, line.description)
                default: XCTFail("rank \(rank) received a \(kind): \(line)")
                }
            }
            print("untrusted rank \(rank): \(lines.count) buffers received, kinds \(kinds.sorted()), largest \(largest) values (allowed \(largestAllowed); split weights \(splitValues))")
        }
    }

    /// A stopped untrusted rank (SIGSTOP) ends the job at the deadline (cluster.timeout_s=5),
    /// with a message naming it, instead of hanging.
    func testStoppedRankEndsTheJobAtTheDeadline() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["train", "--config", smoke, "--run-dir", dir, "--set", "asym.mode=asym", "--set", "train.epochs=100000",
                    "--set", "train.threads=1", "--set", "cluster.timeout_s=5"]
        var stoppedAt = Date()
        var stopped: Int32 = 0
        let job = try runJob(mpirun(2, args), timeout: 90) { mpirun in
            let metrics = dir + "/metrics.jsonl"
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline && ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").isEmpty { usleep(50_000) }
            if let pid = rankProcess(parent: mpirun.processIdentifier, rank: 1) {
                kill(pid, SIGSTOP)
                stopped = pid
                stoppedAt = Date()
            }
        }
        if stopped != 0 { kill(stopped, SIGKILL) }  // in case it outlived the job
        let after = Date().timeIntervalSince(stoppedAt)
        let message = job.output.split(separator: "\n").first { $0.contains("did not answer") } ?? ""
        print("stopped rank 1: mpirun exited with \(job.status) after \(String(format: "%.1f", after)) s: \(message)")
        XCTAssertNotEqual(stopped, 0, "found no rank 1 to stop")
        XCTAssertNotEqual(job.status, 0)
        XCTAssertLessThan(after, 30, job.output)
        XCTAssertTrue(message.contains("rank 1 (untrusted) did not answer within 5 s"), job.output)
    }

    /// Batch norm on 2 trusted ranks: the running statistics are synchronised before
    /// evaluation and checkpoints, so the job's final test accuracy is what `asymml
    /// evaluate` gives on its checkpoint in one process.
    func testBatchNormReplicasEvaluateLikeTheirCheckpoint() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let overrides = ["asym.mode=asym", "cluster.trusted=2", "train.max_steps=6", "train.threads=1",
                         "model.layers.1.type=batchnorm"]  // smoke's relu after conv1 becomes batch norm
        let job = try runJob(mpirun(4, ["train", "--config", smoke, "--run-dir", dir] + args(overrides)))
        XCTAssertEqual(job.status, 0, job.output)
        let evaluated = try runJob(["env", binary, "evaluate", "--config", smoke, "--checkpoint", "\(dir)/checkpoints/step-00000006.h5"]
                                   + args(overrides))
        XCTAssertEqual(evaluated.status, 0, evaluated.output)
        // "test loss 1.3860  test accuracy 25.00%  (128 samples)"
        let printed = evaluated.output.components(separatedBy: "test accuracy ").last ?? ""
        let single = Double(printed.prefix { $0 != "%" }) ?? -1
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let last = try JSONSerialization.jsonObject(with: Data(lines.last { $0.contains("test_accuracy") }!.utf8)) as! [String: Any]
        let trained = last["test_accuracy"] as! Double
        print("batch norm, 2T+2U: test accuracy \(trained * 100)% in the job, \(single)% from asymml evaluate")
        XCTAssertEqual(trained * 100, single, accuracy: 0.005)
    }

    /// Encrypted gradient sums (2 trusted + 2 untrusted) train the model one process trains.
    func testEncryptedGradientSumsTrainTheSameModel() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = dir + "/key"
        FileManager.default.createFile(atPath: key, contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        let overrides = ["asym.mode=asym", "train.max_steps=4", "train.threads=1", "data.shuffle=false"]
        let reference = try Trainer(config: try Config.load(path: smoke, overrides: overrides))
        for _ in 0..<4 { try reference.step() }
        let job = try runJob(mpirun(4, ["train", "--config", smoke, "--run-dir", dir]
                                    + args(overrides + ["cluster.trusted=2", "cluster.encrypt=true", "cluster.key_file=\(key)"])))
        XCTAssertEqual(job.status, 0, job.output)
        for (tensor, d) in try tensorDifferences("\(dir)/checkpoints/step-00000004.h5", reference.model) {
            XCTAssertLessThanOrEqual(d, 1e-6, tensor)
        }
    }

    /// Masked offload under MPI (1T+1U and 1T+2U, K = 2 and 4): untrusted ranks receive only
    /// noisy mixtures of K+2 per group of K samples, and the model equals plain training's.
    func testMaskedOffloadIsExactUnderMPI() throws {
        setThreads(1)
        let base = ["train.max_steps=4", "train.threads=1", "data.shuffle=false"]
        let plain = try Trainer(config: try Config.load(path: smoke, overrides: base))
        for _ in 0..<4 { try plain.step() }
        for (ranks, K) in [(2, 2), (3, 4)] {
            let dir = temporaryFolder(), audit = temporaryFolder()
            defer { for d in [dir, audit] { try? FileManager.default.removeItem(atPath: d) } }
            let job = try runJob(mpirun(ranks, ["train", "--config", smoke, "--run-dir", dir] + args(base + [
                "asym.mode=asym", "asym.mask={inputs_per_group: \(K), noise_scale: 3, spread: false}", "asym.audit=true", "asym.audit_dir=\(audit)"])))
            XCTAssertEqual(job.status, 0, job.output)
            guard job.status == 0 else { continue }
            let worst = try tensorDifferences("\(dir)/checkpoints/step-00000004.h5", plain.model).max { $0.1 < $1.1 }!
            print("masked, \(ranks - 1) untrusted, K = \(K): worst tensor against plain \(worst.0) \(worst.1)")
            XCTAssertLessThanOrEqual(worst.1, 1e-5, worst.0)
            // What crossed: mixtures, K+2 per group of K (batch 16 in groups of K, cut into shards).
            let first = try String(contentsOfFile: "\(audit)/audit-rank-1.jsonl", encoding: .utf8)
                .split(separator: "\n").first { $0.contains("\"residual\"") }!
            let expected = shardRange(16 / K * (K + 2), shards: ranks - 1, index: 0).count
            XCTAssertTrue(first.contains("\"shape\": [\(expected),"), "\(first)")
        }
    }

    /// Spread masking under MPI (1T+3U with K = 2, 1T+4U with K = 1, the groups rotating):
    /// the model equals plain training's per tensor, and no untrusted rank receives more than
    /// K combinations of any mask group. The trusted rank's placement audit names the mask
    /// group of every row it sent to each member; it must agree, message by message, with
    /// the row counts each untrusted rank logged itself, place every group's 3K combinations
    /// exactly once, and give no member more than K of a group.
    func testSpreadMaskingIsExactAndPlacesAtMostKPerRank() throws {
        setThreads(1)
        let base = ["train.max_steps=4", "train.threads=1", "data.shuffle=false"]
        let plain = try Trainer(config: try Config.load(path: smoke, overrides: base))
        for _ in 0..<4 { try plain.step() }
        // The private setting's layouts, with the checks on, both bases, at the default's noise.
        for (trusted, untrusted, K, basis) in [(1, 3, 2, "sample"), (1, 4, 1, "batch"), (2, 6, 1, "sample")] {
            let dir = temporaryFolder(), audit = temporaryFolder()
            defer { for d in [dir, audit] { try? FileManager.default.removeItem(atPath: d) } }
            let job = try runJob(mpirun(trusted + untrusted, ["train", "--config", smoke, "--run-dir", dir] + args(base + [
                "asym.mode=asym", "asym.mask={inputs_per_group: \(K), noise_scale: 30, spread: true}", "asym.verify=true",
                "asym.basis=\(basis)", "cluster.trusted=\(trusted)", "asym.audit=true", "asym.audit_dir=\(audit)"])))
            XCTAssertEqual(job.status, 0, job.output)
            guard job.status == 0 else { continue }
            let worst = try tensorDifferences("\(dir)/checkpoints/step-00000004.h5", plain.model).max { $0.1 < $1.1 }!
            print("spread masked, verified, \(trusted)T+\(untrusted)U, K = \(K), \(basis) basis: worst tensor against plain \(worst.0) \(worst.1)")
            XCTAssertLessThanOrEqual(worst.1, 1e-5, worst.0)
            // Every combination was checked, none came close to a false alarm.
            XCTAssertTrue(job.output.contains("integrity checks, largest discrepancy / allowed"), job.output)
            // The masking layer passes the untrusted group's own busy and idle time on.
            XCTAssertTrue(job.output.contains("(untrusted rank busy "), job.output)
            let metrics = try String(contentsOfFile: "\(dir)/metrics.jsonl", encoding: .utf8)
            XCTAssertTrue(metrics.contains("\"untrusted_compute_s\"") && metrics.contains("\"untrusted_idle_s\""), metrics)
            guard trusted == 1 else { continue }

            func entries(_ file: String) throws -> [[String: Any]] {
                try String(contentsOfFile: "\(audit)/\(file)", encoding: .utf8).split(separator: "\n").map {
                    try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
                }
            }
            let placed = try entries("placement-rank-0.jsonl")
            // Per layer pass the rows of every group over all members. A message's lines come
            // together, one per member in rank order; a pass crosses in up to three messages
            // (pieces of consecutive groups, each group in one piece), and evaluation sends
            // several passes at one step: a group seen again starts the next pass.
            var perPass: [(key: String, counts: [Int: Int])] = []
            for e in placed {
                let groups = e["groups"] as! [Int], rows = e["rows"] as! [Int], member = e["member"] as! Int
                XCTAssertEqual(groups.count, rows[1] - rows[0])
                let counts = Dictionary(grouping: groups, by: { $0 }).mapValues(\.count)
                XCTAssertLessThanOrEqual(counts.values.max() ?? 0, K, "member \(member) got more than K of a group: \(e)")
                let key = "\(e["step"]!) \(e["kind"]!) \(e["layer"]!)"
                if perPass.last?.key != key || counts.keys.contains(where: { perPass.last!.counts[$0, default: 0] + counts[$0]! > 3 * K }) {
                    perPass.append((key, [:]))
                }
                for (g, n) in counts { perPass[perPass.count - 1].counts[g, default: 0] += n }
            }
            XCTAssertGreaterThan(perPass.count, 8)
            for (key, counts) in perPass {
                // Training batches of 16: every group of K has all its 3K combinations placed once.
                if key.contains("wide share") { XCTAssertEqual(counts.count, 16 / K, key) }
                for (g, n) in counts { XCTAssertEqual(n, 3 * K, "\(key), group \(g)") }
            }
            // Each untrusted rank logged exactly the rows the placement sent it, message by message.
            for rank in 1...untrusted {
                let received = try entries("audit-rank-\(rank).jsonl").filter {
                    ["residual", "output gradient (wide share)"].contains($0["kind"] as? String ?? "")
                }.map { "\($0["kind"]!) \($0["layer"]!) \(($0["shape"] as! [Int])[0])" }
                let sent = placed.filter { $0["member"] as! Int == rank }.map {
                    "\($0["kind"]!) \($0["layer"]!) \(($0["rows"] as! [Int])[1] - ($0["rows"] as! [Int])[0])"
                }
                XCTAssertEqual(received, sent, "untrusted rank \(rank)")
                XCTAssertGreaterThan(received.count, 8)
            }
        }
    }

    /// Verified offload under MPI: each injected fault kind, on 1T+2U and on 1T+1U, ends the
    /// job naming the rank, layer, kind and step; under `recompute` the faulty rank is
    /// excluded (on 1T+1U the trusted rank goes on alone) and the job ends with the weights of
    /// an honest verified run.
    func testInjectedFaultsAreCaughtUnderMPI() throws {
        let base = ["asym.mode=asym", "asym.verify=true", "train.max_steps=6", "train.threads=1"]
        let honest = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: honest) }
        let run = try runJob(mpirun(3, ["train", "--config", smoke, "--run-dir", honest] + args(base)))
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertFalse(run.output.contains("integrity check failed"), "false alarm: \(run.output)")
        let reference = try Trainer(config: try Config.load(path: smoke, overrides: base))
        try Checkpoint.load("\(honest)/checkpoints/step-00000006.h5", into: reference)
        let kinds = ["flip", "scale", "zero", "replay", "grad"]
        let faults = kinds.flatMap { [(3, "2:\($0):2"), (2, "1:\($0):3")] }
        for (ranks, fault) in faults {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let job = try runJob(mpirun(ranks, ["train", "--config", smoke, "--run-dir", dir, "--inject-fault", fault] + args(base)))
            let rank = fault.prefix(1)
            let line = job.output.split(separator: "\n").first { $0.contains("integrity check failed") } ?? ""
            print("\(ranks - 1) untrusted, --inject-fault \(fault): exit \(job.status): \(line)")
            XCTAssertNotEqual(job.status, 0, fault)
            XCTAssertTrue(line.contains("rank \(rank) (untrusted), step"), "\(fault): \(job.output)")
        }
        for (ranks, fault) in faults {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let job = try runJob(mpirun(ranks, ["train", "--config", smoke, "--run-dir", dir, "--inject-fault", fault]
                                        + args(base + ["asym.on_verify_failure=recompute"])))
            XCTAssertEqual(job.status, 0, job.output)
            XCTAssertTrue(job.output.contains("excluded for the rest of the run"), job.output)
            let worst = try tensorDifferences("\(dir)/checkpoints/step-00000006.h5", reference.model).max { $0.1 < $1.1 }!
            print("recompute, \(ranks - 1) untrusted, \(fault): worst tensor against the honest run \(worst.0) \(worst.1)")
            XCTAssertLessThanOrEqual(worst.1, 1e-5, worst.0)
        }
    }

    /// A private run stopped on 1T+3U resumes on 2T+6U and on 1T+4U and ends where plain
    /// training does (the masks are fresh per message, so nothing of them is checkpointed).
    func testPrivateRunResumesOnAnotherLayout() throws {
        setThreads(1)
        let base = ["train.threads=1", "data.shuffle=false", "train.checkpoint_every=2"]
        let plain = try Trainer(config: try Config.load(path: smoke, overrides: base + ["train.max_steps=6"]))
        for _ in 0..<6 { try plain.step() }
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let private_ = ["asym.mode=asym", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}", "asym.verify=true"]
        for (step, trusted, untrusted) in [(2, 1, 3), (4, 2, 6), (6, 1, 4)] {
            let job = try runJob(mpirun(trusted + untrusted, ["train", "--config", smoke, "--run-dir", dir, "--resume", "auto"]
                                        + args(base + private_ + ["train.max_steps=\(step)", "cluster.trusted=\(trusted)"])))
            XCTAssertEqual(job.status, 0, job.output)
            if step > 2 { XCTAssertTrue(job.output.contains("at step \(step - 2)"), job.output) }
        }
        let worst = try tensorDifferences("\(dir)/checkpoints/step-00000006.h5", plain.model).max { $0.1 < $1.1 }!
        print("private run on 1T+3U, resumed on 2T+6U, then 1T+4U: worst tensor against plain after 6 steps \(worst.0) \(worst.1)")
        XCTAssertLessThanOrEqual(worst.1, 1e-5, worst.0)
    }

    /// The private setting (spread masking with the checks) catches every result fault before
    /// anything is decoded: under `abort` the job ends naming the rank; under `recompute` the
    /// trusted rank recomputes the combinations and excludes the rank. A spread group needs
    /// three members: on 1T+4U the other three go on masked; on 1T+3U the two left are
    /// released and the trusted rank computes the split layers itself. Either way the model
    /// ends where plain training does.
    func testPrivateSettingCatchesEveryFaultUnderBothPolicies() throws {
        setThreads(1)
        let base = ["asym.mode=asym", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}", "asym.verify=true",
                    "train.max_steps=6", "train.threads=1"]
        let plain = try Trainer(config: try Config.load(path: smoke, overrides: ["train.max_steps=6", "train.threads=1"]))
        for _ in 0..<6 { try plain.step() }
        for kind in ["flip", "scale", "zero", "replay", "grad"] {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let job = try runJob(mpirun(4, ["train", "--config", smoke, "--run-dir", dir, "--inject-fault", "2:\(kind):2"] + args(base)))
            let line = job.output.split(separator: "\n").first { $0.contains("integrity check failed") } ?? ""
            print("private 1T+3U, abort, \(kind): exit \(job.status): \(line)")
            XCTAssertNotEqual(job.status, 0, kind)
            XCTAssertTrue(line.contains("rank 2 (untrusted), step 2"), "\(kind): \(job.output)")
            for untrusted in [3, 4] {
                let dir = temporaryFolder()
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let job = try runJob(mpirun(1 + untrusted, ["train", "--config", smoke, "--run-dir", dir, "--inject-fault", "2:\(kind):2"]
                                            + args(base + ["asym.on_verify_failure=recompute"])))
                XCTAssertEqual(job.status, 0, job.output)
                XCTAssertTrue(job.output.contains("rank 2 (untrusted) excluded for the rest of the run"), job.output)
                XCTAssertEqual(job.output.contains("the split layers run on this trusted rank from now on"), untrusted == 3, job.output)
                let worst = try tensorDifferences("\(dir)/checkpoints/step-00000006.h5", plain.model).max { $0.1 < $1.1 }!
                print("private 1T+\(untrusted)U, recompute, \(kind): worst tensor against plain \(worst.0) \(worst.1)")
                XCTAssertLessThanOrEqual(worst.1, 1e-5, "1T+\(untrusted)U \(kind): \(worst.0)")
            }
        }
    }

    /// An honest run of the private default raises no false alarm: fmnist-cnn as shipped
    /// (spread masking, every combination checked before it is decoded, `abort` on failure)
    /// on real Fashion-MNIST (its first 2,048 training images, to keep the suite short), 2
    /// epochs on 1 trusted + 3 untrusted ranks (64 steps). It must end, learn, and report how
    /// close honest results came to their tolerances.
    func testHonestVerifiedRunRaisesNoFalseAlarm() throws {
        guard FileManager.default.fileExists(atPath: DataSource.defaultFashionMNIST + "/train-images-idx3-ubyte")
                || FileManager.default.fileExists(atPath: DataSource.defaultFashionMNIST + "/train-images-idx3-ubyte.gz") else {
            throw XCTSkip("Fashion-MNIST is not installed (make deps installs dataset-fashion-mnist)")
        }
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = try runJob(mpirun(4, ["train", "--config", fmnistCNN, "--run-dir", dir] + args([
            "data.train_samples=2048", "train.epochs=2", "train.threads=1"])),
                             timeout: 600)
        XCTAssertEqual(job.status, 0, job.output)
        XCTAssertFalse(job.output.contains("integrity check failed"), "false alarm: \(job.output)")
        let summary = job.output.split(separator: "\n").filter { $0.contains("done:") || $0.contains("integrity checks") }
        print(summary.joined(separator: "\n"))
        XCTAssertTrue(summary.contains { $0.contains("largest discrepancy / allowed") }, job.output)
        let accuracy = try job.output.firstMatch(of: Regex<(Substring, Substring)>("steps in .*test accuracy ([0-9.]+)%"))
            .flatMap { Double($0.1) }
        XCTAssertGreaterThan(accuracy ?? 0, 55, job.output)  // 64.7% here; chance is 10%
    }

    /// A wrapper between the masking layer and the transport (residual noise, which may run
    /// under spread masking when the checks are off) passes each piece of a pass on with its
    /// rows' places: a piece sent without them landed at the start of each member's shard, and
    /// the backward pieces then read rows the forward pass never wrote (the job ended on a NaN
    /// share).
    func testResidualNoiseUnderSpreadMaskingKeepsThePieces() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = try runJob(mpirun(4, ["train", "--config", smoke, "--run-dir", dir] + args([
            "train.max_steps=4", "train.threads=1", "asym.mode=asym", "asym.verify=false",
            "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}", "asym.residual_noise={std: 0.5, clip: 1}"])))
        XCTAssertEqual(job.status, 0, job.output)
        XCTAssertTrue(job.output.contains("done: 4 steps"), job.output)
    }

    /// The trusted rank's peak memory stays small (vgg-cifar, a few steps on a small synthetic
    /// set, one thread): the enclave is the small machine. Measured 167 MB trusted against
    /// 170 MB tee-only (both about 380 MB before the liveness arena, docs/DESIGN.md §10, which
    /// shrank tee-only too). Bounds: 5% over tee-only catches any buffer the split adds back
    /// (per-layer R, Y or dX would cost 37-44 MB), and 200 MB catches the arena undone.
    func testTrustedPeakMemoryStaysWithinTeeOnly() throws {
        let vgg = repoRoot + "/configs/vgg-cifar.yaml"
        let base = ["train.max_steps=3", "train.threads=1", "data.synthetic_train=256", "data.synthetic_test=64"]
        func peaks(_ ranks: Int, _ mode: String, privateDefault: Bool = false) throws -> [Int] {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let setting = privateDefault ? [] : ["asym.mask=off", "asym.verify=false"]
            let job = try runJob(mpirun(ranks, ["train", "--config", vgg, "--run-dir", dir] + args(base + ["asym.mode=\(mode)"] + setting)),
                                 timeout: 300)
            XCTAssertEqual(job.status, 0, job.output)
            let line = job.output.split(separator: "\n").first { $0.hasPrefix("peak memory:") } ?? ""
            print("\(mode), \(ranks) ranks: \(line)")
            return line.split(separator: " ").compactMap { Int($0) }
        }
        let tee = try peaks(1, "tee-only"), asym = try peaks(2, "asym")
        XCTAssertEqual(tee.count, 1); XCTAssertEqual(asym.count, 2)
        guard let teeOnly = tee.first, let trusted = asym.first else { return }
        XCTAssertLessThanOrEqual(Double(trusted), 1.05 * Double(teeOnly), "trusted \(trusted) MB against tee-only \(teeOnly) MB")
        XCTAssertLessThanOrEqual(trusted, 200, "trusted \(trusted) MB")
        // The private default on 1T+3U: measured 198 MB against 168 (1.18x; the goal is 1.2x).
        // The masking layer sends a pass in three pieces through one message buffer, the reply
        // landing over each piece (about one batch of the largest R or Y, 17 MB); at a step end
        // the buffer holds the members' wide-share sum (18.6 MB). 1.25x catches either undone:
        // a pass in one piece (+33 MB) or a reply buffer of its own (+17 MB).
        let masked = try peaks(4, "asym", privateDefault: true)
        XCTAssertEqual(masked.count, 2)
        if let privateTrusted = masked.first {
            XCTAssertLessThanOrEqual(Double(privateTrusted), 1.25 * Double(trusted), "private trusted \(privateTrusted) MB against \(trusted) MB")
        }
    }

    /// A sealed gradient message opens only as the message it was: a flipped byte, a replay
    /// (an older message) or another sender's message fail, naming the sender.
    func testSealedMessagesRejectTamperingAndReplays() throws {
        let key = SymmetricKey(size: .bits256)
        let alice = SecureChannel(key: key, rank: 0), bob = SecureChannel(key: key, rank: 1)
        let values: [Float] = [1, -2, 3.5, 1e-3]
        let sum = UnsafeMutablePointer<Float>.allocate(capacity: 4)
        defer { sum.deallocate() }
        sum.initialize(repeating: 0, count: 4)
        let first = try values.withUnsafeBufferPointer { try alice.seal($0.baseAddress!, count: 4, sequence: 0) }
        let second = try values.withUnsafeBufferPointer { try alice.seal($0.baseAddress!, count: 4, sequence: 1) }
        try bob.open(first, from: 0, sequence: 0, addingTo: sum, count: 4)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: sum, count: 4)), values)
        var flipped = second
        flipped[flipped.startIndex + 5] ^= 0x10
        for (name, message, sequence, sender) in [("flipped byte", flipped, UInt64(1), 0), ("replay", first, 1, 0),
                                                  ("wrong sender", second, 1, 2)] {
            XCTAssertThrowsError(try bob.open(message, from: sender, sequence: sequence, addingTo: sum, count: 4), name) { error in
                XCTAssertTrue("\(error)".contains("from trusted rank \(sender) failed authentication"), "\(error)")
            }
        }
    }
}
