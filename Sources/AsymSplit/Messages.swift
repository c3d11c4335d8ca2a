import AsymKernels

/// The only tensors that may cross to the untrusted side.
///
/// Their initialisers are internal to this module, and the untrusted executor's API
/// accepts nothing else: raw inputs, labels, logits and principal components (U, V) have no
/// path to an untrusted rank, by construction rather than by convention.
package struct Residual {
    /// Index of the split layer (in model order).
    package let layer: Int
    /// R = X - U V, [batch, C, H, W].
    package let tensor: Tensor
    package let batch: Int
    /// The samples this message covers (a micro-batch, or the whole batch).
    package let samples: Range<Int>
    /// Where the trusted side wants Y_U, [batch, Cout, Ho, Wo] (its own memory, never sent;
    /// nil: the executor's buffer for the layer). Executors may ignore it.
    package let output: Tensor?
    /// Which untrusted group member gets which rows (spread masking); nil: contiguous shards.
    package let placement: RowPlacement?
    /// Whether a backward pass follows (a training pass) or not (evaluation): a layer that
    /// checks the results it receives keeps what the weight-gradient share's check needs.
    package let training: Bool
    /// Whether the reply is to land in `tensor`'s own buffer (which must hold it): an executor
    /// that sends the message lets the reply in only once the message has left and the caller
    /// asks for the result (`finishForward`), so the caller may read the message until then.
    package let replyOverwrites: Bool
    /// Set when this message is one piece of a layer pass that crosses piece by piece
    /// (`tensor` then holds this piece's rows only, numbered from 0).
    package let piece: PieceOfPass?
    init(layer: Int, tensor: Tensor, batch: Int, samples: Range<Int>? = nil, output: Tensor? = nil,
         placement: RowPlacement? = nil, training: Bool = true, replyOverwrites: Bool = false, piece: PieceOfPass? = nil) {
        self.layer = layer; self.tensor = tensor; self.batch = batch; self.samples = samples ?? 0..<batch
        self.output = output; self.placement = placement; self.training = training; self.replyOverwrites = replyOverwrites
        self.piece = piece
    }

    /// This whole residual batch as it crosses after a privacy layer transformed it (masked
    /// combinations, added noise): `tensor` has one row per message row, and the rows go out
    /// by `placement`. Only a residual can become another one, so nothing else (inputs,
    /// labels, principal components) can be turned into a message.
    /// `output`: where the trusted side wants the reply (nil: the executor's own buffer);
    /// `replyOverwrites`: the reply lands in the message's own buffer instead; `piece`: `tensor`
    /// is one piece of the pass (nil: this message's own, so that a wrapper that transforms a
    /// piece again keeps where its rows sit).
    package func crossing(as tensor: Tensor, placement: RowPlacement?, output: Tensor? = nil, replyOverwrites: Bool = false,
                          piece: PieceOfPass? = nil) -> Residual {
        Residual(layer: layer, tensor: tensor, batch: tensor.shape[0], output: replyOverwrites ? tensor : output, placement: placement,
                 training: training, replyOverwrites: replyOverwrites, piece: piece ?? self.piece)
    }
}

/// The gradient of a split layer's output, dL/dY, [batch, Cout, Ho, Wo].
package struct OutputGradient {
    package let layer: Int
    package let tensor: Tensor
    package let batch: Int
    /// The samples this message covers (a micro-batch, or the whole batch).
    package let samples: Range<Int>
    /// Where the trusted side wants dX, [batch, C, H, W] (as `Residual.output`).
    package let inputGrad: Tensor?
    /// Which untrusted group member gets which rows (spread masking); nil: contiguous shards.
    package let placement: RowPlacement?
    /// Whether the weight-gradient share is accumulated in double and returned as a float
    /// high and low part (spread masking: each member's share is ~sigma^2 times the gradient
    /// and cancels only in the sum over members, `conv2dWeightGradientWide`).
    package let wideShares: Bool
    /// Whether dX is to land in `tensor`'s own buffer (as `Residual.replyOverwrites`).
    package let replyOverwrites: Bool
    /// Set when this message is one piece of a layer pass (as `Residual.piece`).
    package let piece: PieceOfPass?
    init(layer: Int, tensor: Tensor, batch: Int, samples: Range<Int>? = nil, inputGrad: Tensor? = nil,
         placement: RowPlacement? = nil, wideShares: Bool = false, replyOverwrites: Bool = false, piece: PieceOfPass? = nil) {
        self.layer = layer; self.tensor = tensor; self.batch = batch; self.samples = samples ?? 0..<batch
        self.inputGrad = inputGrad; self.placement = placement; self.wideShares = wideShares; self.replyOverwrites = replyOverwrites
        self.piece = piece
    }

    /// This whole output-gradient batch as it crosses after a privacy layer transformed it
    /// (as `Residual.crossing`).
    package func crossing(as tensor: Tensor, placement: RowPlacement?, wideShares: Bool = false, inputGrad: Tensor? = nil,
                          replyOverwrites: Bool = false, piece: PieceOfPass? = nil) -> OutputGradient {
        OutputGradient(layer: layer, tensor: tensor, batch: tensor.shape[0], inputGrad: replyOverwrites ? tensor : inputGrad,
                       placement: placement, wideShares: wideShares, replyOverwrites: replyOverwrites, piece: piece ?? self.piece)
    }
}

