import Foundation

/// Errors thrown by AsymViz's file functions; each names the file involved.
package enum AsymVizError: Error, CustomStringConvertible, LocalizedError {
    /// The file could not be created, written or read.
    case io(path: String, reason: String)
    /// An event file failed a length or checksum check at byte `offset`.
    case corrupt(path: String, offset: Int, reason: String)

    package var description: String {
        switch self {
        case let .io(path, reason):
            return "\(path): \(reason)"
        case let .corrupt(path, offset, reason):
            return "\(path): corrupt record at byte \(offset): \(reason)"
        }
    }

    package var errorDescription: String? { description }
}

/// The C library's message for the current `errno`.
func systemErrorMessage() -> String {
    String(cString: strerror(errno))
}
