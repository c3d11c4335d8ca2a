import AsymModel
import AsymData
import Foundation

/// Loads the train and test splits that a config names, checked against the model input.
package struct DataSource {
    package let train: Dataset
    package let test: Dataset
    /// `data.augment` of training batches; nil when off.
    package let augmentation: Augmentation?

    package static let defaultFashionMNIST = "/usr/share/datasets/fashion-mnist"

    /// Splits already in memory (e.g. tensors captured by `asymml attack`, trained on by a probe).
    package init(train: Dataset, test: Dataset) {
        self.train = train
        self.test = test
        augmentation = nil
    }

    package init(_ config: Config) throws {
        let d = config.data
        var normalization: Normalization?
        if let mean = d.normalizeMean, let std = d.normalizeStd {
            normalization = Normalization(mean: mean.map(Float.init), std: std.map(Float.init))
        }
        let input = config.model.input
        let all: Dataset
        switch d.dataset {
        case .fashionMNIST:
            let dir = d.path ?? DataSource.defaultFashionMNIST
            all = try loadIDX(directory: dir, split: .train, normalization: normalization)
            test = try loadIDX(directory: dir, split: .test, normalization: normalization)
        case .cifar10:
            guard let dir = d.path else {
                throw ConfigError("data.path: cifar10 needs the folder of data_batch_*.bin and test_batch.bin")
            }
            all = try loadCIFAR10(directory: dir, split: .train, normalization: normalization)
            test = try loadCIFAR10(directory: dir, split: .test, normalization: normalization)
        case .npz:
            guard let path = d.path else {
                throw ConfigError("data.path: npz needs the folder of train.npz and test.npz (np.savez(file, x=images, y=labels)), or one .npz file")
            }
            let splits = try loadNPZ(path: path, input: input, channelsLast: d.layout == .nhwc, normalization: normalization)
            (all, test) = (splits.train, splits.test)
        case .imageFolder:
            guard let dir = d.path else {
                throw ConfigError("data.path: image_folder needs the folder that holds train/<class>/ and test/<class>/ (PNG or JPEG images)")
            }
            let splits = try loadImageFolder(directory: dir, input: input, normalization: normalization)
            (all, test) = (splits.train, splits.test)
        case .synthetic:
            let seed = UInt64(truncatingIfNeeded: config.seed)
            // Synthetic samples are already about zero mean and unit variance: no normalisation.
            all = try makeSynthetic(count: d.syntheticTrain, channels: input[0], height: input[1], width: input[2],
                                    classes: d.classes, seed: seed, split: .train)
            test = try makeSynthetic(count: d.syntheticTest, channels: input[0], height: input[1], width: input[2],
                                     classes: d.classes, seed: seed, split: .test)
        }
        if let n = d.trainSamples {
            guard n <= all.count else {
                throw ConfigError("data.train_samples: \(n) is more than the \(all.count) samples of \(all.name)")
            }
            train = all.prefix(n)
        } else {
            train = all
        }
        let shape = [train.channels, train.height, train.width]
        guard shape == input else {
            throw ConfigError("model.input: is \(input) but \(d.dataset) samples are \(shape); set model.input: \(shape)")
        }
        guard train.count >= d.batchSize else {
            throw ConfigError("data.batch_size: \(d.batchSize) is larger than the \(train.count) training samples")
        }
        augmentation = d.augment.isOff ? nil : Augmentation(padding: d.augment.randomCrop, horizontalFlip: d.augment.horizontalFlip,
                                                             seed: UInt64(truncatingIfNeeded: config.seed))
    }

    /// Training samples `indices` of epoch `epoch` into the batch buffers (`Dataset.gather`),
    /// augmented as `data.augment` says. Evaluation reads `test` with `gather`: never augmented.
    /// Sets that stay in their files (npz, image_folder) are read here, one batch at a time.
    package func gatherTraining(indices: some Collection<Int32>, epoch: Int, images: UnsafeMutablePointer<Float>,
                                labels: UnsafeMutablePointer<Int32>) {
        if let augmentation {
            train.gather(indices: indices, augmentation: augmentation, epoch: epoch, images: images, labels: labels)
        } else {
            train.gather(indices: indices, images: images, labels: labels)
        }
    }
}
