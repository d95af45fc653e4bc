/* VidCom2's three passes over the features on the CPU, each one read of the rows with the
 * conversion to float32, the channel mask and the reductions fused (vidcom2_kernels/cpu/__init__.py
 * builds this file with the machine's compiler and calls it through ctypes).
 *
 * Features: (rows, C) with row stride sn (elements) and contiguous channels, dtype 0 float32,
 * 1 bfloat16, 2 float16.
 * Every output element is computed by one thread in a fixed order: results do not depend on the
 * number of threads (the `omp simd` reductions use the build's fixed vector width). Masking is a select, never a product: NaN or Inf in a dropped channel
 * cannot reach a kept result.
 */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>


static inline float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define LOAD_F32(p, i) (((const float *)(p))[i])
#define LOAD_BF16(p, i) (bf16_to_float(((const uint16_t *)(p))[i]))
#if defined(__FLT16_MAX__) /* the compiler has _Float16 (GCC 12+, clang): one conversion instruction */
#define LOAD_F16(p, i) ((float)(((const _Float16 *)(p))[i]))
#else /* older compilers: the IEEE half's bits widened by hand (exact, subnormals, Inf and NaN included) */
static inline float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, u;
    if (exp == 0x1Fu) {
        u = sign | 0x7F800000u | (man << 13); /* Inf, NaN (payload kept) */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13); /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign; /* +-0 */
    } else { /* subnormal man * 2^-24: normalise */
        uint32_t shift = 0;
        while (!(man & 0x400u)) {
            man <<= 1;
            shift++;
        }
        u = sign | ((113u - shift) << 23) | ((man & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
#define LOAD_F16(p, i) (f16_to_float(((const uint16_t *)(p))[i]))
#endif

/* Per channel, over the rows: the sums of d = x - shift and of d^2, and whether any value is
 * NaN, Inf or of magnitude >= the limit (bad[0] = 1): the largest |x| bit pattern of each
 * channel (sign cleared: integer order is magnitude order, NaN and Inf above every finite value)
 * against `bad_bits`, the limit's pattern. Parallel over one contiguous range of channels a
 * thread (long contiguous reads); each channel's rows in order, in groups of ROW_GROUP summed in
 * float32 (vector lanes) and then added in float64: the same sums whatever the ranges. */
#define ROW_GROUP 16
#define MOMENTS(NAME, LOAD, BITS_T, ABS_MASK)                                                     \
    static int NAME(const void *x, int64_t rows, int64_t C, int64_t sn, const float *shift,     \
                     double *sum, double *sumsq, uint32_t bad_bits, int32_t *bad, int threads) {  \
        int64_t width = (C + threads - 1) / threads;                                              \
        width = (width + 15) / 16 * 16; /* whole cache lines of float32 */                        \
        int any_bad = 0, failed = 0;                                                              \
        _Pragma("omp parallel for num_threads(threads) schedule(static) reduction(|:any_bad, failed)") \
        for (int64_t c0 = 0; c0 < C; c0 += width) {                                              \
            int64_t n = C - c0 < width ? C - c0 : width;                                          \
            float *g = malloc(n * (3 * sizeof(float) + sizeof(uint32_t)));                        \
            if (g == NULL) {                                                                      \
                failed = 1;                                                                       \
                continue;                                                                         \
            }                                                                                     \
            float *g2 = g + n, *sh = g2 + n;                                                      \
            uint32_t *top = (uint32_t *)(sh + n);                                                 \
            for (int64_t j = 0; j < n; j++) {                                                     \
                sh[j] = shift[c0 + j];                                                            \
                top[j] = 0;                                                                       \
                sum[c0 + j] = sumsq[c0 + j] = 0.0;                                                \
            }                                                                                     \
            for (int64_t r0 = 0; r0 < rows; r0 += ROW_GROUP) {                                    \
                int64_t r1 = r0 + ROW_GROUP < rows ? r0 + ROW_GROUP : rows;                       \
                for (int64_t j = 0; j < n; j++) g[j] = g2[j] = 0.0f;                              \
                for (int64_t r = r0; r < r1; r++) {                                               \
                    int64_t base = r * sn + c0;                                                   \
                    _Pragma("omp simd")                                                           \
                    for (int64_t j = 0; j < n; j++) {                                             \
                        float v = LOAD(x, base + j);                                              \
                        uint32_t m = ((const BITS_T *)x)[base + j] & ABS_MASK;                    \
                        top[j] = m > top[j] ? m : top[j];                                         \
                        float d = v - sh[j];                                                      \
                        g[j] += d;                                                                \
                        g2[j] += d * d;                                                           \
                    }                                                                             \
                }                                                                                 \
                for (int64_t j = 0; j < n; j++) {                                                 \
                    sum[c0 + j] += g[j];                                                          \
                    sumsq[c0 + j] += g2[j];                                                       \
                }                                                                                 \
            }                                                                                     \
            int flag = 0;                                                                         \
            for (int64_t j = 0; j < n; j++) flag |= top[j] >= bad_bits;                           \
            any_bad |= flag;                                                                      \
            free(g);                                                                              \
        }                                                                                         \
        bad[0] = any_bad;                                                                         \
        return failed ? -2 : 0;                                                                   \
    }

/* Per frame (F frames of T rows): the norm of every row over the kept channels, then the frame
 * sum of the rows scaled by 1 / max(norm, eps) (zero on the dropped channels). Parallel over
 * frames; inside a frame rows in order. `row` is a per-thread scratch row of C floats. */
#define NORMS_FRAME_SUMS(NAME, LOAD)                                                              \
    static void NAME(const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,                 \
                     const uint8_t *keep, float eps, float *norms, float *frame_sums,            \
                     int threads) {                                                               \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                        \
        for (int64_t f = 0; f < F; f++) {                                                         \
            float *out = frame_sums + f * C;                                                      \
            for (int64_t c = 0; c < C; c++) out[c] = 0.0f;                                        \
            for (int64_t t = 0; t < T; t++) {                                                     \
                int64_t base = (f * T + t) * sn;                                                  \
                float acc = 0.0f;                                                                 \
                _Pragma("omp simd reduction(+:acc)")                                              \
                for (int64_t c = 0; c < C; c++) {                                                 \
                    float v = LOAD(x, base + c);                                             \
                    v = keep[c] ? v : 0.0f;                                                       \
                    acc += v * v;                                                                 \
                }                                                                                 \
                float norm = sqrtf(acc);                                                          \
                norms[f * T + t] = norm;                                                          \
                float inv = 1.0f / (norm < eps ? eps : norm); /* NaN stays NaN */                 \
                _Pragma("omp simd")                                                               \
                for (int64_t c = 0; c < C; c++) {                                                 \
                    float v = LOAD(x, base + c);                                             \
                    out[c] += (keep[c] ? v : 0.0f) * inv;                                         \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

/* Per row of frame f: dot products over the kept channels with the frame's centre and with the
 * video centre (unscaled rows; the caller scales by 1 / norm). Parallel over rows. */
#define CENTRE_DOTS(NAME, LOAD)                                                                   \
    static void NAME(const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,                 \
                     const uint8_t *keep, const float *frame_centres, const float *video_centre, \
                     float *dot_frame, float *dot_video, int threads) {                           \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                        \
        for (int64_t r = 0; r < F * T; r++) {                                                     \
            const float *fc = frame_centres + (r / T) * C;                                        \
            float a = 0.0f, g = 0.0f;                                                             \
            _Pragma("omp simd reduction(+:a, g)")                                                 \
            for (int64_t c = 0; c < C; c++) {                                                     \
                float v = LOAD(x, r * sn + c);                                               \
                v = keep[c] ? v : 0.0f;                                                           \
                a += v * fc[c];                                                                   \
                g += v * video_centre[c];                                                         \
            }                                                                                     \
            dot_frame[r] = a;                                                                     \
            dot_video[r] = g;                                                                     \
        }                                                                                         \
    }

/* DyCoke: per row, the cosine similarity with the same-position row of its frame's anchor frame
 * (`anchors[f]`, a frame of the same video, or -1: similarity 0), norms clamped to eps; and
 * whether any value of the video is NaN, Inf or of magnitude >= the limit (every row is read
 * once as itself). Parallel over rows. */
#define DYCOKE(NAME, LOAD, BITS_T, ABS_MASK)                                                      \
    static void NAME(const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,                 \
                     const int64_t *anchors, float eps, float *out, uint32_t bad_bits,            \
                     int32_t *bad, int threads) {                                                 \
        uint32_t top = 0;                                                                         \
        _Pragma("omp parallel for num_threads(threads) schedule(static) reduction(max:top)")      \
        for (int64_t r = 0; r < F * T; r++) {                                                     \
            int64_t a = anchors[r / T], y0 = (a * T + r % T) * sn;                                \
            float xx = 0.0f, yy = 0.0f, xy = 0.0f;                                                \
            uint32_t m = 0;                                                                       \
            _Pragma("omp simd reduction(+:xx) reduction(max:m)")                                  \
            for (int64_t c = 0; c < C; c++) {                                                     \
                float v = LOAD(x, r * sn + c);                                                    \
                uint32_t b = ((const BITS_T *)x)[r * sn + c] & ABS_MASK;                          \
                m = b > m ? b : m;                                                                \
                xx += v * v;                                                                      \
            }                                                                                     \
            top = m > top ? m : top;                                                              \
            if (a < 0) {                                                                          \
                out[r] = 0.0f;                                                                    \
                continue;                                                                         \
            }                                                                                     \
            _Pragma("omp simd reduction(+:yy, xy)")                                               \
            for (int64_t c = 0; c < C; c++) {                                                     \
                float v = LOAD(x, r * sn + c), w = LOAD(x, y0 + c);                               \
                yy += w * w;                                                                      \
                xy += v * w;                                                                      \
            }                                                                                     \
            float nx = sqrtf(xx), ny = sqrtf(yy);                                                 \
            out[r] = xy / ((nx < eps ? eps : nx) * (ny < eps ? eps : ny)); /* NaN stays NaN */    \
        }                                                                                         \
        bad[0] = top >= bad_bits;                                                                 \
    }

MOMENTS(moments_f32, LOAD_F32, uint32_t, 0x7FFFFFFFu)
MOMENTS(moments_bf16, LOAD_BF16, uint16_t, 0x7FFFu)
MOMENTS(moments_f16, LOAD_F16, uint16_t, 0x7FFFu)
NORMS_FRAME_SUMS(norms_frame_sums_f32, LOAD_F32)
NORMS_FRAME_SUMS(norms_frame_sums_bf16, LOAD_BF16)
NORMS_FRAME_SUMS(norms_frame_sums_f16, LOAD_F16)
CENTRE_DOTS(centre_dots_f32, LOAD_F32)
CENTRE_DOTS(centre_dots_bf16, LOAD_BF16)
CENTRE_DOTS(centre_dots_f16, LOAD_F16)
DYCOKE(dycoke_f32, LOAD_F32, uint32_t, 0x7FFFFFFFu)
DYCOKE(dycoke_bf16, LOAD_BF16, uint16_t, 0x7FFFu)
DYCOKE(dycoke_f16, LOAD_F16, uint16_t, 0x7FFFu)

int vc2_channel_moments(int dtype, const void *x, int64_t rows, int64_t C, int64_t sn,
                        const float *shift, double *sum, double *sumsq, uint32_t bad_bits,
                        int32_t *bad, int threads) {
    switch (dtype) {
        case 0: return moments_f32(x, rows, C, sn, shift, sum, sumsq, bad_bits, bad, threads);
        case 1: return moments_bf16(x, rows, C, sn, shift, sum, sumsq, bad_bits, bad, threads);
        case 2: return moments_f16(x, rows, C, sn, shift, sum, sumsq, bad_bits, bad, threads);
    }
    return -1;
}

int vc2_norms_frame_sums(int dtype, const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,
                         const uint8_t *keep, float eps, float *norms, float *frame_sums,
                         int threads) {
    switch (dtype) {
        case 0: norms_frame_sums_f32(x, F, T, C, sn, keep, eps, norms, frame_sums, threads); return 0;
        case 1: norms_frame_sums_bf16(x, F, T, C, sn, keep, eps, norms, frame_sums, threads); return 0;
        case 2: norms_frame_sums_f16(x, F, T, C, sn, keep, eps, norms, frame_sums, threads); return 0;
    }
    return -1;
}

int vc2_centre_dots(int dtype, const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,
                    const uint8_t *keep, const float *frame_centres, const float *video_centre,
                    float *dot_frame, float *dot_video, int threads) {
    switch (dtype) {
        case 0: centre_dots_f32(x, F, T, C, sn, keep, frame_centres, video_centre, dot_frame, dot_video, threads); return 0;
        case 1: centre_dots_bf16(x, F, T, C, sn, keep, frame_centres, video_centre, dot_frame, dot_video, threads); return 0;
        case 2: centre_dots_f16(x, F, T, C, sn, keep, frame_centres, video_centre, dot_frame, dot_video, threads); return 0;
    }
    return -1;
}

int vc2_dycoke_similarity(int dtype, const void *x, int64_t F, int64_t T, int64_t C, int64_t sn,
                          const int64_t *anchors, float eps, float *out, uint32_t bad_bits,
                          int32_t *bad, int threads) {
    switch (dtype) {
        case 0: dycoke_f32(x, F, T, C, sn, anchors, eps, out, bad_bits, bad, threads); return 0;
        case 1: dycoke_bf16(x, F, T, C, sn, anchors, eps, out, bad_bits, bad, threads); return 0;
        case 2: dycoke_f16(x, F, T, C, sn, anchors, eps, out, bad_bits, bad, threads); return 0;
    }
    return -1;
}
