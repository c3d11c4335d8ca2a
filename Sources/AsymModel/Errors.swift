// The errors a user can meet, by kind. Each prints as one line (`asymml: error: ...`) that
// says what to change; the kind tells a caller (and a reader) where the mistake lies.

/// A user mistake in a config file or an override, or a config that cannot run on this
/// launch: names the key.
package struct ConfigError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

/// A command-line flag that cannot be used as given: names the flag.
package struct UsageError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

/// A file or folder that cannot be read or written as needed: names the path.
package struct FileError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}
