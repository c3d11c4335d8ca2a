import AsymModel
import Foundation
import XCTest
import Yams

/// docs/CONFIG.md is generated from the config reader (`Config.keyReference`): these tests
/// fail when the file is out of date, when the reader asks for a key the file does not list
/// (or the other way round), and when a documented default is not what the reader accepts.
/// `ASYMML_WRITE_DOCS=1` (what `make docs` sets) writes the file instead of comparing.
final class ConfigReferenceTests: XCTestCase {
    let docPath = repoRoot + "/docs/CONFIG.md"

    func testDocsAreCurrent() throws {
        let generated = try Config.keyReference
        if ProcessInfo.processInfo.environment["ASYMML_WRITE_DOCS"] == "1" {
            try generated.write(toFile: docPath, atomically: true, encoding: .utf8)
            return
        }
        let committed = (try? String(contentsOfFile: docPath, encoding: .utf8)) ?? ""
        guard committed != generated else { return }
        let (a, b) = (committed.components(separatedBy: "\n"), generated.components(separatedBy: "\n"))
        let line = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
        XCTFail("""
            docs/CONFIG.md is out of date with the config reader; run `make docs` (and commit the file). \
            First difference at line \(line + 1): file has '\(line < a.count ? a[line] : "<end>")', \
            the reader gives '\(line < b.count ? b[line] : "<end>")'
            """)
    }

    /// The keys in the tables of docs/CONFIG.md (the first column).
    private func documentedKeys() throws -> [String] {
        let text = try String(contentsOfFile: docPath, encoding: .utf8)
        return text.components(separatedBy: "\n").compactMap { line in
            guard line.hasPrefix("| `") else { return nil }
            let rest = line.dropFirst(3)
            return rest.firstIndex(of: "`").map { String(rest[..<$0]) }
        }
    }

    func testEveryRecordedKeyIsDocumentedOnce() throws {
        let records = try Config.keyRecords()
        let recorded = Set(records.filter { $0.kind != .section }.map(\.path))
        let documented = try documentedKeys()
        XCTAssertEqual(documented.count, Set(documented).count, "a key is listed twice in docs/CONFIG.md")
        XCTAssertEqual(Set(documented).subtracting(recorded), [], "documented keys that the reader does not ask for; run `make docs`")
        XCTAssertEqual(recorded.subtracting(documented), [], "keys the reader asks for that docs/CONFIG.md lacks; run `make docs`")
        XCTAssertEqual(recorded.count, try Config.keyReferenceRows().count)
        for r in records {
            XCTAssertFalse(r.doc.isEmpty, "\(r.path) has no description")
            XCTAssertFalse(r.shownDefault.isEmpty && r.kind != .section, "\(r.path) shows no default")
        }
        XCTAssertTrue(recorded.contains("train.checkpoint_epochs"))
        XCTAssertTrue(recorded.isSuperset(of: ["asym.mask.inputs_per_group", "asym.residual_noise.std", "asym.rank.tau",
                                               "optimizer.schedule.min_lr", "model.layers[].kernel"]))
        XCTAssertFalse(recorded.contains { $0.contains("layers.0") }, "per-layer keys appear once, as model.layers[].key")
    }

    /// The probe reaches every branch the reader has: every layer type, and inside every
    /// nested map (so none of their keys is missing from the reference).
    func testProbeReachesEveryBranch() throws {
        let records = try Config.keyRecords()
        XCTAssertEqual(Set(records.compactMap(\.layerType)), Set(LayerType.allCases), "the probe lacks a layer type")
        for map in records where map.kind == .map || map.kind == .section || map.kind == .list {
            let inside = map.path + (map.kind == .list ? "[]." : ".")
            XCTAssertTrue(records.contains { $0.path.hasPrefix(inside) }, "the probe does not reach into \(map.path)")
        }
        // Every key that the resolved YAML writes, for the probe and the shipped configs and
        // with each schedule, is a key of the reference.
        let recorded = Set(records.map(\.path))
        var configs = [try Config.parse(yaml: Config.referenceProbe)]
        for name in shippedConfigNames {
            configs.append(try Config.load(path: "\(repoRoot)/configs/\(name).yaml"))
        }
        configs += try ["step", "cosine"].map { try smokeConfig(["optimizer.schedule=\($0)"]) }
        configs.append(try smokeConfig(["data.normalize=[[0.5, 0.5], [0.2, 0.2]]", "data.path=/tmp", "data.train_samples=8",
                                        "train.max_steps=3", "cluster.key_file=k", "model.layers.8.rank=2",
                                        "model.layers.8.placement=split"]))
        for c in configs {
            for key in writtenKeys(try XCTUnwrap(Yams.compose(yaml: c.yaml)), "") {
                XCTAssertTrue(recorded.contains(key), "Config.yaml writes \(key), which the reference lacks")
            }
        }
    }

