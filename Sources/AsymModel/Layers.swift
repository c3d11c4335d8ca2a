import AsymKernels
import AsymSplit

/// A trainable tensor with its gradient and optimizer state.
package final class Parameter {
    /// "weight" or "bias" (PyTorch's names, used as checkpoint keys).
    package let name: String
    package let value: Tensor
    package let grad: Tensor
    /// SGD momentum buffer; `hasMomentum` is false until the first step fills it.
    package let momentum: Tensor
    package var hasMomentum = false

    init(_ name: String, shape: [Int]) {
        self.name = name
        value = Tensor(shape: shape)
        grad = Tensor(shape: shape)
        momentum = Tensor(shape: shape)
    }
}

/// Non-trainable state saved with the model (batch norm's running statistics).
package final class StateBuffer {
    package let name: String
    package let value: Tensor
    init(_ name: String, shape: [Int], fill: Float = 0) {
        self.name = name
        value = Tensor(shape: shape)
        value.fill(fill)
    }
}

/// Where a layer in a model takes its buffers from (docs/DESIGN.md §10).
package struct LayerMemory {
    package let arena: ActivationArena
    /// No backward pass reads this layer's output: it may share a buffer with other layers' outputs.
    package let transientOutput: Bool
    /// Nothing reads this layer's input once its forward pass is done: forward may overwrite it.
    package let ownsInput: Bool
}

/// One layer of a model. Shapes exclude the batch dimension.
///
/// `forward` returns a tensor reused from step to step. On its own (`memory` nil) a layer
/// owns it, and it stays valid until the layer's next forward. In a model, outputs that no
/// backward pass reads and every input gradient share the model's arena: each stays valid
/// until the next layer's forward (backward) pass is done with it. A layer remembers what its
/// `backward` needs of the forward pass (its input when `keepsInput`), and `backward` returns
/// the gradient of the input (nil when `needInputGradient` is false, e.g. for the first layer).
package protocol Layer: AnyObject {
    var name: String { get }
    var kind: LayerType { get }
    var inputShape: [Int] { get }
    var outputShape: [Int] { get }
    /// Layers with their own parameters or state: itself, or the parts of a block.
    var leaves: [Layer] { get }
    var parameters: [Parameter] { get }
    var buffers: [StateBuffer] { get }
    /// Batch norm's num_batches_tracked; nil for other layers.
    var batchesTracked: Int64? { get set }
    /// Forward multiply-adds times two, per sample.
    var forwardFlops: Int { get }
    /// Whether `backward` reads the input that `forward` got: its producer must keep it.
    var keepsInput: Bool { get }
    /// Whether `forward` returns its input's own buffer (flatten, an in-place ReLU): whoever
    /// needs its output kept needs its input kept.
    var passesInputThrough: Bool { get }
    /// Set by the model (nil: the layer owns its buffers, as the parts of a block do).
    var memory: LayerMemory? { get set }
    func initialize(_ initializer: inout Initializer)
    func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor
    func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor?
}

extension Layer {
    package var leaves: [Layer] { [self] }
    package var parameters: [Parameter] { [] }
    package var buffers: [StateBuffer] { [] }
    package var batchesTracked: Int64? { get { nil } set {} }
    package var forwardFlops: Int { 0 }
    package var keepsInput: Bool { false }
    package var passesInputThrough: Bool { false }
    package func initialize(_ initializer: inout Initializer) {}
}

/// A layer's output buffer: from the model's arena when no backward pass reads it (not the
/// input's buffer), else the layer's own `own`.
func outputBuffer(_ memory: LayerMemory?, _ own: inout Tensor?, shape: [Int], input: Tensor) -> Tensor {
    if let memory, memory.transientOutput { return memory.arena.tensor(shape: shape, avoiding: [input]) }
    let y = Tensor.reuse(own, shape: shape)
    own = y
    return y
}

