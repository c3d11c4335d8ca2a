import CDNNL
import Dispatch
import Foundation

/// Convolution primitives on oneDNN, cached by shape, with the reorders between the caller's
/// NCHW / OIHW arrays and the blocked layouts (nChw16c, OIhw16i16o, ...) oneDNN picks.
///
/// oneDNN chooses its code at run time for the widest vector unit the CPU has (AVX-512 here,
/// AVX2 elsewhere; `ONEDNN_MAX_CPU_ISA` caps it, read once at first use), where OpenBLAS is
/// pinned to its Haswell kernels. Measured on the 2-core AVX-512 machine (oneDNN alone,
/// 8-sample chunks, primitive time): its blocked direct kernels ran 1.3-5x the rate of its
/// own NCHW im2col + GEMM path (design §10), so every primitive asks for the layouts it
/// likes (`format_tag_any`) and converts at its edges. A caller may hand over and take back
/// its maps channel-blocked (`ConvBlocks`) instead of NCHW: when that is the layout oneDNN
/// picked, the reorder of that operand is skipped (a model keeps the maps between its
/// convolutions that way, see `Model.planLayouts`).
///
/// Nothing is allocated per step: a primitive is built once per (pass, geometry, samples,
/// bias, map layouts, threads) and kept; the blocked copies and oneDNN's scratchpad live in grow-only
/// buffers shared by all primitives (calls run one at a time, under a lock). `allocations`
/// counts both, so a test can show that steady-state steps add none.
final class DNNLRuntime: @unchecked Sendable {
    static let shared = DNNLRuntime()

    private var engine: dnnl_engine_t?
    private var stream: dnnl_stream_t?
    private var cache: [DNNLConvolution.Key: DNNLConvolution?] = [:]
    private var buffers: [UnsafeMutableRawPointer?] = []
    private var capacities: [Int] = []
    private let lock = NSLock()
    /// Primitives built plus buffer growths, since the process started.
    private(set) var allocations = 0

    private init() {
        guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else {
            engine = nil
            return
        }
    }

    /// Runs `body` alone, with oneDNN's threads set to the kernels' thread count (an OpenMP
    /// setting of the calling thread, so it is set on every call).
    func exclusive<R>(_ body: () -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        omp_set_num_threads(Int32(kernelThreads))
        return body()
    }

    /// The primitive for these shapes, built on first use; nil when oneDNN cannot run it
    /// (the caller then uses the OpenBLAS path).
    func convolution(_ pass: ConvPass, _ g: ConvGeometry, samples: Int, bias: Bool = false,
                     blocks: ConvBlocks = .nchw) -> DNNLConvolution? {
        let key = DNNLConvolution.Key(pass: pass, geometry: g, samples: samples, bias: bias, blocks: blocks, threads: kernelThreads)
        if let known = cache[key] { return known }
        let built = engine.flatMap { DNNLConvolution(key, engine: $0, runtime: self) }
        if built != nil { allocations += 1 }
        cache[key] = .some(built)
        return built
    }

    /// Buffer `slot`, at least `bytes` long and 64-byte aligned (contents unspecified).
    func buffer(_ slot: Int, bytes: Int) -> UnsafeMutableRawPointer {
        while buffers.count <= slot { buffers.append(nil); capacities.append(0) }
        if capacities[slot] < bytes {
            buffers[slot]?.deallocate()
            buffers[slot] = .allocate(byteCount: bytes, alignment: 64)
            capacities[slot] = bytes
            allocations += 1
        }
        return buffers[slot]!
    }

    func run(_ primitive: dnnl_primitive_t, _ args: [dnnl_exec_arg_t]) {
        let status = args.withUnsafeBufferPointer { dnnl_primitive_execute(primitive, stream, Int32($0.count), $0.baseAddress) }
        precondition(status == dnnl_success, "oneDNN: a primitive built for these shapes failed to run (status \(status.rawValue))")
        dnnl_stream_wait(stream)
    }

    /// Runs a reorder (with its sum, if it has one) from `source` to `target`.
    func run(_ reorder: dnnl_primitive_t, from source: dnnl_memory_t, to target: dnnl_memory_t) {
        var pair = (dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: source), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: target))
        let status = withUnsafePointer(to: &pair) {
            $0.withMemoryRebound(to: dnnl_exec_arg_t.self, capacity: 2) { dnnl_primitive_execute(reorder, stream, 2, $0) }
        }
        precondition(status == dnnl_success, "oneDNN: a reorder built for these shapes failed to run (status \(status.rawValue))")
        dnnl_stream_wait(stream)
    }

    /// The vector unit oneDNN's kernels use in this process.
    var isa: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_sse41: "sse41"
        case dnnl_cpu_isa_avx: "avx"
        case dnnl_cpu_isa_avx2: "avx2"
        case dnnl_cpu_isa_avx2_vnni: "avx2_vnni"
        case dnnl_cpu_isa_avx512_core: "avx512_core"
        case dnnl_cpu_isa_avx512_core_vnni: "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core_bf16: "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_amx: "avx512_core_amx"
        default: "other"
        }
    }
}

