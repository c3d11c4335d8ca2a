import AsymIntegrity
import AsymKernels
import AsymSplit

extension AsymConfig {
    /// What a failed integrity check does in the layer that checks (`asym.on_verify_failure`).
    package var integrityPolicy: IntegrityPolicy { onVerifyFailure == .abort ? .report : .recompute }
}

/// Where one layer runs in asym mode.
package struct LayerPlacement {
    package enum Side: String, ConfigName { case trusted, split }
    package let layer: Layer
    package let side: Side
    /// For split convolutions: the rank limit and policy.
    package let settings: SplitSettings?
}

/// The placement rule of docs/DESIGN.md §2: the first convolution, batch norm, ReLU, pooling, the
/// classifier and the loss stay trusted; every other convolution is split. A layer's
/// `placement:` overrides the rule; its `rank:` overrides the rank policy.
package func placeLayers(_ model: Model, _ config: Config) throws -> [LayerPlacement] {
    var placements: [LayerPlacement] = []
    var seenConv = false
    var splitIndex = 0
    let a = config.asym
    for layer in model.leaves {
        guard let conv = layer as? Conv2dLayer else {
            placements.append(LayerPlacement(layer: layer, side: .trusted, settings: nil))
            continue
        }
        let isFirst = !seenConv
        seenConv = true
        let side: LayerPlacement.Side = conv.placement ?? (isFirst ? .trusted : .split)
        guard side == .split else {
            placements.append(LayerPlacement(layer: layer, side: .trusted, settings: nil))
            continue
        }
        let C = conv.geometry.inChannels
        var rank: Int
        var tau: Double?
        switch a.rank.policy {
        case .fixed: rank = a.rank.value
        case .energy: rank = a.rank.max; tau = a.rank.tau
        case .schedule: rank = min(a.rank.max, a.rank.value << min(splitIndex, 20))
        }
        if let r = conv.rankOverride {
            guard r >= 1 && r <= C else {
                throw ConfigError("layer '\(conv.name)': rank \(r) must lie in 1...\(C) (its input channels)")
            }
            rank = r
            tau = nil
        }
        rank = min(rank, C)
        splitIndex += 1
        placements.append(LayerPlacement(layer: layer, side: .split,
                                         settings: SplitSettings(maxRank: rank, tau: tau, iterations: a.svdIterations,
                                                                 // (with masking, the masking layer checks instead)
                                                                 basis: a.basis, verify: a.verify && a.maskGroup == 0,
                                                                 onFailure: a.integrityPolicy,
                                                                 microbatches: a.microbatches)))
    }
    return placements
}

extension Model {
    /// The convolutions that the placement splits, in order (their index is the wire's
    /// layer number), with their settings.
    package func splitConvolutions(_ config: Config) throws -> [(conv: Conv2dLayer, info: SplitLayerInfo, settings: SplitSettings)] {
        try placeLayers(self, config).filter { $0.side == .split }.enumerated().map { i, p in
            let conv = p.layer as! Conv2dLayer
            return (conv, SplitLayerInfo(layer: i, geometry: conv.geometry, hasBias: conv.bias != nil), p.settings!)
        }
    }

    /// Splits the convolutions that the placement puts on both sides, with `executor` as the
    /// untrusted half. Returns the split layers in order.
    @discardableResult
    package func enableSplit(_ config: Config, executor: UntrustedExecutor) throws -> [Conv2dLayer] {
        let split = try splitConvolutions(config).map { conv, info, settings in
            executor.register(info, weight: conv.weight.value, bias: conv.bias?.value)
            conv.split = SplitConvolution(info: info, settings: settings, executor: executor, scratch: scratch, arena: arena)
            return conv
        }
        // A ReLU right after a split convolution runs inside its merge (one pass fewer).
        for (conv, next) in zip(layers, layers.dropFirst()) {
            guard let split = (conv as? Conv2dLayer)?.split, let relu = next as? ReLULayer else { continue }
            split.fusedReLU = true
            relu.fused = true
        }
        planLayouts()
        planMemory()
        return split
    }

    /// For an executor that keeps no reference to a residual once its layer's forward pass
    /// ends (MPI sends it away): the split layers write R into the arena, over X where nothing
    /// reads X later, instead of into buffers of their own (docs/DESIGN.md §10).
    package func residualsLeave() {
        for case let conv as Conv2dLayer in leaves { conv.split?.residualsLeave = true }
    }
}