/// Where the rows of one message go (spread masking, docs/DESIGN.md §9): rows `parts[j]` to
/// untrusted group member j, instead of `shardRange`'s equal contiguous shards. `groups[r]`
/// is the mask group of row r (for the trusted side's audit of the placement).
package struct RowPlacement: Equatable {
    package let parts: [Range<Int>]
    package let groups: [Int]
    package init(parts: [Range<Int>], groups: [Int]) { self.parts = parts; self.groups = groups }
}

/// Where a message that is one piece of a layer pass (spread masking through one buffer,
/// Masking.swift) puts its rows in each member's shard of the pass: member j's rows of this
/// piece (its part of the placement) sit from `first[j]` on, which the wire header's `first`
/// carries, so a member keeps its forward rows for the backward pass and returns one share
/// over all of them. The masking layer numbers a member's rows from the last piece down: the
/// first piece to arrive reaches the end of the shard and sizes the member's buffers for the
/// whole pass at once.
package struct PieceOfPass: Equatable {
    package let first: [Int]
    /// Whether this is the pass's first piece.
    package let opens: Bool
    package init(first: [Int], opens: Bool) { self.first = first; self.opens = opens }
}

/// Samples [lo, hi) of shard `index` when `total` samples are cut into `shards` contiguous
/// parts whose boundaries are multiples of `alignment` (default `convChunkAlignment`, so that
/// a shard's convolutions chunk its samples exactly as the whole batch would: the same
/// samples give bit-identical results in every layout, see Conv2D.swift). The
/// ceil(total / alignment) blocks (the last may be short) are shared as evenly as possible,
/// shard sizes differing by at most one block; shards come in order and cover 0..<total.
/// With fewer blocks than shards some shards are empty (the leading ones).
package func shardRange(_ total: Int, shards: Int, index: Int, alignment: Int = convChunkAlignment) -> Range<Int> {
    precondition(shards > 0 && (0..<shards).contains(index) && alignment > 0 && total >= 0)
    let blocks = (total + alignment - 1) / alignment
    let lo = min(total, blocks * index / shards * alignment)
    let hi = min(total, blocks * (index + 1) / shards * alignment)
    return lo..<hi
}


/// What an untrusted side must know of one split layer: its shapes. Weights are replicated
/// on every rank (the same optimizer step runs everywhere), so they are not messages.
package struct SplitLayerInfo: Equatable {
    package let layer: Int
    package let geometry: ConvGeometry
    package let hasBias: Bool
    package init(layer: Int, geometry: ConvGeometry, hasBias: Bool) {
        self.layer = layer; self.geometry = geometry; self.hasBias = hasBias
    }
}