/// The three passes of a convolution.
package enum ConvPass: Hashable, Sendable {
    case forward, backwardData, backwardWeights
}

/// One oneDNN convolution primitive for a fixed number of samples, and its operands.
final class DNNLConvolution {
    struct Key: Hashable {
        var pass: ConvPass, geometry: ConvGeometry, samples: Int, bias: Bool, blocks: ConvBlocks, threads: Int
    }

    /// How an operand meets the caller's array.
    enum Direction { case input, output, accumulate }

    /// One argument: `memory` in oneDNN's layout; when that differs from the caller's (or the
    /// result is added to the caller's array), `user` in the caller's layout and the reorder
    /// between them, through arena buffer `slot`.
    struct Operand {
        let arg: Int32
        let direction: Direction
        let memory: dnnl_memory_t
        var md: dnnl_memory_desc_t
        var user: dnnl_memory_t?
        var reorder: dnnl_primitive_t?
        let bytes: Int
        let slot: Int
    }

    let key: Key
    private let runtime: DNNLRuntime
    private var primitive: dnnl_primitive_t?
    private(set) var operands: [Operand] = []
    private var scratchpad: (memory: dnnl_memory_t, bytes: Int)?
    /// The execution arguments, rebuilt in place on every run.
    private var args: [dnnl_exec_arg_t] = []

    /// The arena slot of oneDNN's scratchpad (operands use 0..<operands.count).
    private static let scratchpadSlot = 4

    init?(_ key: Key, engine: dnnl_engine_t, runtime: DNNLRuntime) {
        self.key = key
        self.runtime = runtime
        let g = key.geometry, n = Int64(key.samples)
        let src: [Int64] = [n, Int64(g.inChannels), Int64(g.height), Int64(g.width)]
        let weights: [Int64] = [Int64(g.outChannels), Int64(g.inChannels), Int64(g.kernel), Int64(g.kernel)]
        let dst: [Int64] = [n, Int64(g.outChannels), Int64(g.outHeight), Int64(g.outWidth)]
        let strides: [Int64] = [Int64(g.stride), Int64(g.stride)]
        let padL: [Int64] = [Int64(g.padding), Int64(g.padding)]
        // The right padding that makes oneDNN's output size ours (negative: unused input rows).
        let padR: [Int64] = [Int64((g.outHeight - 1) * g.stride + g.kernel - g.height - g.padding),
                             Int64((g.outWidth - 1) * g.stride + g.kernel - g.width - g.padding)]
        guard let srcTag = Self.mapTag(block: key.blocks.input), let dstTag = Self.mapTag(block: key.blocks.output) else { return nil }
        let userSrc = Self.md(src, srcTag), userWeights = Self.md(weights, dnnl_oihw)
        let userDst = Self.md(dst, dstTag), userBias = Self.md([Int64(g.outChannels)], dnnl_x)
        var anySrc = Self.md(src, dnnl_format_tag_any), anyWeights = Self.md(weights, dnnl_format_tag_any)
        var anyDst = Self.md(dst, dnnl_format_tag_any), biasMd = userBias

        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)

        var forward = dnnl_convolution_desc_t(), hint: dnnl_primitive_desc_t?
        let withBias = key.bias && key.pass == .forward
        let described = withUnsafePointer(to: &biasMd) { b in
            dnnl_convolution_forward_desc_init(&forward, dnnl_forward_training, dnnl_convolution_direct, &anySrc, &anyWeights,
                                               withBias ? b : nil, &anyDst, strides, padL, padR)
        }
        guard described == dnnl_success,
              dnnl_primitive_desc_create(&hint, &forward, attr, engine, nil) == dnnl_success else { return nil }
        defer { dnnl_primitive_desc_destroy(hint) }

