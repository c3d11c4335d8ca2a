// Normal values from uniform keystream words, on the widest vector unit the CPU has
// (chosen once at load time: AVX-512, AVX2, or the baseline).
#ifndef ASYM_NOISE_H
#define ASYM_NOISE_H
#include <stddef.h>
#include <stdint.h>

/// out[0..<count] = scale * N(0, 1) by Box-Muller: each group of 32 values takes 32 words,
/// the radius sqrt(-2 ln u1) from words 0..<16 and the angle from words 16..<32 (cosines to
/// out[0..<16], sines to out[16..<32]). `words` must hold count rounded up to 32 words; a
/// last, shorter group writes only its first values.
void asym_box_muller(const uint32_t *words, size_t count, float scale, float *out);

#endif
