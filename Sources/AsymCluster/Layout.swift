import AsymKernels
import AsymModel

/// A rank's part in the job.
package enum Role: String {
    case trusted, untrusted
}

/// Which world ranks are trusted and which untrusted, and who serves whom (docs/DESIGN.md §4).
package struct ClusterLayout: Equatable {
    package let trusted: [Int]
    package let untrusted: [Int]
    package let mode: Mode

    /// Roles by rank range (`cluster.trusted`) or, when any rank was given `--role`, from
    /// every rank's own role (MPMD launches). Only asym mode has work for untrusted ranks:
    /// asking for them in another mode is a mistake in the launch, not something to ignore.
    package init(roles: [Role], mode: Mode) throws {
        let world = roles.count
        trusted = roles.indices.filter { roles[$0] == .trusted }
        untrusted = roles.indices.filter { roles[$0] == .untrusted }
        self.mode = mode
        if mode != .asym && !untrusted.isEmpty {
            throw ConfigError("asym.mode: \(mode) gives untrusted ranks nothing to do, but this launch has \(untrusted.count) (ranks \(untrusted.map(String.init).joined(separator: ", "))); use --set asym.mode=asym, or make every rank trusted (cluster.trusted=\(world), launch/local.sh -t \(world) -u 0)")
        }
        guard !trusted.isEmpty else {
            throw ConfigError("cluster: no trusted rank among the \(world); give cluster.trusted >= 1 or --role trusted to some ranks")
        }
        guard trusted[0] == 0 else {
            throw ConfigError("cluster: rank 0 must be trusted (it writes checkpoints and logs); launch the trusted ranks first")
        }
        if mode == .asym && untrusted.count < trusted.count {
            throw ConfigError("cluster: asym mode needs at least one untrusted rank per trusted rank, but the world of \(world) has \(trusted.count) trusted and \(untrusted.count) untrusted; start more ranks or lower cluster.trusted")
        }
    }

    /// Roles of a world of `size` ranks when they are assigned by rank range.
    package static func rolesByRange(size: Int, trusted: Int) throws -> [Role] {
        guard trusted <= size else {
            throw ConfigError("cluster.trusted: \(trusted) trusted ranks do not fit a world of \(size); start more ranks or lower cluster.trusted")
        }
        return (0..<size).map { $0 < trusted ? .trusted : .untrusted }
    }

    /// The untrusted world ranks serving trusted rank number `index`, in order: untrusted
    /// rank u serves trusted rank u mod T.
    package func group(ofTrusted index: Int) -> [Int] {
        untrusted.enumerated().filter { $0.offset % trusted.count == index }.map(\.element)
    }

    /// For an untrusted world rank: the trusted world rank it serves and its shard number.
    package func server(ofUntrusted rank: Int) -> (trusted: Int, shard: Int) {
        let u = untrusted.firstIndex(of: rank)!
        let t = u % trusted.count
        return (trusted[t], group(ofTrusted: t).firstIndex(of: rank)!)
    }

    package var summary: String {
        "\(trusted.count) trusted + \(untrusted.count) untrusted ranks, mode \(mode.rawValue)"
    }
}
