#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Samples that stay in their files and are read when a batch needs them (`Dataset.Pixels.files`):
/// a data set larger than memory trains with only its labels and one batch in memory.
///
/// The loaders check everything they can without reading the pixels (headers, sizes, shapes)
/// before training starts, so a read here fails only when a file is damaged past its header or
/// changed since it was opened.
package protocol SampleFiles: Sendable {
    /// Writes sample `index`'s normalised values in NCHW order (`Dataset.sampleSize` floats) to `out`.
    func read(_ index: Int, into out: UnsafeMutablePointer<Float>) throws
}

/// Ends the process with one line naming the file, as the command line reports any other
/// error: a batch is gathered where nothing can throw (every training step and evaluation
/// batch), and training on a sample that was never read would be silently wrong.
func sampleReadFailed(_ error: Error) -> Never {
    let line = "asymml: error: \(error)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(1)
}

/// One sample's 8-bit pixels, `channels` interleaved (channelsLast) or planar, to NCHW floats
/// through `pixelTable`'s `table`: a channel-1 source fills every output channel (grayscale
/// into RGB).
func convertSample(_ bytes: UnsafePointer<UInt8>, sourceChannels: Int, channelsLast: Bool, channels: Int, plane: Int,
                   table: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
    for c in 0..<channels {
        let from = sourceChannels == 1 ? 0 : c
        let t = table + c * 256, o = out + c * plane
        if channelsLast {
            for p in 0..<plane { o[p] = t[Int(bytes[p * sourceChannels + from])] }
        } else {
            convertPixels(bytes + from * plane, count: plane, table: t, into: o)
        }
    }
}
