// Box-Muller on 16 lanes at a time, written once with the compiler's vector extensions and
// compiled for three vector units (target_clones: the loader picks the widest the CPU has),
// because Swift has no per-function target features and the project must run on CPUs with
// and without AVX-512. Only adds, multiplies, one divide and bit operations: ln by its
// series, the square root by Newton steps on 1/sqrt, sine and cosine by polynomials on
// [-pi/4, pi/4) with the quadrant from two bits. Accurate to about 1e-7 relative
// (SecretStreamTests.testBoxMullerMatchesLibm).
#include "noise.h"
#include <string.h>

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));

#define AS(type, v) ({ type r_; __typeof__(v) v_ = (v); memcpy(&r_, &v_, sizeof r_); r_; })

static inline __attribute__((always_inline)) void group(const uint32_t *w, float scale, float *out) {
    vu w1, w2;
    memcpy(&w1, w, 64);
    memcpy(&w2, w + 16, 64);
    // u1 in (0, 1] = 2^e m, m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(t), t = (m - 1) / (m + 1),
    // |t| < 0.172, by its odd series to t^9. Moving the bits by 1 - sqrt(1/2) (as floats' bit
    // patterns) puts m's range boundary at sqrt(1/2) with integer operations only.
    vf u1 = (__builtin_convertvector(AS(vi, w1 >> 8), vf) + 1.0f) * 0x1p-24f;
    vi bits = AS(vi, u1) + (0x3F800000 - 0x3F3504F3);
    vf e = __builtin_convertvector((bits >> 23) - 127, vf);
    vf m = AS(vf, (bits & 0x007FFFFF) + 0x3F3504F3);
    vf t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    vf series = t2 * (1.0f / 9) + (1.0f / 7);
    series = (series * t2 + (1.0f / 5)) * t2 + (1.0f / 3);
    series = series * t2 + 1.0f;
    vf x = -2.0f * (e * 0.69314718f + 2.0f * t * series);  // -2 ln u1, in [0, 33.3]
    // sqrt(x) = x / sqrt(x): 1/sqrt(x) from the exponent-halving guess and three Newton steps
    // (u1 = 1 gives x = -0, a finite guess and a radius of 0).
    vf y = AS(vf, 0x5F3759DF - (AS(vi, x) >> 1));
    y = y * (1.5f - 0.5f * x * y * y);
    y = y * (1.5f - 0.5f * x * y * y);
    y = y * (1.5f - 0.5f * x * y * y);
    vf r = scale * x * y;
    vf a = (__builtin_convertvector(AS(vi, w2 & 0xFFFFFF), vf) * 0x1p-24f - 0.5f) * 1.57079632679f;
    vf a2 = a * a;
    vf sinA = a2 * (1.0f / 362880) - (1.0f / 5040);
    sinA = ((sinA * a2 + (1.0f / 120)) * a2 - (1.0f / 6)) * a2 + 1.0f;
    sinA = sinA * a;
    vf cosA = a2 * (-1.0f / 3628800) + (1.0f / 40320);
    cosA = ((cosA * a2 - (1.0f / 720)) * a2 + (1.0f / 24)) * a2 - 0.5f;
    cosA = cosA * a2 + 1.0f;
    // Quadrant q (the top two bits): (sin, cos)(q pi/2 + a) is (sin a, cos a) turned q quarter
    // turns: odd q swaps them (negating the cosine), q >= 2 negates both.
    vu sinBits = AS(vu, sinA), cosBits = AS(vu, cosA);
    vu odd = 0 - ((w2 >> 30) & 1), sign = (w2 >> 31) << 31;
    vf s = AS(vf, ((sinBits & ~odd) | (cosBits & odd)) ^ sign);
    vf c = AS(vf, ((cosBits & ~odd) | ((sinBits ^ 0x80000000u) & odd)) ^ sign);
    vf rc = r * c, rs = r * s;
    memcpy(out, &rc, 64);
    memcpy(out + 16, &rs, 64);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void asym_box_muller(const uint32_t *words, size_t count, float scale, float *out) {
    size_t i = 0;
    for (; i + 32 <= count; i += 32) group(words + i, scale, out + i);
    if (i < count) {
        float last[32];
        group(words + i, scale, last);
        memcpy(out + i, last, (count - i) * sizeof(float));
    }
}