/// A layer's input-gradient buffer: from the model's arena (not the output gradient's buffer),
/// else the layer's own `own`.
func gradientBuffer(_ memory: LayerMemory?, _ own: inout Tensor?, shape: [Int], outputGrad: Tensor) -> Tensor {
    if let memory { return memory.arena.tensor(shape: shape, avoiding: [outputGrad]) }
    let dx = Tensor.reuse(own, shape: shape)
    own = dx
    return dx
}

/// A grow-only byte buffer (ReLU masks, max-pooling argmaxes).
final class ByteBuffer {
    private(set) var bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    private var capacity = 1

    deinit { bytes.deallocate() }

    /// Room for at least `count` bytes (contents unspecified).
    func reserve(_ count: Int) -> UnsafeMutablePointer<UInt8> {
        if count > capacity {
            bytes.deallocate()
            bytes = .allocate(capacity: count)
            capacity = count
        }
        return bytes
    }
}

/// Weight initialisation from the project's seeded RNG (`model.init`).
///
/// `kaiming_uniform` is PyTorch's default for Conv2d and Linear: weights uniform in
/// +-sqrt(6 / ((1 + a^2) fan_in)) with a = sqrt(5), i.e. +-1/sqrt(fan_in), and biases uniform
/// in +-1/sqrt(fan_in). `kaiming_normal` is He et al.'s N(0, 2 / fan_in) with zero biases.
package struct Initializer {
    package var rng: RNG
    package let scheme: InitScheme

    package init(seed: UInt64, scheme: InitScheme) {
        rng = RNG(seed: seed, stream: 1)
        self.scheme = scheme
    }

    mutating func weight(_ t: Tensor, fanIn: Int) {
        if scheme == .kaimingNormal {
            let std = (2 / Float(fanIn)).squareRoot()
            for i in 0..<t.count { t[i] = rng.normal() * std }
        } else {
            uniform(t, bound: 1 / Float(fanIn).squareRoot())
        }
    }

    mutating func bias(_ t: Tensor, fanIn: Int) {
        if scheme == .kaimingNormal { t.zero() } else { uniform(t, bound: 1 / Float(fanIn).squareRoot()) }
    }

    private mutating func uniform(_ t: Tensor, bound: Float) {
        for i in 0..<t.count { t[i] = (2 * rng.uniform() - 1) * bound }
    }
}

@inline(__always) func batched(_ shape: [Int], _ batch: Int) -> [Int] { [batch] + shape }

// MARK: - Convolution

