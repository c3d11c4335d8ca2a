#include "CImage.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/// libjpeg's error manager, with the jump back into cimage_jpeg and the first "premature
/// end" warning.
typedef struct {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    int ended_early;
} error_state;

static void jpeg_fail(j_common_ptr cinfo) {
    longjmp(((error_state *)cinfo->err)->jump, 1);
}

/// Warnings are level -1. The one that matters is a file that ends early: libjpeg then fills
/// the rest of the image with gray, which must not reach training as if it were data.
static void jpeg_note(j_common_ptr cinfo, int level) {
    error_state *state = (error_state *)cinfo->err;
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) state->ended_early = 1;
}

/// Whether an end-of-image marker (FF D9) lies in the file's last 4 KiB: a cut-off file has
/// none. (Some writers append bytes after it, so it need not be the very end.)
static int has_end_marker(FILE *file) {
    unsigned char tail[4096];
    long size;
    if (fseek(file, 0, SEEK_END) != 0 || (size = ftell(file)) < 4) return 0;
    long n = size < (long)sizeof tail ? size : (long)sizeof tail;
    if (fseek(file, size - n, SEEK_SET) != 0 || fread(tail, 1, (size_t)n, file) != (size_t)n) return 0;
    for (long i = n - 2; i >= 0; i--) {
        if (tail[i] == 0xFF && tail[i + 1] == 0xD9) return 1;
    }
    return 0;
}

int cimage_jpeg(const char *path, unsigned char *out, size_t capacity, cimage_info *info,
                char *message, size_t message_size) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(message, message_size, "%s", strerror(errno));
        return CIMAGE_UNREADABLE;
    }
    unsigned char soi[3];
    if (fread(soi, 1, 3, file) != 3 || soi[0] != 0xFF || soi[1] != 0xD8 || soi[2] != 0xFF) {
        fclose(file);
        snprintf(message, message_size, "not a JPEG file (no start-of-image marker)");
        return CIMAGE_MALFORMED;
    }
    if (!out && !has_end_marker(file)) {
        fclose(file);
        snprintf(message, message_size, "no end-of-image marker in the last 4 KiB");
        return CIMAGE_TRUNCATED;
    }
    rewind(file);
    struct jpeg_decompress_struct cinfo;
    error_state state;
    memset(&state, 0, sizeof state);
    cinfo.err = jpeg_std_error(&state.manager);
    state.manager.error_exit = jpeg_fail;
    state.manager.emit_message = jpeg_note;
    if (setjmp(state.jump)) {
        char text[JMSG_LENGTH_MAX];
        (*cinfo.err->format_message)((j_common_ptr)&cinfo, text);
        jpeg_destroy_decompress(&cinfo);
        fclose(file);
        snprintf(message, message_size, "%s", text);
        return CIMAGE_MALFORMED;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, file);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        fclose(file);
        snprintf(message, message_size, "the JPEG is CMYK; save it as RGB or grayscale");
        return CIMAGE_MALFORMED;
    }
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_calc_output_dimensions(&cinfo);
    info->width = (int)cinfo.output_width;
    info->height = (int)cinfo.output_height;
    info->channels = cinfo.output_components;
    if (!out) {
        jpeg_destroy_decompress(&cinfo);
        fclose(file);
        return CIMAGE_OK;
    }
    size_t stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    if (stride * cinfo.output_height > capacity) {
        jpeg_destroy_decompress(&cinfo);
        fclose(file);
        snprintf(message, message_size, "the image changed since it was first read");
        return CIMAGE_MALFORMED;
    }
    jpeg_start_decompress(&cinfo);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (!state.ended_early) jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    fclose(file);
    if (state.ended_early) {
        snprintf(message, message_size, "the file ends early (libjpeg: premature end of JPEG file)");
        return CIMAGE_TRUNCATED;
    }
    return CIMAGE_OK;
}