    private func writtenKeys(_ node: Node, _ path: String) -> [String] {
        if let m = node.mapping {
            return m.flatMap { k, v -> [String] in
                let p = path.isEmpty ? k.string! : "\(path).\(k.string!)"
                return [p] + writtenKeys(v, p)
            }
        }
        if let s = node.sequence, s.contains(where: { $0.mapping != nil }) {
            return s.flatMap { writtenKeys($0, path + "[]") }
        }
        return []
    }

    /// Setting each key to its documented default, as `--set key=default`, is accepted and
    /// changes nothing: the defaults in the reference are the reader's.
    func testEveryDefaultRoundTripsThroughSet() throws {
        let base = try Config.parse(yaml: Config.referenceProbe)
        let probe = try XCTUnwrap(Yams.compose(yaml: Config.referenceProbe))
        /// Whether the probe itself sets the key (then its default cannot be compared there).
        func probeSets(_ path: String) -> Bool {
            var node: Node? = probe
            for k in path.split(separator: ".").map(String.init) {
                if let i = Int(k), let s = node?.sequence { node = s.indices.contains(i) ? s[i] : nil } else { node = node?.mapping?[k] }
            }
            return node.map { $0.mapping?.isEmpty != true } ?? false
        }
        var checked = 0
        for r in try Config.keyRecords() where r.kind == .value || r.kind == .map {
            guard let fallback = r.fallback, !probeSets(r.concretePath) else { continue }
            let set = try Config.parse(yaml: Config.referenceProbe, overrides: ["\(r.concretePath)=\(fallback)"])
            XCTAssertEqual(set, base, "--set \(r.concretePath)=\(fallback) changes the config: the default is not the reader's")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 50)
        // Every documented key with a default is accepted through `Config.load` too (the smoke config).
        for r in try Config.keyRecords() where r.kind == .value && r.layerType == nil {
            guard let fallback = r.fallback else { continue }
            XCTAssertNoThrow(try smokeConfig(["\(r.path)=\(fallback)"]), r.path)
        }
    }

    func testTableDefaultsAreTheReaders() throws {
        let rows = Dictionary(uniqueKeysWithValues: try Config.keyReferenceRows().map { ($0.path, $0) })
        let c = Config()
        XCTAssertEqual(rows["data.batch_size"]?.shownDefault, "`\(c.data.batchSize)`")
        XCTAssertEqual(rows["optimizer.lr"]?.shownDefault, "`\(c.optimizer.lr)`")
        XCTAssertEqual(rows["model.input"]?.shownDefault, "`[\(c.model.input.map(String.init).joined(separator: ", "))]`")
        XCTAssertEqual(rows["train.checkpoint_epochs"]?.shownDefault, "`true`")
        XCTAssertEqual(rows["asym.mode"]?.first.type, "`plain`, `tee-only`, `asym`")
        XCTAssertEqual(rows["model.layers[].kernel"]?.shownDefault, "`3`; maxpool, avgpool: `2`")
        XCTAssertEqual(rows["model.layers[].stride"]?.shownDefault, "`1`; maxpool, avgpool: the kernel")
        XCTAssertEqual(rows["model.layers[].out"]?.shownDefault, "required")
        XCTAssertNotNil(rows["asym.rank"]?.first.shortForm)
        XCTAssertNotNil(rows["optimizer.schedule"]?.first.shortForm)
    }

    func testCheckpointEpochs() throws {
        XCTAssertTrue(try smokeConfig().train.checkpointEpochs)
        let off = try smokeConfig(["train.checkpoint_epochs=false"])
        XCTAssertFalse(off.train.checkpointEpochs)
        XCTAssertTrue(off.yaml.contains("checkpoint_epochs: false"), off.yaml)
        XCTAssertEqual(try Config.parse(yaml: off.yaml), off)
        let bad = errorMessage { _ = try smokeConfig(["train.checkpoint_epochs=sometimes"]) }
        XCTAssertTrue(bad.contains("train.checkpoint_epochs: expected true or false"), bad)
    }
}
