import AsymModel
import AsymTrain
import AsymHDF5
import Foundation

/// `asymml train --init PATH`: a new run whose model starts from the tensors of PATH (an
/// asymml checkpoint, or what scripts/from_torch.py writes from a PyTorch state_dict), for
/// fine-tuning. Only `/model` is read: the parameters, the batch-norm statistics and
/// `num_batches_tracked`. The run itself is new: step 0, fresh optimizer state, the config's
/// data order, no warm-start basis.
///
/// The file must hold exactly the config's model: every tensor by name (docs/DESIGN.md §5),
/// with its shape, none missing and none extra. Only names and shapes are checked, not the
/// config stored in the file, so the weights of a model that differs in shape-neutral ways
/// (strides, paddings, pooling) load too.
package enum InitialWeights {
    /// Copies the tensors of `path` into `model`, after checking all of them (nothing is
    /// loaded from a file that fails a check). Every error reads `--init PATH: why`. Returns
    /// the crc32 of every tensor loaded, in model order: equal lists mean equal tensors (each
    /// read verifies its bytes against its crc32).
    package static func load(_ path: String, into model: Model) throws -> [Int64] {
        func failure(_ why: String) -> CheckpointError { CheckpointError("--init \(path): \(why)") }
        guard FileManager.default.fileExists(atPath: path) else { throw failure("no such file") }
        let f: HDF5File
        do { f = try HDF5File.open(path: path) } catch { throw failure("cannot open it as HDF5 (\(error))") }
        defer { try? f.close() }
        if let problem = Checkpoint.formatProblem(f) { throw failure(problem) }
        let slots = Checkpoint.modelTensors(model)
        do {
            let stored = try f.exists("/model") ? Set(try Checkpoint.datasets(f, under: "/model")) : []
            let wanted = slots.map(\.dataset)
            let missing = wanted.filter { !stored.contains($0) }
            if let first = missing.first {
                throw failure("\(first) is missing" + more(missing) + "; the config's model has \(wanted.count) tensors")
            }
            let extra = stored.subtracting(wanted).sorted()
            if let first = extra.first {
                throw failure("\(first) is not a tensor of the config's model" + more(extra))
            }
            for slot in slots {
                let shape = try f.datasetShape(slot.dataset)
                guard shape == slot.shape else {
                    throw failure("\(slot.dataset) has shape \(shape), the config's model needs \(slot.shape)")
                }
            }
            for slot in slots { try Checkpoint.restore(f, path: path, slot) }
            return try slots.map { try f.int64Attribute("crc32", at: $0.dataset) }
        } catch let e as HDF5Error {
            throw failure("\(e)")
        }
    }

    private static func more(_ names: [String]) -> String {
        names.count > 1 ? " (and \(names.count - 1) more)" : ""
    }
}
