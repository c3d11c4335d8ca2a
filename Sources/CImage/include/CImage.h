// PNG (libpng) and JPEG (libjpeg-turbo) decoding for image_folder data sets.
//
// Both libraries report fatal errors by longjmp. That must never cross Swift frames, so the
// setjmp and every library call live in these C functions, which return a status and a
// message instead.
#ifndef CIMAGE_H
#define CIMAGE_H

#include <stddef.h>

/// What a decoder returns.
enum cimage_status {
    CIMAGE_OK = 0,
    /// The file could not be opened or read (errno's text in the message).
    CIMAGE_UNREADABLE = 1,
    /// The file ends before the image does.
    CIMAGE_TRUNCATED = 2,
    /// Not an image of this format, or one that is damaged or unsupported.
    CIMAGE_MALFORMED = 3,
};

/// The image's size and its channels once decoded: 1 (grayscale) or 3 (RGB).
typedef struct {
    int width, height, channels;
} cimage_info;

/// Reads the PNG at `path`. With `out` NULL, reads the header only (and checks that the file
/// ends with an IEND chunk, so a cut-off file is found without decoding it); otherwise decodes
/// into `out`, `capacity` bytes, rows of width * channels interleaved 8-bit samples. Palette
/// images become RGB, 16-bit samples keep their high byte, 1/2/4-bit gray widens to 8 bits and
/// alpha is dropped (as PIL's convert("RGB") does). On failure `message` (NUL-terminated,
/// `message_size` bytes) says why.
int cimage_png(const char *path, unsigned char *out, size_t capacity, cimage_info *info,
               char *message, size_t message_size);

/// Reads the JPEG at `path` as `cimage_png` does: grayscale stays one channel, YCbCr and RGB
/// become RGB; CMYK is refused. A file that ends early (libjpeg's "premature end" warning,
/// which would otherwise fill the rest with gray) is an error.
int cimage_jpeg(const char *path, unsigned char *out, size_t capacity, cimage_info *info,
                char *message, size_t message_size);

#endif
