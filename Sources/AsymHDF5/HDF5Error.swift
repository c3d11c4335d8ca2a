import CHDF5

/// A failure of an HDF5 operation, naming the file and (where one is involved) the object.
///
/// Its description reads like `checkpoint.h5: /model/conv1/weight: cannot read dataset`,
/// followed by HDF5's own explanation in parentheses when the library gave one.
package struct HDF5Error: Error, CustomStringConvertible {
    /// The path of the HDF5 file on disk.
    package let filePath: String
    /// The object inside the file (`/model/conv1/weight`), or nil when the whole file is concerned.
    package let objectPath: String?
    /// What went wrong, e.g. `cannot open dataset` or `crc32 mismatch: ...`.
    package let reason: String
    /// The most specific message on HDF5's error stack, when the failure came from the library.
    package let libraryDetail: String?

    package var description: String {
        var text = filePath
        if let objectPath { text += ": " + objectPath }
        text += ": " + reason
        if let libraryDetail { text += " (" + libraryDetail + ")" }
        return text
    }

    init(file: String, object: String?, reason: String, libraryDetail: String? = nil) {
        filePath = file
        objectPath = object
        self.reason = reason
        self.libraryDetail = libraryDetail
    }

    /// An error for an HDF5 call that just failed, with the detail from HDF5's error stack.
    static func fromLibrary(file: String, object: String?, reason: String) -> HDF5Error {
        HDF5Error(file: file, object: object, reason: reason, libraryDetail: innermostLibraryMessage())
    }
}

/// The description of the innermost (most specific) entry on the calling thread's HDF5 error
/// stack, e.g. `truncated file: eof = 1024, ...`; nil if the stack is empty or cannot be read.
private func innermostLibraryMessage() -> String? {
    var message: String?
    let walked = withUnsafeMutablePointer(to: &message) { out in
        // The upward walk starts at the function where the error was first detected.
        H5Ewalk2(errorStackID, H5E_WALK_UPWARD, { depth, entry, out in
            if depth == 0, let text = entry?.pointee.desc {
                out?.assumingMemoryBound(to: String?.self).pointee = String(cString: text)
            }
            return 0
        }, out)
    }
    return walked >= 0 ? message : nil
}

/// `H5E_DEFAULT`, the calling thread's error stack. The C macro is a plain `0`, which Swift
/// imports as an `Int32` constant rather than a `hid_t`.
let errorStackID = hid_t(H5E_DEFAULT)

/// Whether HDF5's automatic printing of its error stack to stderr was switched off. This wrapper
/// reports failures as `HDF5Error` instead; the switch happens once, before the first file opens.
let errorPrintingSilenced: Bool = H5Eset_auto2(errorStackID, nil, nil) >= 0
