import Yams

/// What the key reference (docs/CONFIG.md) says about one key: a one-line meaning, and where
/// needed the layer types that use it, the short form it accepts, or its default in words
/// (where the value alone would mislead). Every accessor of `ConfigReader` takes one, so no
/// key can be read without a description.
struct KeyDoc: ExpressibleByStringInterpolation {
    let text: String
    /// Per-layer keys: the layer types that use the key (nil: every type).
    var layers: [LayerType]?
    /// A value that stands for the whole map (`asym.rank: 8`), and what it means.
    var shortForm: String?
    /// The default in words, shown instead of the fallback value.
    var shown: String?

    init(_ text: String, layers: [LayerType]? = nil, shortForm: String? = nil, shown: String? = nil) {
        self.text = text; self.layers = layers; self.shortForm = shortForm; self.shown = shown
    }
    init(stringLiteral text: String) { self.init(text) }
}

/// One key that a reader was asked for while it read a config (`ConfigReader.recorder`):
/// what the key reference is generated from.
package struct KeyRecord: Equatable {
    package enum Kind: Equatable {
        /// A value (scalar or list of numbers).
        case value
        /// A nested mapping inside a section (`asym.mask`), perhaps with a short form.
        case map
        /// A top-level section (`data`, `train`, ...).
        case section
        /// A list of mappings (`model.layers`).
        case list
    }
    /// The dotted path, list items written `[]`: `model.layers[].kernel`.
    package let path: String
    /// The path as read, list indices included: `model.layers.3.kernel`.
    package let concretePath: String
    package let kind: Kind
    /// The value type in words (`int`, `number`, `` `sgd` ``, ...).
    package let type: String
    /// What a config that omits the key gets, as YAML (`~` for none); nil when the key is
    /// required, a section or a list.
    package let fallback: String?
    /// The default as the reference shows it.
    package let shownDefault: String
    package let doc: String
    /// Per-layer keys: the layer types that use the key (nil: every type).
    package let layers: [LayerType]?
    package let shortForm: String?
    /// Per-layer keys: the type of the layer this reading belonged to.
    package let layerType: LayerType?
}

/// Collects the `KeyRecord`s of one parse (nil in ordinary parses: nothing is recorded).
final class KeyRecorder {
    var records: [KeyRecord] = []
}

/// Reads one YAML mapping with typed accessors. Every key that a reader did not ask for is
/// an error (`finish()`), so a typo never silently falls back to a default. Every accessor
/// takes the key's default and a description; with a `recorder`, each key asked for is
/// recorded (path, type, default, description): the key reference is generated from that.
struct ConfigReader {
    let path: String  // dotted key path of this mapping, "" at the top
    let mapping: Node.Mapping
    private var used: [String] = []
    /// The path with list items as `[]` (`model.layers[]`), for the recorder.
    let pattern: String
    let recorder: KeyRecorder?
    /// The type of the layer this reader reads (per-layer keys), for the recorder.
    var layerType: LayerType?

    init(_ node: Node, path: String, pattern: String? = nil, recorder: KeyRecorder? = nil) throws {
        guard let m = node.mapping else {
            throw ConfigError("\(path.isEmpty ? "config" : path): expected a mapping of keys")
        }
        self.path = path
        self.pattern = pattern ?? path
        self.recorder = recorder
        mapping = m
    }

    private func key(_ k: String) -> String { path.isEmpty ? k : "\(path).\(k)" }
    private func patternKey(_ k: String) -> String { pattern.isEmpty ? k : "\(pattern).\(k)" }

    private mutating func node(_ k: String) -> Node? {
        used.append(k)
        guard let n = mapping[k] else { return nil }
        if case .scalar(let s) = n, s.string == "~" || s.string == "null" || s.string.isEmpty { return nil }
        return n
    }

    /// Records key `k` (a no-op without a recorder). `fallback` is YAML; `shown` defaults to it.
    private func record(_ k: String, _ kind: KeyRecord.Kind, _ type: String, _ fallback: String?,
                        _ shown: String, _ doc: KeyDoc) {
        guard let recorder else { return }
        recorder.records.append(KeyRecord(path: patternKey(k), concretePath: key(k), kind: kind, type: type,
                                          fallback: fallback, shownDefault: doc.shown ?? shown, doc: doc.text,
                                          layers: doc.layers, shortForm: doc.shortForm, layerType: layerType))
    }
    private func record<T>(_ k: String, _ type: String, _ fallback: T?, _ doc: KeyDoc) {
        let yaml = fallback.map { "\($0)" } ?? "~"
        record(k, .value, type, yaml, fallback.map { "`\($0)`" } ?? "none", doc)
    }