package final class Conv2dLayer: Layer {
    package let name: String
    package let kind = LayerType.conv
    package let geometry: ConvGeometry
    package let weight: Parameter
    package let bias: Parameter?
    package let inputShape: [Int], outputShape: [Int]
    let scratch: Scratch
    /// The config's placement and rank overrides (asym mode).
    package var placement: LayerPlacement.Side?
    package var rankOverride: Int?
    /// Set in asym mode when this convolution is split between trusted and untrusted sides.
    package var split: SplitConvolution?
    /// The layouts of its input and output maps, and of their gradients (`Model.planLayouts`).
    package internal(set) var blocks = ConvBlocks.nchw
    package var memory: LayerMemory?
    private var input: Tensor?
    private var output: Tensor?
    private var inputGrad: Tensor?

    init(name: String, input: [Int], out: Int, kernel: Int, stride: Int, padding: Int, bias: Bool, scratch: Scratch) throws {
        let g = ConvGeometry(inChannels: input[0], height: input[1], width: input[2], outChannels: out,
                             kernel: kernel, stride: stride, padding: padding)
        guard input[1] + 2 * padding >= kernel, input[2] + 2 * padding >= kernel else {
            throw ConfigError("layer '\(name)': kernel \(kernel) does not fit its \(input[1])x\(input[2]) input (padding \(padding))")
        }
        self.name = name
        geometry = g
        weight = Parameter("weight", shape: [out, input[0], kernel, kernel])
        self.bias = bias ? Parameter("bias", shape: [out]) : nil
        inputShape = input
        outputShape = [out, g.outHeight, g.outWidth]
        self.scratch = scratch
    }

    package var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    package var forwardFlops: Int { geometry.forwardFlops }
    /// A split convolution keeps U and V of its input instead (its untrusted share has R).
    package var keepsInput: Bool { split == nil }

    package func initialize(_ initializer: inout Initializer) {
        initializer.weight(weight.value, fanIn: geometry.patchSize)
        if let bias { initializer.bias(bias.value, fanIn: geometry.patchSize) }
    }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        let shape = batched(outputShape, batch)
        if let split {
            let into = memory.flatMap { $0.transientOutput ? $0.arena.tensor(shape: shape, avoiding: [x]) : nil }
            return split.forward(x, batch: batch, weight: weight.value, bias: bias?.value, training: training, into: into,
                                 overwritingInput: memory?.ownsInput == true)
        }
        input = x
        let y = outputBuffer(memory, &output, shape: shape, input: x)
        conv2dForward(geometry, x: x.data, batch: batch, weight: weight.value.data, bias: bias?.value.data,
                      y: y.data, scratch: scratch, blocks: blocks)
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        if let split {
            let into = memory?.arena.tensor(shape: batched(inputShape, batch), avoiding: [dy])
            return split.backward(dy, batch: batch, weight: weight.value, weightGrad: weight.grad, biasGrad: bias?.grad, into: into)
        }
        let dx = needInputGradient ? gradientBuffer(memory, &inputGrad, shape: batched(inputShape, batch), outputGrad: dy) : nil
        conv2dBackward(geometry, x: input!.data, batch: batch, weight: weight.value.data, dy: dy.data,
                       dWeight: weight.grad.data, dBias: bias?.grad.data, dx: dx?.data, scratch: scratch, blocks: blocks)
        return dx
    }
}

// MARK: - Linear

package final class LinearLayer: Layer {
    package let name: String
    package let kind = LayerType.linear
    package let inFeatures: Int, outFeatures: Int
    package let weight: Parameter
    package let bias: Parameter?
    package let inputShape: [Int], outputShape: [Int]
    package var memory: LayerMemory?
    private var input: Tensor?
    private var output: Tensor?
    private var inputGrad: Tensor?

    init(name: String, input: [Int], out: Int, bias: Bool) {
        self.name = name
        inFeatures = input.reduce(1, *)
        outFeatures = out
        weight = Parameter("weight", shape: [out, inFeatures])
        self.bias = bias ? Parameter("bias", shape: [out]) : nil
        inputShape = input
        outputShape = [out]
    }

    package var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    package var forwardFlops: Int { 2 * inFeatures * outFeatures }
    package var keepsInput: Bool { true }

    package func initialize(_ initializer: inout Initializer) {
        initializer.weight(weight.value, fanIn: inFeatures)
        if let bias { initializer.bias(bias.value, fanIn: inFeatures) }
    }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        input = x
        let y = outputBuffer(memory, &output, shape: [batch, outFeatures], input: x)
        linearForward(x: x.data, batch: batch, inFeatures: inFeatures, outFeatures: outFeatures,
                      weight: weight.value.data, bias: bias?.value.data, y: y.data)
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        let dx = needInputGradient ? gradientBuffer(memory, &inputGrad, shape: batched(inputShape, batch), outputGrad: dy) : nil
        linearBackward(x: input!.data, batch: batch, inFeatures: inFeatures, outFeatures: outFeatures,
                       weight: weight.value.data, dy: dy.data, dWeight: weight.grad.data,
                       dBias: bias?.grad.data, dx: dx?.data)
        return dx
    }
}

// MARK: - Activation, flatten

