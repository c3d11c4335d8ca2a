import AsymModel
import Foundation

/// The machines a prediction (`asymml plan --hardware`) is for: the rate of each kernel
/// class on the trusted side (the enclave) and on an untrusted accelerator, and the link
/// between them. `asymml bench --calibrate` measures them on this machine and writes them
/// as a hardware file.
///
/// Rates are in GFLOP/s as `asymml plan` counts FLOPs (a multiply-add is two). The
/// elementwise class (ReLU, pooling, batch norm, the optimizer's update) counts one "FLOP"
/// per value a layer reads or writes: that work is memory-bound, and its rate is the rate
/// at which values stream through.
package struct Hardware: Equatable, Sendable {
    /// Trusted side: convolution and linear layers (large GEMMs), the split layers' trusted
    /// half (light SVD, projection, low-rank convolution, merge: small GEMMs and memory
    /// passes), and memory-bound layers.
    package var teeGflops: Double
    package var teeSplitGflops: Double
    package var teeElementwiseGflops: Double
    /// Untrusted side: the residual convolutions.
    package var accelGflops: Double
    /// The link between a trusted and an untrusted rank: bandwidth in Gbit/s, and the
    /// latency of one message in microseconds.
    package var linkGbps: Double
    package var linkLatencyMicroseconds: Double
    /// When every rank runs on one machine's cores (a local run, as `bench --calibrate`
    /// measures): how many. A step then takes at least all ranks' compute over the cores
    /// (nil: each rank has a processor of its own).
    package var sharedCores: Double?

    /// The keys of a hardware spec and file, in order (`shared_cores` optional).
    static let keys = ["tee_gflops", "tee_split_gflops", "tee_elementwise_gflops", "accel_gflops", "link_gbps", "link_latency_us",
                       "shared_cores"]

    /// The split and elementwise rates as fractions of the GEMM rate, when a spec gives only
    /// `tee_gflops`: measured on this project's 2-core AVX-512 machine, one thread
    /// (`asymml bench --calibrate`, vgg-cifar and fmnist-cnn); an enclave's memory-bound work
    /// suffers more from its encrypted memory, so treat these as optimistic for SGX.
    package static let splitFraction = 0.25, elementwiseFraction = 0.02

    package var values: [Double?] {
        [teeGflops, teeSplitGflops, teeElementwiseGflops, accelGflops, linkGbps, linkLatencyMicroseconds, sharedCores]
    }

    package init(teeGflops: Double, teeSplitGflops: Double? = nil, teeElementwiseGflops: Double? = nil,
                 accelGflops: Double, linkGbps: Double, linkLatencyMicroseconds: Double = 0, sharedCores: Double? = nil) {
        self.teeGflops = teeGflops
        self.teeSplitGflops = teeSplitGflops ?? teeGflops * Hardware.splitFraction
        self.teeElementwiseGflops = teeElementwiseGflops ?? teeGflops * Hardware.elementwiseFraction
        self.accelGflops = accelGflops
        self.linkGbps = linkGbps
        self.linkLatencyMicroseconds = linkLatencyMicroseconds
        self.sharedCores = sharedCores
    }

    /// `--hardware`: comma-separated items, each `key=value` or the path of a hardware file
    /// (read first; keys after it override its values). `tee_gflops`, `accel_gflops` and
    /// `link_gbps` are required; the split and elementwise rates default to fractions of
    /// `tee_gflops`, the latency to 0.
    package static func parse(_ spec: String) throws -> Hardware {
        var pairs: [String: Double] = [:]
        for item in spec.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            if let eq = item.firstIndex(of: "=") {
                let key = String(item[..<eq]), text = String(item[item.index(after: eq)...])
                pairs[key] = try number(key, text, source: "--hardware")
            } else {
                guard let file = try? String(contentsOfFile: item, encoding: .utf8) else {
                    throw FileError("--hardware: cannot read the hardware file \(item) (write one with asymml bench --calibrate)")
                }
                for (key, value) in try fileValues(file, source: item) where pairs[key] == nil { pairs[key] = value }
            }
        }
        if let unknown = pairs.keys.sorted().first(where: { !keys.contains($0) }) {
            throw UsageError("--hardware: unknown key '\(unknown)'; the keys are \(keys.joined(separator: ", "))")
        }
        func required(_ key: String) throws -> Double {
            guard let v = pairs[key] else { throw UsageError("--hardware: \(key) is missing (e.g. tee_gflops=20,accel_gflops=10000,link_gbps=25)") }
            return v
        }
        return Hardware(teeGflops: try required("tee_gflops"), teeSplitGflops: pairs["tee_split_gflops"],
                        teeElementwiseGflops: pairs["tee_elementwise_gflops"], accelGflops: try required("accel_gflops"),
                        linkGbps: try required("link_gbps"), linkLatencyMicroseconds: pairs["link_latency_us"] ?? 0,
                        sharedCores: pairs["shared_cores"])
    }

    /// A hardware file: `key: value` lines, `#` comments.
    static func fileValues(_ text: String, source: String) throws -> [(String, Double)] {
        try text.split(separator: "\n").compactMap { raw -> (String, Double)? in
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty else { return nil }
            guard let colon = line.firstIndex(of: ":") else { throw UsageError("\(source): '\(line)' is not 'key: value'") }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            return (key, try number(key, line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces), source: source))
        }
    }

    static func number(_ key: String, _ text: String, source: String) throws -> Double {
        guard let v = Double(text), v.isFinite, v > 0 || (key == "link_latency_us" && v == 0) else {
            throw UsageError("\(source): \(key) must be a positive number, got '\(text)'")
        }
        return v
    }

    /// The hardware file `bench --calibrate` writes (and `parse` reads).
    package func file(comment: String) -> String {
        (comment.split(separator: "\n").map { "# \($0)" } + zip(Hardware.keys, values).compactMap { key, v in v.map { "\(key): \(String(format: "%.4g", $0))" } })
            .joined(separator: "\n") + "\n"
    }

    package var summary: String {
        String(format: "tee %.3g GFLOP/s (GEMM), %.3g (split layers), %.3g (elementwise); accelerator %.3g GFLOP/s; link %.3g Gbit/s, %.3g us",
               teeGflops, teeSplitGflops, teeElementwiseGflops, accelGflops, linkGbps, linkLatencyMicroseconds)
            + (sharedCores.map { String(format: "; all ranks on %.3g shared cores", $0) } ?? "")
    }
}