    private mutating func readInt(_ k: String) throws -> Int? {
        guard let n = node(k) else { return nil }
        guard let v = n.int else { throw ConfigError("\(key(k)): expected an integer, got '\(n.string ?? "a collection")'") }
        return v
    }
    mutating func int(_ k: String, _ fallback: Int, _ doc: KeyDoc) throws -> Int {
        record(k, "int", fallback, doc)
        return try readInt(k) ?? fallback
    }
    /// An integer that may be absent (nil).
    mutating func int(_ k: String, _ doc: KeyDoc) throws -> Int? {
        record(k, "int", Int?.none, doc)
        return try readInt(k)
    }

    private mutating func readFloat(_ k: String) throws -> Double? {
        guard let n = node(k) else { return nil }
        guard let v = n.float else { throw ConfigError("\(key(k)): expected a number, got '\(n.string ?? "a collection")'") }
        guard v.isFinite else { throw ConfigError("\(key(k)): expected a finite number, got \(v)") }
        return v
    }
    mutating func float(_ k: String, _ fallback: Double, _ doc: KeyDoc) throws -> Double {
        record(k, "number", fallback, doc)
        return try readFloat(k) ?? fallback
    }

    mutating func bool(_ k: String, _ fallback: Bool, _ doc: KeyDoc) throws -> Bool {
        record(k, "bool", fallback, doc)
        guard let n = node(k) else { return fallback }
        guard let v = n.bool else { throw ConfigError("\(key(k)): expected true or false, got '\(n.string ?? "a collection")'") }
        return v
    }

    private mutating func readString(_ k: String) throws -> String? {
        guard let n = node(k) else { return nil }
        guard let v = n.string else { throw ConfigError("\(key(k)): expected a string") }
        return v
    }
    /// A string that may be absent (nil).
    mutating func string(_ k: String, _ doc: KeyDoc) throws -> String? {
        record(k, "string", String?.none, doc)
        return try readString(k)
    }
    /// A string that may be absent (nil) and that the caller checks against `accepted`.
    mutating func string(_ k: String, oneOf accepted: [String], _ doc: KeyDoc) throws -> String? {
        record(k, Self.names(accepted), String?.none, doc)
        return try readString(k)
    }
    mutating func string(_ k: String, _ fallback: String, _ doc: KeyDoc) throws -> String {
        record(k, "string", fallback, doc)
        return try readString(k) ?? fallback
    }

    private static func names(_ accepted: [String]) -> String { accepted.map { "`\($0)`" }.joined(separator: ", ") }

    private mutating func readChoice(_ k: String, _ fallback: String, _ accepted: [String]) throws -> String {
        let v = try readString(k) ?? fallback
        guard accepted.contains(v) else {
            throw ConfigError("\(key(k)): '\(v)' is not accepted; use one of: \(accepted.joined(separator: ", "))")
        }
        return v
    }

    /// A string that must be one of `accepted`.
    mutating func choice(_ k: String, _ fallback: String, _ accepted: [String], _ doc: KeyDoc) throws -> String {
        record(k, Self.names(accepted), fallback, doc)
        return try readChoice(k, fallback, accepted)
    }

    /// One of a closed set of names, parsed into its enum once, here.
    mutating func choice<E: RawRepresentable & CaseIterable>(_ k: String, _ fallback: E, _ doc: KeyDoc) throws -> E where E.RawValue == String {
        let accepted = E.allCases.map(\.rawValue)
        record(k, Self.names(accepted), fallback.rawValue, doc)
        return E(rawValue: try readChoice(k, fallback.rawValue, accepted))!
    }

    /// A required choice: a missing key is an error that lists the accepted names.
    mutating func choice<E: RawRepresentable & CaseIterable>(_ k: String, _ doc: KeyDoc) throws -> E where E.RawValue == String {
        let accepted = E.allCases.map(\.rawValue)
        record(k, .value, Self.names(accepted), nil, "required", doc)
        return E(rawValue: try readChoice(k, "", accepted))!
    }

    /// A number or a list of numbers.
    private mutating func floats(_ k: String) throws -> [Double]? {
        guard let n = node(k) else { return nil }
        if let v = n.float { return [v] }
        guard let seq = n.sequence else { throw ConfigError("\(key(k)): expected a number or a list of numbers") }
        return try seq.map {
            guard let v = $0.float else { throw ConfigError("\(key(k)): expected numbers, got '\($0.string ?? "a collection")'") }
            return v
        }
    }

    /// A list of integers (a single integer is a list of one).
    mutating func ints(_ k: String, _ fallback: [Int], _ doc: KeyDoc) throws -> [Int] {
        let yaml = "[\(fallback.map(String.init).joined(separator: ", "))]"
        record(k, .value, "list of ints", yaml, "`\(yaml)`", doc)
        return try floats(k).map { vs in
            try vs.map {
                // Int(exactly:) is nil for fractions, infinities, NaN and values past Int's range.
                guard let i = Int(exactly: $0) else { throw ConfigError("\(key(k)): expected integers, got \($0)") }
                return i
            }
        } ?? fallback
    }

