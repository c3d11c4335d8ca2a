import Yams

// The key reference, docs/CONFIG.md, generated from the config reader: `Config.read` asks
// for every key with its default and a description (`ConfigReader`, `KeyDoc`); reading
// `referenceProbe` with a recorder lists them all. `make docs` writes the file and
// Tests/AsymModelTests/ConfigReferenceTests.swift fails when it is out of date.

extension Config {
    /// A config that reaches every key the reader asks for: every nested map given, empty
    /// (so its keys take their defaults), and one layer of every type.
    package static let referenceProbe = """
        model:
          input: [1, 8, 8]
          layers:
            - {type: conv, out: 4}
            - {type: batchnorm}
            - {type: relu}
            - {type: basic_block, out: 4}
            - {type: maxpool}
            - {type: avgpool}
            - {type: global_avgpool}
            - {type: flatten}
            - {type: linear, out: 10}
        optimizer: {schedule: {}}
        asym: {mask: {}, residual_noise: {}, rank: {}}

        """

    /// Every key the reader asks for while it reads `referenceProbe`, in reading order (a
    /// per-layer key once per layer).
    package static func keyRecords() throws -> [KeyRecord] {
        let recorder = KeyRecorder()
        let root = try Yams.compose(yaml: referenceProbe) ?? Node([(Node, Node)]())
        try Config.read(ConfigReader(root, path: "", recorder: recorder)).validate()
        return recorder.records
    }

    /// One row of the reference: a key with every reading of it.
    package struct KeyReferenceRow {
        package let path: String
        package let readings: [KeyRecord]
        package var first: KeyRecord { readings[0] }

        /// The default; for a per-layer key whose default depends on the type of the layers
        /// that use it, the default of most types, then the exceptions among those that use it.
        package var shownDefault: String {
            let using = readings.filter { r in first.layers?.contains { $0 == r.layerType } ?? true }
            if let one = using.first?.shownDefault, using.allSatisfy({ $0.shownDefault == one }) { return one }
            var count: [String: Int] = [:]
            for r in readings { count[r.shownDefault, default: 0] += 1 }
            let common = readings.map(\.shownDefault).max { count[$0]! < count[$1]! }!
            var order: [String] = []
            var types: [String: [String]] = [:]
            for r in using where r.shownDefault != common {
                if types[r.shownDefault] == nil { order.append(r.shownDefault) }
                types[r.shownDefault, default: []].append(r.layerType?.rawValue ?? "?")
            }
            return ([common] + order.map { "\(types[$0]!.joined(separator: ", ")): \($0)" }).joined(separator: "; ")
        }
    }

    /// The reference's rows, in reading order, one per key (sections are headings, not rows).
    package static func keyReferenceRows() throws -> [KeyReferenceRow] {
        var order: [String] = []
        var readings: [String: [KeyRecord]] = [:]
        for r in try keyRecords() where r.kind != .section {
            if readings[r.path] == nil { order.append(r.path) }
            readings[r.path, default: []].append(r)
        }
        return order.map { KeyReferenceRow(path: $0, readings: readings[$0]!) }
    }

    /// The markdown of docs/CONFIG.md.
    package static var keyReference: String {
        get throws {
            let records = try keyRecords()
            let rows = try keyReferenceRows()
            func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
            func meaning(_ r: KeyRecord) -> String {
                cell(r.doc + (r.shortForm.map { " Short form: \($0)." } ?? ""))
            }
            var out = """
                # Config keys

                <!-- Generated from the config reader (Sources/AsymModel/Config.swift) by `make docs`; do not edit. -->

                A config is a YAML file (`configs/` has examples). Every key but the few marked
                required has a default, so a config names only what it changes; a key that the
                reader does not know is an error that lists the keys accepted there.
                `--set key.path=value` overrides one key after the file is read; the value is YAML
                (`--set train.epochs=3`, `--set data.normalize=[0.5,0.5]`), and list items are
                addressed by index (`--set model.layers.2.out=64`). The resolved config (the file,
                then the overrides, then the defaults) is written to the run folder's `config.yaml`
                and into every checkpoint.

                This file is generated from the config reader: each key below is one that
                `Config.parse` asks for, with the default it falls back to. After changing the reader,
                run `make docs`; a test (Tests/AsymModelTests/ConfigReferenceTests.swift) fails while
                this file is out of date. \(rows.count) keys.

                """
            // Top-level values, then one table per section, then one per list of maps.
            var tables: [(title: String, doc: String, rows: [KeyReferenceRow])] = [("Top level", "", [])]
            for r in records where r.kind == .section {
                tables.append(("`\(r.path)`", r.doc, []))
                for row in rows where row.first.kind == .list && row.path.hasPrefix(r.path + ".") {
                    tables.append(("`\(row.path)[]`", row.first.doc, []))
                }
            }
            func table(of path: String) -> Int {
                if let list = path.range(of: "[]", options: .backwards) {
                    let name = "`\(path[..<list.upperBound])`"
                    return tables.firstIndex { $0.title == name }!
                }
                guard let dot = path.firstIndex(of: ".") else { return 0 }
                return tables.firstIndex { $0.title == "`\(path[..<dot])`" }!
            }
            for row in rows { tables[table(of: row.path)].rows.append(row) }

            for t in tables where !t.rows.isEmpty {
                out += "\n## \(t.title)\n\n"
                let perLayer = t.title.hasSuffix("[]`")
                if perLayer {
                    out += "Each entry of the list; `--set \(t.title.dropFirst().dropLast(3)).N.key=value` sets one. A key is "
                        + "accepted on every entry; the layer types column says which types use it.\n\n"
                    out += "| Key | Type | Default | Layer types | Meaning |\n|---|---|---|---|---|\n"
                } else {
                    if !t.doc.isEmpty { out += "\(t.doc)\n\n" }
                    out += "| Key | Type | Default | Meaning |\n|---|---|---|---|\n"
                }
                for row in t.rows {
                    let r = row.first
                    var line = "| `\(row.path)` | \(cell(r.type)) | \(cell(row.shownDefault)) |"
                    if perLayer { line += " \(r.layers.map { $0.map(\.rawValue).joined(separator: ", ") } ?? "all") |" }
                    out += line + " \(meaning(r)) |\n"
                }
            }
            return out
        }
    }
}