/// The untrusted half of every split convolution: residual convolutions forward, and
/// input gradients plus its weight-gradient share backward.
///
/// Two-phase calls let the trusted side compute its low-rank share in between: `start*`
/// hands the work over (a non-blocking send under MPI), `finish*` collects the result.
/// Executors that `pipelines` also take micro-batches: several `start*` calls for one layer,
/// each for its samples, then `finish*(layer:samples:)` for each, in the same order.
///
/// The protocol has no default implementations: an executor states every answer, so a
/// missing one is a compile error. Wrappers (masking, residual noise, the attack's recorder)
/// conform to `ExecutorWrapper`, which passes every call on, and implement only what they
/// change: a wrapper cannot silently drop a call it forgot.
package protocol UntrustedExecutor: AnyObject {
    // Set-up and the step's end.

    /// Registers a split layer with the executor (its weights are replicated, read only).
    func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?)
    /// Gives the untrusted side the split layers' current weights and biases: on start (and
    /// resume) and after every optimizer step.
    func publishWeights() throws
    /// Hands this step's weight-gradient shares to `body`, one call per split layer and
    /// untrusted contributor, contributor after contributor (each one's layers in order, each
    /// share valid during its call only): the layer, its share (the weight's shape), the share's low-order
    /// part when it was computed wide (`OutputGradient.wideShares`: share + low is the double
    /// result; nil otherwise) and the samples of the local batch it covers, so that each can
    /// be verified before it enters any sum (docs/DESIGN.md §8). The executor then forgets them.
    func collectGradientShares(_ body: (_ layer: Int, _ share: UnsafeMutablePointer<Float>, _ low: UnsafePointer<Float>?,
                                        _ samples: Range<Int>) throws -> Void) throws

    // The layer passes.

    /// Whether `start*` accepts part of a batch (`Residual.samples`), several in flight.
    var pipelines: Bool { get }
    /// The untrusted ranks that share each message, which a message's `RowPlacement` must have
    /// one part for; nil where the untrusted side runs in this process and ignores placement.
    var members: Int? { get }
    /// Starts Y_U = conv(R, W) + b.
    func startForward(_ r: Residual)
    /// Returns Y_U for `layer` once the samples `samples` of it arrived (the whole batch's
    /// tensor, [batch, Cout, Ho, Wo]; other samples may still be in flight).
    func finishForward(layer: Int, samples: Range<Int>) -> Tensor
    /// Starts dX = conv_transpose(dY, W) and accumulates the share corr(R, dY) of dW.
    func startBackward(_ g: OutputGradient)
    /// Returns dX for `layer` ([batch, C, H, W]) once the samples `samples` of it arrived.
    func finishBackward(layer: Int, samples: Range<Int>) -> Tensor
    /// Starts dX = conv_transpose(dY, W) like `startBackward`, but keeps corr(R_s, dY_s) of
    /// every sample s apart instead of adding it to the share: the samples are then masked
    /// combinations of one whole group (masking without spread), and only the trusted side
    /// knows the weights that combine their correlations into the true share
    /// (AsymPrivacy/Masking.swift). `finishBackward` returns dX.
    func startBackwardPerSample(_ g: OutputGradient)
    /// The per-sample correlations of the last `startBackwardPerSample` for `layer`,
    /// [batch, Cout, C, k, k]; call it after `finishBackward`.
    func finishWeightShares(layer: Int) -> Tensor
    /// Lets pending transfers advance; the trusted side calls it between chunks of its own
    /// work (Open MPI moves a large message only while the sender is inside an MPI call).
    func progress()

    // Accounting and failures.

    /// Seconds the untrusted side spent computing since the last call (for the metrics).
    func takeComputeSeconds() -> Double
    /// The untrusted side's own compute and idle seconds in the last step, measured there
    /// (under MPI, the slowest group member's); nil where the executor cannot tell.
    var untrustedLoad: (compute: Double, idle: Double)? { get }
    /// Who computed sample `sample` of a batch of `batch` (for messages): "rank 2 (untrusted)".
    func source(ofSample sample: Int, batch: Int) -> String
    /// Stops trusting whoever computed these samples of a batch of `batch` (failed integrity
    /// checks under `recompute`): their work goes to the others, or to the trusted side when
    /// none is left. Returns what changed, for the log.
    func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String
}

extension UntrustedExecutor {
    /// Adds every share into `grads[layer]`. A layer in `splits` with `settings.verify` checks
    /// each share first, by the samples it covers, before it enters the sum (docs/DESIGN.md
    /// §8), and ends its checks once every share arrived.
    package func addGradientShares(into grads: [Int: Tensor], verifiedBy splits: [Int: SplitConvolution] = [:]) throws {
        try collectGradientShares { layer, share, low, samples in
            precondition(low == nil, "layer \(layer): a wide share reached the split layers (only masking asks for them)")
            if let split = splits[layer], split.settings.verify { split.verifyGradientShare(share, samples: samples) }
            accumulate(share, into: grads[layer]!.data, count: grads[layer]!.count)
        }
        for split in splits.values where split.settings.verify { split.finishGradientShareChecks() }
    }
}

/// An executor wrapped around another (masking, residual noise, the attack's recorder): every
/// call it does not implement itself goes to `inner` unchanged, by the extension below, so a
/// wrapper states only what it changes (and `pipelines`, where it takes whole batches only).
package protocol ExecutorWrapper: UntrustedExecutor {
    var inner: UntrustedExecutor { get }
}

extension ExecutorWrapper {
    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) { inner.register(info, weight: weight, bias: bias) }
    package func publishWeights() throws { try inner.publishWeights() }
    package func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?, Range<Int>) throws -> Void) throws {
        try inner.collectGradientShares(body)
    }
    package var pipelines: Bool { inner.pipelines }
    package var members: Int? { inner.members }
    package func startForward(_ r: Residual) { inner.startForward(r) }
    package func finishForward(layer: Int, samples: Range<Int>) -> Tensor { inner.finishForward(layer: layer, samples: samples) }
    package func startBackward(_ g: OutputGradient) { inner.startBackward(g) }
    package func finishBackward(layer: Int, samples: Range<Int>) -> Tensor { inner.finishBackward(layer: layer, samples: samples) }
    package func startBackwardPerSample(_ g: OutputGradient) { inner.startBackwardPerSample(g) }
    package func finishWeightShares(layer: Int) -> Tensor { inner.finishWeightShares(layer: layer) }
    package func progress() { inner.progress() }
    package func takeComputeSeconds() -> Double { inner.takeComputeSeconds() }
    package var untrustedLoad: (compute: Double, idle: Double)? { inner.untrustedLoad }
    package func source(ofSample sample: Int, batch: Int) -> String { inner.source(ofSample: sample, batch: batch) }
    package func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String {
        try inner.exclude(sourcesOfSamples: samples, batch: batch)
    }
}
