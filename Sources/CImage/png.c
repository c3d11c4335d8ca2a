#include "CImage.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// libpng's error callback: keep the message, then leave through the setjmp in cimage_png.
static void png_fail(png_structp png, png_const_charp text) {
    char *message = png_get_error_ptr(png);
    if (message[0] == '\0') snprintf(message, 256, "%s", text);
    png_longjmp(png, 1);
}

/// Warnings (unknown chunks, sRGB profile notes) do not stop a decode and are not shown.
static void png_ignore(png_structp png, png_const_charp text) { (void)png; (void)text; }

/// Whether the file's last 12 bytes are an IEND chunk (length 0, "IEND", its CRC).
static int ends_with_iend(FILE *file) {
    static const unsigned char iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    unsigned char tail[12];
    if (fseek(file, -12, SEEK_END) != 0 || fread(tail, 1, 12, file) != 12) return 0;
    return memcmp(tail, iend, 12) == 0;
}

int cimage_png(const char *path, unsigned char *out, size_t capacity, cimage_info *info,
               char *message, size_t message_size) {
    // libpng's messages are copied into this buffer first (png_fail knows only the pointer).
    char text[256] = "";
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(message, message_size, "%s", strerror(errno));
        return CIMAGE_UNREADABLE;
    }
    unsigned char signature[8];
    size_t got = fread(signature, 1, 8, file);
    if (got < 8 || png_sig_cmp(signature, 0, 8) != 0) {
        fclose(file);
        snprintf(message, message_size, "not a PNG file (no PNG signature)");
        return CIMAGE_MALFORMED;
    }
    if (!out && !ends_with_iend(file)) {
        fclose(file);
        snprintf(message, message_size, "the file does not end with an IEND chunk");
        return CIMAGE_TRUNCATED;
    }
    fseek(file, 8, SEEK_SET);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, text, png_fail, png_ignore);
    png_infop pnginfo = png ? png_create_info_struct(png) : NULL;
    if (!pnginfo) {
        png_destroy_read_struct(&png, NULL, NULL);
        fclose(file);
        snprintf(message, message_size, "libpng could not start (out of memory?)");
        return CIMAGE_UNREADABLE;
    }
    // Set before setjmp, read after a longjmp: volatile, so the value survives the jump.
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_read_struct(&png, &pnginfo, NULL);
        int truncated = feof(file);
        fclose(file);
        snprintf(message, message_size, "%s%s", truncated ? "the file ends early: " : "", text);
        return truncated ? CIMAGE_TRUNCATED : CIMAGE_MALFORMED;
    }
    png_init_io(png, file);
    png_set_sig_bytes(png, 8);
    png_read_info(png, pnginfo);
    png_uint_32 width, height;
    int depth, colour, interlace;
    png_get_IHDR(png, pnginfo, &width, &height, &depth, &colour, &interlace, NULL, NULL);
    // Every PNG becomes 8-bit gray or RGB: the two layouts image_folder feeds to the model.
    if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (colour == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (colour & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pnginfo);
    info->width = (int)width;
    info->height = (int)height;
    info->channels = png_get_channels(png, pnginfo);
    if (!out) {
        png_destroy_read_struct(&png, &pnginfo, NULL);
        fclose(file);
        return CIMAGE_OK;
    }
    size_t stride = (size_t)width * (size_t)info->channels;
    if (png_get_rowbytes(png, pnginfo) != stride || stride * height > capacity) {
        png_destroy_read_struct(&png, &pnginfo, NULL);
        fclose(file);
        snprintf(message, message_size, "the image changed since it was first read (%u x %u)", (unsigned)width, (unsigned)height);
        return CIMAGE_MALFORMED;
    }
    rows = malloc(height * sizeof(png_bytep));
    if (!rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++) rows[y] = out + y * stride;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &pnginfo, NULL);
    fclose(file);
    return CIMAGE_OK;
}