package final class ReLULayer: Layer {
    package let name: String
    package let kind = LayerType.relu
    package let inputShape: [Int]
    package var outputShape: [Int] { inputShape }
    package var memory: LayerMemory?
    private var output: Tensor?
    private var inputGrad: Tensor?
    /// Bit i set where output i was positive: all that backward needs (in the order of the
    /// map's values, whatever its layout).
    private let mask = ByteBuffer()
    /// Set when the split convolution before it applies the ReLU in its merge: forward then
    /// passes the (already rectified) input through.
    package var fused = false
    /// Set when its input is its own to overwrite (the model's layers after the first, whose
    /// input is the caller's; a block's): forward rectifies the input in place, and backward
    /// masks dY in place (dY belongs to the next layer, which is done with it). Otherwise both
    /// get buffers of their own.
    package var inPlace = false

    init(name: String, input: [Int]) { self.name = name; inputShape = input }

    package var passesInputThrough: Bool { fused || inPlace }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        var y = x
        if !fused {
            if !inPlace { y = Tensor.reuse(output, shape: x.shape); output = y }
            reluForward(x.data, y.data, count: x.count)
        }
        if training { reluMask(y.data, mask.reserve((y.count + 7) / 8), count: y.count) }
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        var dx = dy
        if !passesInputThrough { dx = Tensor.reuse(inputGrad, shape: dy.shape); inputGrad = dx }
        reluBackward(mask: mask.bytes, dy: dy.data, dx: dx.data, count: dy.count)
        return dx
    }
}

/// Flatten changes only the per-sample shape: an NCHW buffer already is [batch, C*H*W]. A
/// channel-blocked map (`Model.planLayouts`) is copied into NCHW order, its gradient back.
package final class FlattenLayer: Layer {
    package let name: String
    package let kind = LayerType.flatten
    package let inputShape: [Int]
    package var outputShape: [Int] { [inputShape.reduce(1, *)] }
    package var memory: LayerMemory?
    /// The channel block of its input map (1: NCHW).
    package internal(set) var block = 1
    private var output: Tensor?
    private var inputGrad: Tensor?

    init(name: String, input: [Int]) { self.name = name; inputShape = input }

    package var passesInputThrough: Bool { block == 1 }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        guard block > 1 else { return x }
        let y = outputBuffer(memory, &output, shape: batched(outputShape, batch), input: x)
        convertChannelBlocks(x.data, y.data, batch: batch, channels: inputShape[0], positions: outputShape[0] / inputShape[0],
                             from: block, to: 1)
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        guard block > 1 else { return dy }
        let dx = gradientBuffer(memory, &inputGrad, shape: batched(inputShape, batch), outputGrad: dy)
        convertChannelBlocks(dy.data, dx.data, batch: batch, channels: inputShape[0], positions: outputShape[0] / inputShape[0],
                             from: 1, to: block)
        return dx
    }
}

// MARK: - Pooling

package final class PoolLayer: Layer {
    package let name: String
    package let kind: LayerType  // .maxpool, .avgpool or .globalAvgpool
    package let geometry: PoolGeometry
    package let inputShape: [Int], outputShape: [Int]
    package var memory: LayerMemory?
    /// The channel block of its maps (max pooling only; `Model.planLayouts`).
    package internal(set) var block = 1
    private var output: Tensor?
    private var inputGrad: Tensor?
    private let argmax = ByteBuffer()

    init(name: String, kind: LayerType, input: [Int], kernel: Int, stride: Int) throws {
        guard kernel <= input[1], kernel <= input[2] else {
            throw ConfigError("layer '\(name)': pooling window \(kernel) does not fit its \(input[1])x\(input[2]) input")
        }
        guard kind != .maxpool || kernel <= maxPoolLargestKernel else {
            throw ConfigError("layer '\(name)': max pooling windows go up to \(maxPoolLargestKernel), not \(kernel)")
        }
        self.name = name
        self.kind = kind
        geometry = PoolGeometry(channels: input[0], height: input[1], width: input[2], kernel: kernel, stride: stride)
        inputShape = input
        outputShape = [input[0], geometry.outHeight, geometry.outWidth]
    }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        let y = outputBuffer(memory, &output, shape: batched(outputShape, batch), input: x)
        if kind == .maxpool {
            maxPoolForward(geometry, x: x.data, batch: batch, y: y.data, argmax: training ? argmax.reserve(y.count) : nil, block: block)
        } else {
            avgPoolForward(geometry, x: x.data, batch: batch, y: y.data)
        }
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        let dx = gradientBuffer(memory, &inputGrad, shape: batched(inputShape, batch), outputGrad: dy)
        if kind == .maxpool {
            maxPoolBackward(geometry, dy: dy.data, argmax: argmax.bytes, batch: batch, dx: dx.data, block: block)
        } else {
            avgPoolBackward(geometry, dy: dy.data, batch: batch, dx: dx.data)
        }
        return dx
    }
}

