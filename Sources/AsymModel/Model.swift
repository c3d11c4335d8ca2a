import AsymKernels

/// A sequential model built from `model.layers`, with shapes checked layer by layer.
package final class Model {
    package let layers: [Layer]
    package let inputShape: [Int]
    package let classes: Int
    let scratch = Scratch()
    /// Transient outputs and input gradients of the layers (docs/DESIGN.md §10); idle
    /// between steps.
    package let arena = ActivationArena()
    private var logitGrad: Tensor?

    package init(_ config: ModelConfig) throws {
        inputShape = config.input
        var shape = config.input
        var built: [Layer] = []
        for spec in config.layers {
            let layer = try Model.makeLayer(spec, input: shape, scratch: scratch)
            built.append(layer)
            shape = layer.outputShape
        }
        guard shape.count == 1 else {
            throw ConfigError("model.layers: the last layer must produce class scores [classes], but it produces \(shape); end with flatten and linear")
        }
        layers = built
        leaves = built.flatMap(\.leaves)
        parameters = leaves.flatMap(\.parameters)
        classes = shape[0]
        planLayouts()
        planMemory()
    }

    /// Keeps maps channel-blocked after plain oneDNN convolutions that pick that layout
    /// (`ConvBlocks`), so that oneDNN need not reorder them on every call: a convolution
    /// writes its output blocked when the next layer that depends on the layout is a plain
    /// convolution that picks the same layout for its input, or flatten (which copies the
    /// map into NCHW order, after pooling made it smaller), through ReLUs (element-wise) and
    /// max pooling (which has a blocked kernel). Every other map stays NCHW: the model's input
    /// and output, and what linear, batch norm, blocks, average pooling and split
    /// convolutions read. Gradients take their map's layout; the results are bit-identical
    /// to all-NCHW ones (`blockedMaps` off). Called again once convolutions split.
    func planLayouts() {
        for l in layers {
            (l as? Conv2dLayer)?.blocks = .nchw
            (l as? PoolLayer)?.block = 1
            (l as? FlattenLayer)?.block = 1
        }
        guard blockedMaps else { return }
        for (i, l) in layers.enumerated() {
            guard let conv = l as? Conv2dLayer, conv.split == nil else { continue }
            let between = layers[(i + 1)...].prefix { $0 is ReLULayer || ($0 as? PoolLayer)?.kind == .maxpool }
            let block = dnnlPreferredBlocks(conv.geometry, bias: conv.bias != nil).output
            guard block > 1 else { continue }
            switch layers.dropFirst(i + 1 + between.count).first {
            case let next as Conv2dLayer where next.split == nil && dnnlPreferredBlocks(next.geometry, bias: next.bias != nil).input == block:
                next.blocks.input = block
            case let flatten as FlattenLayer:
                flatten.block = block
            default:
                continue
            }
            conv.blocks.output = block
            for case let pool as PoolLayer in between { pool.block = block }
        }
    }

    /// Gives the layers their buffers by liveness (docs/DESIGN.md §10): every input gradient
    /// comes from the arena, and so does every output that no backward pass reads (the next
    /// layer keeps no copy of its input, directly or through layers that pass it on). ReLUs
    /// after the first layer work in place. Called again once convolutions split: a split
    /// convolution keeps U and V, not its input.
    func planMemory() {
        var outputKept = false  // the last layer's output goes to the loss only
        for (i, l) in layers.enumerated().reversed() {
            (l as? ReLULayer)?.inPlace = i > 0
            let inputKept = l.keepsInput || (l.passesInputThrough && outputKept)
            // The first layer's input is the caller's.
            l.memory = LayerMemory(arena: arena, transientOutput: !outputKept, ownsInput: i > 0 && !inputKept)
            outputKept = inputKept
        }
    }

    static func makeLayer(_ s: LayerSpec, input: [Int], scratch: Scratch) throws -> Layer {
        func needMap() throws {
            guard input.count == 3 else {
                throw ConfigError("layer '\(s.name)' (\(s.type.rawValue)) needs a [C, H, W] feature map, but gets \(input)")
            }
        }
        switch s.type {
        case .conv:
            try needMap()
            let conv = try Conv2dLayer(name: s.name, input: input, out: s.out, kernel: s.kernel, stride: s.stride,
                                       padding: s.padding, bias: s.bias, scratch: scratch)
            conv.placement = s.placement
            conv.rankOverride = s.rank
            return conv
        case .linear:
            let features = input.reduce(1, *)
            if let declared = s.inFeatures, declared != features {
                throw ConfigError("layer '\(s.name)': declares in: \(declared), but \(features) features flow into it (shape \(input))")
            }
            guard input.count == 1 else {
                throw ConfigError("layer '\(s.name)' (linear) gets a \(input) map; put a flatten layer before it")
            }
            return LinearLayer(name: s.name, input: input, out: s.out, bias: s.bias)
        case .relu:
            return ReLULayer(name: s.name, input: input)
        case .flatten:
            return FlattenLayer(name: s.name, input: input)
        case .maxpool, .avgpool:
            try needMap()
            return try PoolLayer(name: s.name, kind: s.type, input: input, kernel: s.kernel, stride: s.stride)
        case .globalAvgpool:
            try needMap()
            guard input[1] == input[2] else {
                throw ConfigError("layer '\(s.name)': global_avgpool needs a square map, got \(input[1])x\(input[2])")
            }
            return try PoolLayer(name: s.name, kind: s.type, input: input, kernel: input[1], stride: input[1])
        case .batchnorm:
            try needMap()
            return BatchNormLayer(name: s.name, input: input)
        case .basicBlock:
            try needMap()
            let block = try BasicBlock(name: s.name, input: input, out: s.out, stride: s.stride, scratch: scratch)
            for case let conv as Conv2dLayer in block.leaves {
                conv.placement = s.placement
                conv.rankOverride = s.rank
            }
            return block
        }
    }

    /// The layers that own parameters or state, in order (blocks expanded): checkpoint keys.
    package let leaves: [Layer]

    /// Every parameter in model order (kept, not rebuilt: the step reads it several times).
    package let parameters: [Parameter]

    package var parameterCount: Int { parameters.map(\.value.count).reduce(0, +) }

    /// Forward FLOPs per sample.
    package var forwardFlops: Int { layers.map(\.forwardFlops).reduce(0, +) }

    /// Initialises every layer in order from one seeded stream (`model.init` picks the scheme).
    package func initialize(seed: UInt64, scheme: InitScheme = .kaimingUniform) {
        var initializer = Initializer(seed: seed, scheme: scheme)
        for l in layers { l.initialize(&initializer) }
    }

    /// When set, forward and backward add each layer's trusted seconds to it.
    package var profile: LayerProfile?

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        var h = x
        for (i, l) in layers.enumerated() {
            let mark = profile?.start()
            h = l.forward(h, batch: batch, training: training)
            if let mark { profile!.stop(mark, layer: i, backward: false) }
        }
        return h
    }

    /// Backward from the gradient of the logits; accumulates every parameter's gradient.
    package func backward(_ dLogits: Tensor, batch: Int) {
        var d = dLogits
        for (i, l) in layers.enumerated().reversed() {
            let mark = profile?.start()
            let next = l.backward(d, batch: batch, needInputGradient: i > 0)
            if let mark { profile!.stop(mark, layer: i, backward: true) }
            guard let next else { break }
            d = next
        }
    }

    package func zeroGradients() { for p in parameters { p.grad.zero() } }

    /// One forward and backward pass on a batch. Returns the summed loss and the number of
    /// correct predictions; the loss is normalised by `normalizer` (the global batch size).
    @discardableResult
    package func trainingPass(images: Tensor, labels: UnsafePointer<Int32>, batch: Int, normalizer: Int) -> (lossSum: Double, correct: Int) {
        let logits = forward(images, batch: batch, training: true)
        let d = Tensor.reuse(logitGrad, shape: logits.shape)
        logitGrad = d
        let result = softmaxCrossEntropy(logits: logits.data, labels: labels, batch: batch, classes: classes,
                                         normalizer: normalizer, dLogits: d.data)
        backward(d, batch: batch)
        return result
    }

    /// A one-line-per-layer description: name, type, output shape, parameters.
    package var summary: String {
        var lines = ["input \(inputShape)"]
        for l in layers {
            let params = l.leaves.flatMap(\.parameters).map(\.value.count).reduce(0, +)
            lines.append("  \(l.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(l.kind.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)) -> \(l.outputShape)\(params > 0 ? "  \(params) params" : "")")
        }
        lines.append("parameters: \(parameterCount), forward MFLOP/sample: \(String(format: "%.1f", Double(forwardFlops) / 1e6))")
        return lines.joined(separator: "\n")
    }
}

import Foundation