        var pd: dnnl_primitive_desc_t?
        var arguments: [(Int32, dnnl_memory_desc_t, Direction)]
        switch key.pass {
        case .forward:
            pd = hint; hint = nil  // the forward descriptor is the primitive's
            arguments = [(DNNL_ARG_WEIGHTS, userWeights, .input), (DNNL_ARG_SRC, userSrc, .input), (DNNL_ARG_DST, userDst, .output)]
            if withBias { arguments.append((DNNL_ARG_BIAS, userBias, .input)) }
        case .backwardData:
            var d = dnnl_convolution_desc_t()
            guard dnnl_convolution_backward_data_desc_init(&d, dnnl_convolution_direct, &anySrc, &anyWeights, &anyDst,
                                                           strides, padL, padR) == dnnl_success,
                  dnnl_primitive_desc_create(&pd, &d, attr, engine, hint) == dnnl_success else { return nil }
            arguments = [(DNNL_ARG_WEIGHTS, userWeights, .input), (DNNL_ARG_DIFF_DST, userDst, .input), (DNNL_ARG_DIFF_SRC, userSrc, .output)]
        case .backwardWeights:
            var d = dnnl_convolution_desc_t()
            guard dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &anySrc, &anyWeights, nil, &anyDst,
                                                              strides, padL, padR) == dnnl_success,
                  dnnl_primitive_desc_create(&pd, &d, attr, engine, hint) == dnnl_success else { return nil }
            arguments = [(DNNL_ARG_SRC, userSrc, .input), (DNNL_ARG_DIFF_DST, userDst, .input), (DNNL_ARG_DIFF_WEIGHTS, userWeights, .accumulate)]
        }
        defer { dnnl_primitive_desc_destroy(pd) }
        guard dnnl_primitive_create(&primitive, pd) == dnnl_success else { return nil }

        for (slot, (arg, user, direction)) in arguments.enumerated() {
            guard let inner = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg)?.pointee,
                  let operand = Self.operand(arg, inner: inner, user: user, direction: direction, slot: slot, engine: engine)
            else { return nil }
            operands.append(operand)
        }
        args.reserveCapacity(operands.count + 1)
        if let md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)?.pointee, md.ndims > 0 {
            var md = md, memory: dnnl_memory_t?
            guard dnnl_memory_create(&memory, &md, engine, nil) == dnnl_success else { return nil }
            scratchpad = (memory!, dnnl_memory_desc_get_size(&md))
        }
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        for o in operands {
            dnnl_memory_destroy(o.memory)
            if let u = o.user { dnnl_memory_destroy(u) }
            if let r = o.reorder { dnnl_primitive_destroy(r) }
        }
        if let s = scratchpad { dnnl_memory_destroy(s.memory) }
    }

    private static func md(_ dims: [Int64], _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
        var md = dnnl_memory_desc_t()
        dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), dims, dnnl_f32, tag)
        return md
    }

    /// oneDNN's name for maps in channel blocks of `block` (1: NCHW); nil for blocks it has no tag for.
    private static func mapTag(block: Int) -> dnnl_format_tag_t? {
        switch block {
        case 1: dnnl_nchw
        case 8: dnnl_nChw8c
        case 16: dnnl_nChw16c
        default: nil
        }
    }

    /// The channel block of the layout oneDNN picked for map operand `arg`: 8 or 16 when it
    /// is nChw8c or nChw16c and the block divides the channels (so that a sample takes C*H*W
    /// floats, as in NCHW), else 1.
    func mapBlock(_ arg: Int32) -> Int {
        guard var inner = operands.first(where: { $0.arg == arg })?.md, inner.ndims == 4 else { return 1 }
        let dims = withUnsafeBytes(of: inner.dims) { Array($0.bindMemory(to: Int64.self).prefix(4)) }
        for block in [16, 8] where dims[1] % Int64(block) == 0 {
            var blocked = Self.md(dims, Self.mapTag(block: block)!)
            if dnnl_memory_desc_equal(&inner, &blocked) != 0 { return block }
        }
        return 1
    }

    /// An operand in layout `inner`; a reorder from or to the caller's layout `user` when they
    /// differ, or when the result is added to the caller's array (a reorder with a sum).
    private static func operand(_ arg: Int32, inner: dnnl_memory_desc_t, user: dnnl_memory_desc_t, direction: Direction,
                                slot: Int, engine: dnnl_engine_t) -> Operand? {
        var inner = inner, user = user
        var memory: dnnl_memory_t?
        guard dnnl_memory_create(&memory, &inner, engine, nil) == dnnl_success else { return nil }
        var o = Operand(arg: arg, direction: direction, memory: memory!, md: inner, user: nil, reorder: nil,
                        bytes: dnnl_memory_desc_get_size(&inner), slot: slot)
        if direction != .accumulate && dnnl_memory_desc_equal(&inner, &user) != 0 { return o }

        var attr: dnnl_primitive_attr_t?, ops: dnnl_post_ops_t?, pd: dnnl_primitive_desc_t?, userMemory: dnnl_memory_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        if direction == .accumulate {
            dnnl_post_ops_create(&ops)
            defer { dnnl_post_ops_destroy(ops) }
            dnnl_post_ops_append_sum(ops, 1)
            dnnl_primitive_attr_set_post_ops(attr, ops)
        }
        let status = direction == .input
            ? dnnl_reorder_primitive_desc_create(&pd, &user, engine, &inner, engine, attr)
            : dnnl_reorder_primitive_desc_create(&pd, &inner, engine, &user, engine, attr)
        guard status == dnnl_success else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        guard dnnl_primitive_create(&o.reorder, pd) == dnnl_success,
              dnnl_memory_create(&userMemory, &user, engine, nil) == dnnl_success else { return nil }
        o.user = userMemory
        return o
    }

    /// Whether operand 0 has the same layout here as in `other`, so that the copy `other`
    /// reordered into the arena serves this primitive too (the weights, across the chunks of
    /// one call).
    func sameFirstLayout(as other: DNNLConvolution) -> Bool {
        var a = operands[0].md, b = other.operands[0].md
        return dnnl_memory_desc_equal(&a, &b) != 0
    }

    /// Runs the primitive on the caller's arrays, `arrays[i]` for operand i (forward: weights,
    /// x, y, bias; backward data: weights, dy, dx; backward weights: x, dy, dW). Inputs in
    /// another layout are reordered into the arena first, except operand 0 when `firstReady`
    /// (an earlier call left it there, see `sameLayout`); outputs are reordered back after.
    func execute(_ arrays: UnsafeRawPointer..., firstReady: Bool = false) {
        args.removeAll(keepingCapacity: true)
        for (i, o) in operands.enumerated() where o.direction == .input {
            let caller = UnsafeMutableRawPointer(mutating: arrays[i])
            if let user = o.user, let reorder = o.reorder {
                dnnl_memory_set_data_handle(o.memory, runtime.buffer(o.slot, bytes: o.bytes))
                if !(i == 0 && firstReady) {
                    dnnl_memory_set_data_handle(user, caller)
                    runtime.run(reorder, from: user, to: o.memory)
                }
            } else {
                dnnl_memory_set_data_handle(o.memory, caller)
            }
            args.append(dnnl_exec_arg_t(arg: o.arg, memory: o.memory))
        }
        for (i, o) in operands.enumerated() where o.direction != .input {
            let target = o.user == nil ? UnsafeMutableRawPointer(mutating: arrays[i]) : runtime.buffer(o.slot, bytes: o.bytes)
            dnnl_memory_set_data_handle(o.memory, target)
            args.append(dnnl_exec_arg_t(arg: o.arg, memory: o.memory))
        }
        if let s = scratchpad {
            dnnl_memory_set_data_handle(s.memory, runtime.buffer(Self.scratchpadSlot, bytes: s.bytes))
            args.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: s.memory))
        }
        runtime.run(primitive!, args)
        for (i, o) in operands.enumerated() where o.direction != .input {
            guard let user = o.user, let reorder = o.reorder else { continue }
            dnnl_memory_set_data_handle(user, UnsafeMutableRawPointer(mutating: arrays[i]))
            runtime.run(reorder, from: o.memory, to: user)
        }
    }
}