// MARK: - Batch norm

package final class BatchNormLayer: Layer {
    package let name: String
    package let kind = LayerType.batchnorm
    package let geometry: BatchNormGeometry
    package let gamma: Parameter, beta: Parameter
    package let runningMean: StateBuffer, runningVar: StateBuffer
    package var batchesTracked: Int64? = 0
    package let inputShape: [Int]
    package var outputShape: [Int] { inputShape }
    package var memory: LayerMemory?
    private var output: Tensor?
    private var xhat: Tensor?
    private var inputGrad: Tensor?
    private let invStd: Tensor

    init(name: String, input: [Int]) {
        self.name = name
        inputShape = input
        geometry = BatchNormGeometry(channels: input[0], positions: input.dropFirst().reduce(1, *))
        gamma = Parameter("weight", shape: [input[0]])
        beta = Parameter("bias", shape: [input[0]])
        runningMean = StateBuffer("running_mean", shape: [input[0]])
        runningVar = StateBuffer("running_var", shape: [input[0]], fill: 1)
        invStd = Tensor(shape: [input[0]])
    }

    package var parameters: [Parameter] { [gamma, beta] }
    package var buffers: [StateBuffer] { [runningMean, runningVar] }
    package var forwardFlops: Int { 4 * inputShape.reduce(1, *) }

    package func initialize(_ initializer: inout Initializer) {
        gamma.value.fill(1); beta.value.zero()
        runningMean.value.zero(); runningVar.value.fill(1)
        batchesTracked = 0
    }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        let y = outputBuffer(memory, &output, shape: x.shape, input: x)
        if training {
            let h = Tensor.reuse(xhat, shape: x.shape)
            xhat = h
            batchNormTrainForward(geometry, x: x.data, batch: batch, gamma: gamma.value.data, beta: beta.value.data,
                                  runningMean: runningMean.value.data, runningVar: runningVar.value.data,
                                  xhat: h.data, invStd: invStd.data, y: y.data)
            batchesTracked! += 1
        } else {
            batchNormEvalForward(geometry, x: x.data, batch: batch, gamma: gamma.value.data, beta: beta.value.data,
                                 runningMean: runningMean.value.data, runningVar: runningVar.value.data, y: y.data)
        }
        return y
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        let dx = gradientBuffer(memory, &inputGrad, shape: dy.shape, outputGrad: dy)
        batchNormBackward(geometry, dy: dy.data, batch: batch, gamma: gamma.value.data, xhat: xhat!.data,
                          invStd: invStd.data, dGamma: gamma.grad.data, dBeta: beta.grad.data, dx: dx.data)
        return needInputGradient ? dx : nil
    }
}

// MARK: - Residual basic block

