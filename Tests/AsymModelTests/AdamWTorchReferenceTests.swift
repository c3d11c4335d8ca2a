import AsymKernels
import AsymModel
import Foundation
import XCTest

/// asymml's AdamW against torch.optim.AdamW itself: numbers that scripts/adamw_reference.py
/// computed with PyTorch (its header gives the setup, which `setUp` below rebuilds), stored
/// here so that the test needs no PyTorch.
final class AdamWTorchReferenceTests: XCTestCase {
    /// Both sides run the same float32 operations in the same order (AdamW.swift follows
    /// torch's single-tensor AdamW: mul_, lerp_, mul_/addcmul_, sqrt, div, add_, addcdiv_), each
    /// rounded once; what may differ is a fused multiply-add or a constant rounded through
    /// another path, a few float32 ulps (2^-24 = 6e-8 relative each) per step. 1e-6 of the
    /// tensor's largest value allows that over 10 steps; a wrong formula (a bias correction
    /// off, decay coupled into the gradient, eps inside the root) is off by 1e-4 and more.
    static let tolerance = 1e-6

    func testMatchesTorchAdamW() throws {
        for (weightDecay, expected) in Self.torchAdamW.sorted(by: { $0.key > $1.key }) {
            let c = try smokeConfig(["model.input=[1, 2, 3]",
                                     "model.layers=[{type: flatten}, {name: a, type: linear, in: 6, out: 2}, {name: b, type: linear, in: 2, out: 5}]",
                                     "optimizer.type=adamw", "optimizer.momentum=0", "optimizer.betas=[0.9, 0.999]",
                                     "optimizer.eps=1e-8", "optimizer.weight_decay=\(weightDecay)"])
            let model = try Model(c.model)
            let params = model.parameters
            XCTAssertEqual(params.map(\.value.shape), [[2, 6], [2], [5, 2], [5]])
            for (k, p) in params.enumerated() {
                for i in 0..<p.value.count { p.value[i] = Float(Double((37 * i + 11 * k) % 17 - 8) / 10) }
            }
            let optimizer = Optimizer(c.optimizer, stepsPerEpoch: 10, totalSteps: 10)
            for t in 1...10 {
                for (k, p) in params.enumerated() {
                    let scale = pow(8.0, Double(k % 3 - 1))
                    for i in 0..<p.grad.count { p.grad[i] = Float(Double((13 * i + 7 * t + 5 * k) % 23 - 11) / 16 * scale) }
                }
                optimizer.apply(learningRate: t <= 5 ? 1e-3 : 3e-4, to: params)
            }
            let state = try XCTUnwrap(optimizer.adamW)
            var worst = 0.0
            for (p, e) in zip(params, expected) {
                let m = state.moments(of: p)
                for (name, ours, theirs) in [("param", p.value.array, e.param), ("exp_avg", m.expAvg.array, e.expAvg),
                                             ("exp_avg_sq", m.expAvgSq.array, e.expAvgSq)] {
                    let reference = theirs.map { Double(Float(bitPattern: $0)) }
                    let scale = reference.map(abs).max()!
                    let d = zip(ours, reference).map { abs(Double($0) - $1) }.max()! / scale
                    XCTAssertLessThanOrEqual(d, Self.tolerance, "weight decay \(weightDecay): \(p.value.shape) \(name)")
                    worst = max(worst, d)
                }
            }
            print("AdamW vs torch.optim.AdamW, weight decay \(weightDecay), 10 steps: worst max|a-b|/max|b| \(worst)")
        }
    }

