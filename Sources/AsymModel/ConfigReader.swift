import Yams

/// Reads one YAML mapping with typed accessors. Every key that a reader did not ask for is
/// an error (`finish()`), so a typo never silently falls back to a default.
struct ConfigReader {
    let path: String  // dotted key path of this mapping, "" at the top
    let mapping: Node.Mapping
    private var used: [String] = []

    init(_ node: Node, path: String) throws {
        guard let m = node.mapping else {
            throw ConfigError("\(path.isEmpty ? "config" : path): expected a mapping of keys")
        }
        self.path = path
        mapping = m
    }

    private func key(_ k: String) -> String { path.isEmpty ? k : "\(path).\(k)" }

    private mutating func node(_ k: String) -> Node? {
        used.append(k)
        guard let n = mapping[k] else { return nil }
        if case .scalar(let s) = n, s.string == "~" || s.string == "null" || s.string.isEmpty { return nil }
        return n
    }

    mutating func int(_ k: String, _ fallback: Int) throws -> Int { try int(k) ?? fallback }
    mutating func int(_ k: String) throws -> Int? {
        guard let n = node(k) else { return nil }
        guard let v = n.int else { throw ConfigError("\(key(k)): expected an integer, got '\(n.string ?? "a collection")'") }
        return v
    }

    mutating func float(_ k: String, _ fallback: Double) throws -> Double { try float(k) ?? fallback }
    mutating func float(_ k: String) throws -> Double? {
        guard let n = node(k) else { return nil }
        guard let v = n.float else { throw ConfigError("\(key(k)): expected a number, got '\(n.string ?? "a collection")'") }
        return v
    }

    mutating func bool(_ k: String, _ fallback: Bool) throws -> Bool {
        guard let n = node(k) else { return fallback }
        guard let v = n.bool else { throw ConfigError("\(key(k)): expected true or false, got '\(n.string ?? "a collection")'") }
        return v
    }

    mutating func string(_ k: String) throws -> String? {
        guard let n = node(k) else { return nil }
        guard let v = n.string else { throw ConfigError("\(key(k)): expected a string") }
        return v
    }
    mutating func string(_ k: String, _ fallback: String) throws -> String { try string(k) ?? fallback }

    /// A string that must be one of `accepted`.
    mutating func choice(_ k: String, _ fallback: String, _ accepted: [String]) throws -> String {
        let v = try string(k, fallback)
        guard accepted.contains(v) else {
            throw ConfigError("\(key(k)): '\(v)' is not accepted; use one of: \(accepted.joined(separator: ", "))")
        }
        return v
    }

    /// One of a closed set of names, parsed into its enum once, here.
    mutating func choice<E: RawRepresentable & CaseIterable>(_ k: String, _ fallback: E) throws -> E where E.RawValue == String {
        let v = try choice(k, fallback.rawValue, E.allCases.map(\.rawValue))
        return E(rawValue: v)!
    }

    /// A required choice: a missing key is an error that lists the accepted names.
    mutating func choice<E: RawRepresentable & CaseIterable>(_ k: String) throws -> E where E.RawValue == String {
        E(rawValue: try choice(k, "", E.allCases.map(\.rawValue)))!
    }

    /// A number or a list of numbers.
    mutating func floats(_ k: String) throws -> [Double]? {
        guard let n = node(k) else { return nil }
        if let v = n.float { return [v] }
        guard let seq = n.sequence else { throw ConfigError("\(key(k)): expected a number or a list of numbers") }
        return try seq.map {
            guard let v = $0.float else { throw ConfigError("\(key(k)): expected numbers, got '\($0.string ?? "a collection")'") }
            return v
        }
    }

    mutating func ints(_ k: String) throws -> [Int]? {
        try floats(k).map { vs in
            try vs.map {
                guard $0 == $0.rounded() else { throw ConfigError("\(key(k)): expected integers") }
                return Int($0)
            }
        }
    }

    /// A nested mapping (absent means all defaults).
    mutating func child(_ k: String) throws -> ConfigReader {
        try ConfigReader(node(k) ?? Node([(Node, Node)]()), path: key(k))
    }

    /// The raw node, for values that may be a scalar or a mapping.
    mutating func raw(_ k: String) -> Node? { node(k) }

    /// A list of mappings.
    mutating func list(_ k: String) throws -> [ConfigReader] {
        guard let n = node(k) else { return [] }
        guard let seq = n.sequence else { throw ConfigError("\(key(k)): expected a list") }
        return try seq.enumerated().map { try ConfigReader($1, path: "\(key(k)).\($0)") }
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
        case .scalar:
            throw ConfigError("--set \(assignment): \(done) is a value, not a mapping")
        }
    }
    try set(&root, keys[...], "")
}