/// ResNet's basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), where the
/// shortcut is the identity, or a 1x1 convolution plus batch norm when the shape changes.
/// Its parts are named `<block>.conv1`, `<block>.bn1`, ..., `<block>.shortcut.conv`.
package final class BasicBlock: Layer {
    package let name: String
    package let kind = LayerType.basicBlock
    package let inputShape: [Int], outputShape: [Int]
    let conv1: Conv2dLayer, bn1: BatchNormLayer, relu1: ReLULayer
    let conv2: Conv2dLayer, bn2: BatchNormLayer
    let shortcutConv: Conv2dLayer?, shortcutBN: BatchNormLayer?
    let outRelu: ReLULayer
    package var memory: LayerMemory?
    private var sum: Tensor?
    private var inputGrad: Tensor?

    init(name: String, input: [Int], out: Int, stride: Int, scratch: Scratch) throws {
        self.name = name
        inputShape = input
        conv1 = try Conv2dLayer(name: "\(name).conv1", input: input, out: out, kernel: 3, stride: stride, padding: 1,
                                bias: false, scratch: scratch)
        bn1 = BatchNormLayer(name: "\(name).bn1", input: conv1.outputShape)
        relu1 = ReLULayer(name: "\(name).relu1", input: conv1.outputShape)
        relu1.inPlace = true  // on bn1's output
        conv2 = try Conv2dLayer(name: "\(name).conv2", input: conv1.outputShape, out: out, kernel: 3, stride: 1,
                                padding: 1, bias: false, scratch: scratch)
        bn2 = BatchNormLayer(name: "\(name).bn2", input: conv2.outputShape)
        if stride != 1 || input[0] != out {
            let sc = try Conv2dLayer(name: "\(name).shortcut.conv", input: input, out: out, kernel: 1, stride: stride,
                                     padding: 0, bias: false, scratch: scratch)
            shortcutConv = sc
            shortcutBN = BatchNormLayer(name: "\(name).shortcut.bn", input: sc.outputShape)
        } else {
            shortcutConv = nil
            shortcutBN = nil
        }
        outputShape = conv2.outputShape
        outRelu = ReLULayer(name: "\(name).relu2", input: outputShape)
        outRelu.inPlace = true  // on the sum
    }

    package var leaves: [Layer] {
        let shortcut: [Layer] = shortcutConv.map { [$0, shortcutBN!] } ?? []
        return [conv1, bn1, conv2, bn2] + shortcut
    }
    package var forwardFlops: Int { leaves.map(\.forwardFlops).reduce(0, +) }
    package var keepsInput: Bool { conv1.keepsInput || shortcutConv?.keepsInput == true }

    package func initialize(_ initializer: inout Initializer) { for l in leaves { l.initialize(&initializer) } }

    package func forward(_ x: Tensor, batch: Int, training: Bool) -> Tensor {
        var h = conv1.forward(x, batch: batch, training: training)
        h = bn1.forward(h, batch: batch, training: training)
        h = relu1.forward(h, batch: batch, training: training)
        h = conv2.forward(h, batch: batch, training: training)
        h = bn2.forward(h, batch: batch, training: training)
        var s = x
        if let sc = shortcutConv, let sb = shortcutBN {
            s = sb.forward(sc.forward(x, batch: batch, training: training), batch: batch, training: training)
        }
        let z = Tensor.reuse(sum, shape: h.shape)
        sum = z
        add(h.data, s.data, z.data, count: z.count)
        return outRelu.forward(z, batch: batch, training: training)
    }

    package func backward(_ dy: Tensor, batch: Int, needInputGradient: Bool) -> Tensor? {
        let dz = outRelu.backward(dy, batch: batch, needInputGradient: true)!
        var d = bn2.backward(dz, batch: batch, needInputGradient: true)!
        d = conv2.backward(d, batch: batch, needInputGradient: true)!
        d = relu1.backward(d, batch: batch, needInputGradient: true)!
        d = bn1.backward(d, batch: batch, needInputGradient: true)!
        let dMain = conv1.backward(d, batch: batch, needInputGradient: needInputGradient)
        let dShort: Tensor?
        if let sc = shortcutConv, let sb = shortcutBN {
            let ds = sb.backward(dz, batch: batch, needInputGradient: true)!
            dShort = sc.backward(ds, batch: batch, needInputGradient: needInputGradient)
        } else {
            dShort = needInputGradient ? dz : nil
        }
        guard needInputGradient, let dMain, let dShort else { return nil }
        let dx = gradientBuffer(memory, &inputGrad, shape: dMain.shape, outputGrad: dy)
        add(dMain.data, dShort.data, dx.data, count: dx.count)
        return dx
    }
}