    /// A list of finite numbers (a single number is a list of one).
    mutating func floats(_ k: String, _ fallback: [Double], _ doc: KeyDoc) throws -> [Double] {
        let yaml = "[\(fallback.map { "\($0)" }.joined(separator: ", "))]"
        record(k, .value, "list of numbers", yaml, "`\(yaml)`", doc)
        guard let values = try floats(k) else { return fallback }
        if let bad = values.first(where: { !$0.isFinite }) {
            throw ConfigError("\(key(k)): expected finite numbers, got \(bad)")
        }
        return values
    }

    /// A top-level section (absent means all defaults).
    mutating func child(_ k: String, _ doc: KeyDoc) throws -> ConfigReader {
        record(k, .section, "map", nil, "", doc)
        return try nested(node(k) ?? Node([(Node, Node)]()), k)
    }

    /// The raw node, for a value that the caller parses; `type` says what it may be.
    mutating func raw(_ k: String, type: String, _ doc: KeyDoc) -> Node? {
        record(k, .value, type, "~", "none", doc)
        return node(k)
    }

    /// The raw node of a nested map (read with `nested`), which may accept a short form
    /// (`doc.shortForm`). Absent means the defaults of its keys unless `doc.shown` says otherwise.
    mutating func map(_ k: String, _ doc: KeyDoc) -> Node? {
        record(k, .map, doc.shortForm == nil ? "map" : "map or short form", "{}", "its keys' defaults", doc)
        return node(k)
    }

    /// A reader of `node`, the value of this reader's key `k` (from `map` or `child`).
    func nested(_ node: Node, _ k: String) throws -> ConfigReader {
        try ConfigReader(node, path: key(k), pattern: patternKey(k), recorder: recorder)
    }

    /// A list of mappings.
    mutating func list(_ k: String, _ doc: KeyDoc) throws -> [ConfigReader] {
        record(k, .list, "list of maps", nil, doc.shown ?? "none", doc)
        guard let n = node(k) else { return [] }
        guard let seq = n.sequence else { throw ConfigError("\(key(k)): expected a list") }
        return try seq.enumerated().map {
            try ConfigReader($1, path: "\(key(k)).\($0)", pattern: "\(patternKey(k))[]", recorder: recorder)
        }
    }

    /// Fails on any key this reader was not asked for, listing the accepted ones.
    func finish() throws {
        for (k, _) in mapping {
            let name = k.string ?? "?"
            if !used.contains(name) {
                throw ConfigError("\(key(name)): unknown key; accepted keys here: \(used.joined(separator: ", "))")
            }
        }
    }
}

/// Applies one `key.path=value` override to a YAML tree. The value is parsed as YAML, so
/// `--set data.normalize=[0.5,0.5]` and `--set train.epochs=3` both work. List items are
/// addressed by index (`model.layers.2.out=64`). Type checks happen when the tree is read.
func applyOverride(_ assignment: String, to root: inout Node) throws {
    guard let eq = assignment.firstIndex(of: "="), eq != assignment.startIndex else {
        throw ConfigError("--set \(assignment): expected key.path=value")
    }
    let keys = assignment[..<eq].split(separator: ".").map(String.init)
    let text = String(assignment[assignment.index(after: eq)...])
    let value: Node
    do { value = try Yams.compose(yaml: text) ?? Node("") } catch {
        throw ConfigError("--set \(assignment): the value is not valid YAML")
    }
    func set(_ node: inout Node, _ rest: ArraySlice<String>, _ done: String) throws {
        guard let k = rest.first else { node = value; return }
        let here = done.isEmpty ? k : "\(done).\(k)"
        switch node {
        case .mapping(var m):
            var child = m[k] ?? Node([(Node, Node)]())
            try set(&child, rest.dropFirst(), here)
            m[Node(k)] = child
            node = .mapping(m)
        case .sequence(var s):
            guard let i = Int(k), s.indices.contains(i) else {
                throw ConfigError("--set \(assignment): \(done) is a list of \(s.count); '\(k)' is not an index in it")
            }
            try set(&s[i], rest.dropFirst(), here)
            node = .sequence(s)
        case .scalar where done == "asym.mask":
            // `mask: off` and a key of it set: masking on, with that key (the more specific wins).
            var child = Node([(Node, Node)]())
            try set(&child, rest, done)
            node = child
        case .scalar:
            throw ConfigError("--set \(assignment): \(done) is a value, not a mapping")
        }
    }
    try set(&root, keys[...], "")
}
