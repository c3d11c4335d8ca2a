import CHDF5

/// Scalar attributes on groups and datasets (including the root `/`). Setting an attribute that
/// exists replaces it; reading one that does not is an error.
extension HDF5File {
    /// Sets a UTF-8 string attribute (variable-length, as h5py writes `str`).
    package func setAttribute(_ name: String, string value: String, at path: String = "/") throws {
        try withStringType(cset: H5T_CSET_UTF8, path) { type in
            try value.withCString { text in
                var pointer: UnsafePointer<CChar>? = text
                try writeAttribute(name, at: path, type: type, &pointer)
            }
        }
    }

    /// Sets an int64 attribute.
    package func setAttribute(_ name: String, int64 value: Int64, at path: String = "/") throws {
        var value = value
        try writeAttribute(name, at: path, type: Int64.nativeType, &value)
    }

    /// Sets a float32 attribute.
    package func setAttribute(_ name: String, float value: Float, at path: String = "/") throws {
        var value = value
        try writeAttribute(name, at: path, type: Float.nativeType, &value)
    }

    /// Reads a variable-length string attribute (from the global heap, every offset checked:
    /// `readVariableLengthString`).
    package func stringAttribute(_ name: String, at path: String = "/") throws -> String {
        try readAttribute(name, at: path) { attribute, fileType in
            guard H5Tget_class(fileType) == H5T_STRING,
                  try check(H5Tis_variable_str(fileType), path, "cannot inspect attribute '\(name)'") > 0 else {
                throw failure(path, "attribute '\(name)' is not a variable-length string")
            }
            guard H5Tget_cset(fileType) != H5T_CSET_ERROR else {
                throw HDF5Error.fromLibrary(file: self.path, object: path, reason: "cannot inspect attribute '\(name)'")
            }
            return try readVariableLengthString(attribute, name: name, at: path)
        }
    }

    /// Reads an int64 attribute.
    package func int64Attribute(_ name: String, at path: String = "/") throws -> Int64 {
        try readNumericAttribute(name, at: path)
    }

    /// Reads a float32 attribute.
    package func floatAttribute(_ name: String, at path: String = "/") throws -> Float {
        try readNumericAttribute(name, at: path)
    }

    /// Whether the object at `path` has an attribute `name`.
    package func hasAttribute(_ name: String, at path: String = "/") throws -> Bool {
        try withObject(path) { object in
            try check(H5Aexists(object, name), path, "cannot look up attribute '\(name)'") > 0
        }
    }

    private func writeAttribute(_ name: String, at path: String, type: hid_t, _ value: UnsafeRawPointer) throws {
        try withObject(path) { object in
            if try check(H5Aexists(object, name), path, "cannot look up attribute '\(name)'") > 0 {
                try check(H5Adelete(object, name), path, "cannot replace attribute '\(name)'")
            }
            try withID(H5Screate(H5S_SCALAR), path, "cannot create dataspace", closedBy: H5Sclose) { space in
                try withID(H5Acreate2(object, name, type, space, defaultPropertyList, defaultPropertyList),
                           path, "cannot create attribute '\(name)'", closedBy: H5Aclose) { attribute in
                    try check(H5Awrite(attribute, type, value), path, "cannot write attribute '\(name)'")
                }
            }
        }
    }

    /// Opens the single-valued attribute `name` of the object at `path` and runs `body` with it and its type.
    private func readAttribute<Result>(_ name: String, at path: String,
                                       _ body: (_ attribute: hid_t, _ fileType: hid_t) throws -> Result) throws -> Result {
        try withObject(path) { object in
            guard try check(H5Aexists(object, name), path, "cannot look up attribute '\(name)'") > 0 else {
                throw failure(path, "no attribute '\(name)'")
            }
            return try withID(H5Aopen(object, name, defaultPropertyList), path, "cannot open attribute '\(name)'",
                              closedBy: H5Aclose) { attribute in
                let count = try withID(H5Aget_space(attribute), path, "cannot read attribute '\(name)'",
                                       closedBy: H5Sclose) { space in
                    try check(H5Sget_simple_extent_npoints(space), path, "cannot read attribute '\(name)'")
                }
                guard count == 1 else { throw failure(path, "attribute '\(name)' holds \(count) values, not one") }
                return try withID(H5Aget_type(attribute), path, "cannot read attribute '\(name)'",
                                  closedBy: H5Tclose) { type in try body(attribute, type) }
            }
        }
    }

    private func readNumericAttribute<Element: HDF5Element>(_ name: String, at path: String) throws -> Element {
        try readAttribute(name, at: path) { attribute, fileType in
            guard try check(H5Tequal(fileType, Element.nativeType), path, "cannot compare types") > 0 else {
                throw failure(path, "attribute '\(name)' is not \(Element.typeName)")
            }
            var value = Element()
            try check(H5Aread(attribute, Element.nativeType, &value), path, "cannot read attribute '\(name)'")
            return value
        }
    }

    /// Runs `body` with a variable-length C string type in character set `cset`.
    private func withStringType<Result>(cset: H5T_cset_t, _ path: String,
                                        _ body: (hid_t) throws -> Result) throws -> Result {
        try withID(H5Tcopy(asym_h5t_c_s1()), path, "cannot create string type", closedBy: H5Tclose) { type in
            try check(H5Tset_size(type, asym_h5t_variable()), path, "cannot create string type")
            try check(H5Tset_cset(type, cset), path, "cannot create string type")
            return try body(type)
        }
    }
}