/// The channel blocks of the layouts oneDNN picks for this convolution's input and output
/// maps (see `DNNLConvolution.mapBlock`); NCHW on the OpenBLAS path or where oneDNN cannot
/// run the shapes. A model keeps a map blocked where its producer and consumer agree.
package func dnnlPreferredBlocks(_ g: ConvGeometry, bias: Bool) -> ConvBlocks {
    guard convKernels == .dnnl else { return .nchw }
    let runtime = DNNLRuntime.shared
    return runtime.exclusive {
        guard let conv = runtime.convolution(.forward, g, samples: convChunkAlignment, bias: bias) else { return .nchw }
        return ConvBlocks(input: conv.mapBlock(DNNL_ARG_SRC), output: conv.mapBlock(DNNL_ARG_DST))
    }
}

/// The rate of one n x n x n sgemm in GFLOP/s, best of `repeats`, on OpenBLAS (pinned to its
/// AVX2 kernels here) or on oneDNN's sgemm (the widest unit): `asymml bench` reports the
/// training rate as a fraction of the better one, measured in the same run.
package func sgemmRate(n: Int, onDNNL: Bool, repeats: Int = 3) -> Double {
    let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n), b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    for i in 0..<(n * n) { a[i] = Float(i % 7) - 3; b[i] = Float(i % 5) - 2 }
    var best = Double.infinity
    for _ in 0..<repeats {
        let t0 = DispatchTime.now().uptimeNanoseconds
        if onDNNL {
            let no = CChar(UInt8(ascii: "N")), m = Int64(n)
            _ = DNNLRuntime.shared.exclusive { dnnl_sgemm(no, no, m, m, m, 1, a, m, b, m, 0, c, m) }
        } else {
            BLAS.gemm(m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: c, ldc: n)
        }
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
    return 2 * pow(Double(n), 3) / best / 1e9
}