    // scripts/adamw_reference.py, torch 2.13.0+cpu: [weight decay: [tensor: (param, exp_avg, exp_avg_sq)]]
    static let torchAdamW: [Double: [(param: [UInt32], expAvg: [UInt32], expAvgSq: [UInt32])]] = [
        0.01: [
            ([0xbf4cc0ba, 0xbf004a6b, 0xbe4bd71b, 0x3dd1ef63, 0x3ecb93bf, 0x3f33e700, 0xbf333121, 0xbecc3ab1, 0xbdce80ae, 0x3e4e95a0, 0x3efea623, 0x3f4c4c03],
             [0xbb50369e, 0xbbd46dd3, 0x3b64f963, 0x3aeeb0e7, 0xbc16c3cc, 0x3bf6f9a9, 0xbadb185f, 0xbc076c29, 0x3b438575, 0xbad10142, 0x3b721860, 0x3af69bab],
             [0x37d9cb8b, 0x37dd9cd3, 0x37e16536, 0x37e42897, 0x37db405f, 0x37e8fb6e, 0x37de9f2a, 0x37dff4bb, 0x37e02d14, 0x37e05c98, 0x37df9014, 0x37dedb9c]),
            ([0x3e989c46, 0x3f1a77cb],
             [0x3c769bab, 0x3ca0794c],
             [0x3adedb9c, 0x3ae8e2c0]),
            ([0xbe99f713, 0x390ac1fc, 0x3e98fdf9, 0x3f19d39c, 0xbf4c24a4, 0xbf0098b3, 0xbe49ee46, 0x3dccc208, 0x3ecd5819, 0x3f32f94f],
             [0x3e5fedd7, 0xbe50369e, 0xbed46dd3, 0x3e64f963, 0x3deeb0e7, 0xbf16c3cc, 0x3ef6f9a9, 0xbddb185f, 0xbf076c29, 0x3e438575],
             [0x3de0a9be, 0x3dd9cb8b, 0x3ddd9cd3, 0x3de16536, 0x3de42897, 0x3ddb405f, 0x3de8fb6e, 0x3dde9f2a, 0x3ddff4bb, 0x3de02d14]),
            ([0x3f4c1e99, 0xbf1a146f, 0xbe97d591, 0xbb6fa753, 0x3e9a8877],
             [0x3b721860, 0x3af69bab, 0x3b20794c, 0x3a7f936a, 0x3b973777],
             [0x37df9014, 0x37dedb9c, 0x37e8e2c0, 0x37db17a3, 0x37e488ee]),
        ],
        0.0: [
            ([0xbf4cc420, 0xbf004c8c, 0xbe4bda81, 0x3dd1f2db, 0x3ecb9725, 0x3f33e9fd, 0xbf33341e, 0xbecc3e17, 0xbdce841c, 0x3e4e990a, 0x3efeaa63, 0x3f4c4f69],
             [0xbb50369e, 0xbbd46dd3, 0x3b64f963, 0x3aeeb0e7, 0xbc16c3cc, 0x3bf6f9a9, 0xbadb185f, 0xbc076c29, 0x3b438575, 0xbad10142, 0x3b721860, 0x3af69bab],
             [0x37d9cb8b, 0x37dd9cd3, 0x37e16536, 0x37e42897, 0x37db405f, 0x37e8fb6e, 0x37de9f2a, 0x37dff4bb, 0x37e02d14, 0x37e05c98, 0x37df9014, 0x37dedb9c]),
            ([0x3e989ed1, 0x3f1a7a5a],
             [0x3c769bab, 0x3ca0794c],
             [0x3adedb9c, 0x3ae8e2c0]),
            ([0xbe99f9a2, 0x390acaf7, 0x3e990084, 0x3f19d62b, 0xbf4c280a, 0xbf009ad4, 0xbe49f1a4, 0x3dccc56e, 0x3ecd5b83, 0x3f32fc48],
             [0x3e5fedd7, 0xbe50369e, 0xbed46dd3, 0x3e64f963, 0x3deeb0e7, 0xbf16c3cc, 0x3ef6f9a9, 0xbddb185f, 0xbf076c29, 0x3e438575],
             [0x3de0a9be, 0x3dd9cb8b, 0x3ddd9cd3, 0x3de16536, 0x3de42897, 0x3ddb405f, 0x3de8fb6e, 0x3dde9f2a, 0x3ddff4bb, 0x3de02d14]),
            ([0x3f4c21ff, 0xbf1a16fe, 0xbe97d81c, 0xbb6fa98e, 0x3e9a8b06],
             [0x3b721860, 0x3af69bab, 0x3b20794c, 0x3a7f936a, 0x3b973777],
             [0x37df9014, 0x37dedb9c, 0x37e8e2c0, 0x37db17a3, 0x37e488ee]),
        ],
    ]
}
