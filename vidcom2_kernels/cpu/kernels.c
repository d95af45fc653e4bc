/* VidCom2 on the CPU: the passes over the features, each one read of the rows with the
 * conversion to float32, the channel mask and the reductions fused, and the small steps after
 * them (channel choice, scores, frame budgets, the selection), each one call for a whole batch of
 * videos (vidcom2_kernels/cpu/__init__.py builds this file with the machine's compiler and calls
 * it through ctypes: one call costs about a microsecond, a torch operation a few).
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

/* ------------------------------------------------------------------ whole-batch entry points
 * Layout arrays (int64): per video `row_start` (V+1, rows of each video), `num_frames` (V),
 * `tokens_per_frame` (V); per frame `frame_row_start` (F+1) and, per video, `frame_start` (V+1).
 * Return 0, -1 (unsupported dtype) or -2 (out of memory). */

/* float -> uint32 whose unsigned order is the float order; NaN as +inf, -0.0 as +0.0 (a tie with
 * +0.0: the lower index wins, as in a stable sort). */
static inline uint32_t order_key(float v) {
    if (v != v) v = INFINITY;
    v += 0.0f;
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float load(int dtype, const void *p, int64_t i) {
    return dtype == 0 ? LOAD_F32(p, i) : dtype == 1 ? LOAD_BF16(p, i) : LOAD_F16(p, i);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Per video: the per-channel biased variance over its rows (float64 sums of the rows shifted by
 * the mean of its first frame, stored as float32), the `k` channels of lowest variance (NaN as
 * +inf, lower index first on ties) in `keep` (V, C), and the out-of-range flag in `bad` (V).
 * An empty video has zero variances. */
int vc2_channel_keep(int dtype, const void *x, int64_t V, const int64_t *row_start,
                     const int64_t *tokens_per_frame, int64_t C, int64_t sn, int64_t k,
                     uint32_t bad_bits, float *var, uint8_t *keep, int32_t *bad, int threads) {
    double *sums = malloc(2 * C * sizeof(double));
    float *shift = malloc(C * sizeof(float));
    uint64_t *order = malloc(C * sizeof(uint64_t));
    int status = (sums && shift && order) ? 0 : -2;
    size_t width = dtype == 0 ? 4 : 2;
    for (int64_t v = 0; v < V && status == 0; v++) {
        int64_t n = row_start[v + 1] - row_start[v], T = tokens_per_frame[v];
        float *out = var + v * C;
        bad[v] = 0;
        if (n == 0) {
            for (int64_t c = 0; c < C; c++) out[c] = 0.0f;
        } else {
            const char *rows = (const char *)x + (size_t)(row_start[v] * sn) * width;
            /* the shift: the first frame's mean (conditioning only), in blocks of channels */
            _Pragma("omp parallel for num_threads(threads) schedule(static)")
            for (int64_t c0 = 0; c0 < C; c0 += 64) {
                int64_t c1 = c0 + 64 < C ? c0 + 64 : C;
                for (int64_t c = c0; c < c1; c++) sums[c] = 0.0;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t c = c0; c < c1; c++) sums[c] += load(dtype, rows, t * sn + c);
                for (int64_t c = c0; c < c1; c++) shift[c] = (float)(sums[c] / (double)T);
            }
            status = vc2_channel_moments(dtype, rows, n, C, sn, shift, sums, sums + C, bad_bits, bad + v, threads);
            for (int64_t c = 0; c < C && status == 0; c++)
                out[c] = (float)((sums[C + c] - sums[c] * sums[c] / (double)n) / (double)n);
        }
        for (int64_t c = 0; c < C; c++) order[c] = ((uint64_t)order_key(out[c]) << 32) | (uint64_t)c;
        qsort(order, C, sizeof(uint64_t), cmp_u64);
        for (int64_t c = 0; c < C; c++) keep[v * C + c] = 0;
        for (int64_t j = 0; j < k && j < C; j++) keep[v * C + (order[j] & 0xFFFFFFFFu)] = 1;
    }
    free(sums);
    free(shift);
    free(order);
    return status;
}

/* Steps 2-4 for every video: row norms and frame sums of the normalised rows (one read), the
 * frame and video centres, the dot products with them (a second read), then per row
 *   d_c = max(0, |x^|^2 - 2 x.c / |x| + |c|^2),  s_c = sum_a exp(-d_c / (2a))   (c: frame, video)
 * `scores` (N,) = s_frame + s_video (NaN as +inf) and `uniqueness` (F,) = -mean of s_video over
 * the frame's rows. `keep` (V, C) bool bytes; `bandwidths` (nbw,) the Gaussian bandwidths. */
int vc2_token_scores(int dtype, const void *x, int64_t V, const int64_t *row_start,
                     const int64_t *num_frames, const int64_t *tokens_per_frame,
                     const int64_t *frame_start, int64_t C, int64_t sn, const uint8_t *keep,
                     float eps, const float *bandwidths, int nbw, float *scores, float *uniqueness,
                     int threads) {
    if (dtype < 0 || dtype > 2) return -1;
    size_t width = dtype == 0 ? 4 : 2;
    for (int64_t v = 0; v < V; v++) {
        int64_t F = num_frames[v], T = tokens_per_frame[v], N = F * T;
        const char *rows = (const char *)x + (size_t)(row_start[v] * sn) * width;
        const uint8_t *kv = keep + v * C;
        float *norms = scores + row_start[v], *uq = uniqueness + frame_start[v]; /* norms, then scores */
        float *centres = malloc(((F + 1) * C + F + 2 * N + 1) * sizeof(float));
        if (centres == NULL) return -2;
        float *video = centres + F * C, *frame_sq = video + C, *dot_f = frame_sq + F, *dot_v = dot_f + N;
        vc2_norms_frame_sums(dtype, rows, F, T, C, sn, kv, eps, norms, centres, threads);
        for (int64_t c = 0; c < C; c++) {
            float total = 0.0f;
            for (int64_t f = 0; f < F; f++) total += centres[f * C + c];
            video[c] = total / (float)(N > 1 ? N : 1);
        }
        float video_sq = 0.0f;
        for (int64_t c = 0; c < C; c++) video_sq += video[c] * video[c];
        for (int64_t f = 0; f < F; f++) {
            float sq = 0.0f;
            for (int64_t c = 0; c < C; c++) {
                centres[f * C + c] /= (float)T;
                sq += centres[f * C + c] * centres[f * C + c];
            }
            frame_sq[f] = sq;
        }
        vc2_centre_dots(dtype, rows, F, T, C, sn, kv, centres, video, dot_f, dot_v, threads);
        _Pragma("omp parallel for num_threads(threads) schedule(static)")
        for (int64_t f = 0; f < F; f++) {
            float total = 0.0f;
            for (int64_t t = 0; t < T; t++) {
                int64_t r = f * T + t;
                float norm = norms[r], inv = 1.0f / (norm < eps ? eps : norm); /* NaN stays NaN */
                float self = (norm * inv) * (norm * inv);
                float dv = self - 2.0f * dot_v[r] * inv + video_sq, df = self - 2.0f * dot_f[r] * inv + frame_sq[f];
                dv = dv < 0.0f ? 0.0f : dv; /* a clamp that keeps NaN */
                df = df < 0.0f ? 0.0f : df;
                float sv = 0.0f, sf = 0.0f;
                for (int a = 0; a < nbw; a++) {
                    sv += expf(-dv / (2.0f * bandwidths[a]));
                    sf += expf(-df / (2.0f * bandwidths[a]));
                }
                float s = sv + sf;
                norms[r] = s != s ? INFINITY : s;
                total += sv;
            }
            uq[f] = -(total / (float)T);
        }
        free(centres);
    }
    return 0;
}

/* Step 5, Frame Compression Adjustment, per video over its frames f:
 *   p = softmax(u / temperature),  scale = min(1, r (1 + p - mean(p)))   (float32; mean in float64)
 *   budgets[f] = max(1, round-half-even(scale * tokens))
 * a video with a NaN uniqueness (or a NaN scale) gets scale r. `counts` (V,) the sums. */
int vc2_frame_budgets(int64_t V, const int64_t *frame_start, const float *uniqueness,
                      const float *retention, const int64_t *frame_tokens, float temperature,
                      int64_t *budgets, int64_t *counts) {
    float *p = malloc((frame_start[V] > 0 ? frame_start[V] : 1) * sizeof(float)); /* z, e, then p */
    if (p == NULL) return -2;
    for (int64_t v = 0; v < V; v++) {
        int64_t f0 = frame_start[v], f1 = frame_start[v + 1];
        float zmax = -INFINITY, total = 0.0f, r = retention[v];
        int has_nan = 0;
        for (int64_t f = f0; f < f1; f++) {
            p[f] = uniqueness[f] / temperature;
            has_nan |= p[f] != p[f];
            zmax = p[f] > zmax ? p[f] : zmax;
        }
        for (int64_t f = f0; f < f1; f++) {
            p[f] = expf(p[f] - zmax);
            total += p[f];
        }
        double mean = 0.0;
        for (int64_t f = f0; f < f1; f++) {
            p[f] /= total;
            mean += (double)p[f];
        }
        float p_mean = (float)(mean / (double)(f1 - f0));
        counts[v] = 0;
        for (int64_t f = f0; f < f1; f++) {
            float scale = r * (1.0f + (p[f] - p_mean));
            scale = scale > 1.0f ? 1.0f : scale;
            if (scale != scale || has_nan) scale = r;
            float b = rintf(scale * (float)frame_tokens[f]);
            budgets[f] = b < 1.0f ? 1 : (int64_t)b;
            counts[v] += budgets[f];
        }
    }
    free(p);
    return 0;
}

/* Step 6: in every frame the `budgets[f]` rows of lowest score (ties: lower index first); with
 * `targets` (V,) (exact mode) each video's kept set is then cut to its `target` lowest-scoring
 * kept rows, or grown by its lowest-scoring dropped rows. Writes `mask` (N,) bytes, the kept
 * count per frame `final_budgets` (F,) and per video `counts` (V,), and the kept positions in
 * ascending order into `indices`, at most `capacity` of them; returns the number kept (or -2). */
int64_t vc2_select(int64_t V, int64_t F, const int64_t *row_start, const int64_t *frame_start,
                   const int64_t *frame_row_start, const float *scores, const int64_t *budgets,
                   const int64_t *targets, uint8_t *mask, int64_t *final_budgets, int64_t *counts,
                   int64_t *indices, int64_t capacity, int threads) {
    int failed = 0;
    int64_t most = 0, longest = 0; /* rows of the largest frame, of the longest video */
    for (int64_t f = 0; f < F; f++) {
        int64_t n = frame_row_start[f + 1] - frame_row_start[f];
        most = n > most ? n : most;
    }
    for (int64_t v = 0; v < V; v++) {
        int64_t n = row_start[v + 1] - row_start[v];
        longest = n > longest ? n : longest;
    }
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)")
    {
        uint64_t *order = malloc((most > 0 ? most : 1) * sizeof(uint64_t));
        if (order == NULL) failed = 1;
        _Pragma("omp for schedule(static)")
        for (int64_t f = 0; f < F; f++) {
            if (order == NULL) continue;
            int64_t r0 = frame_row_start[f], n = frame_row_start[f + 1] - r0, k = budgets[f];
            for (int64_t i = 0; i < n; i++) order[i] = ((uint64_t)order_key(scores[r0 + i]) << 32) | (uint64_t)i;
            qsort(order, n, sizeof(uint64_t), cmp_u64);
            for (int64_t i = 0; i < n; i++) mask[r0 + (order[i] & 0xFFFFFFFFu)] = i < k;
        }
        free(order);
    }
    if (failed) return -2;
    uint64_t *order = targets == NULL ? NULL : malloc((longest > 0 ? longest : 1) * sizeof(uint64_t));
    if (targets != NULL && order == NULL) return -2;
    for (int64_t v = 0; v < V && targets != NULL; v++) {
        int64_t r0 = row_start[v], n = row_start[v + 1] - r0, total = 0, m = 0;
        for (int64_t i = 0; i < n; i++) total += mask[r0 + i];
        if (total == targets[v]) continue;
        int grow = total < targets[v];
        int64_t change = grow ? targets[v] - total : total - targets[v];
        for (int64_t i = 0; i < n; i++) /* grow: among the dropped rows; cut: among the kept */
            if (mask[r0 + i] != grow) order[m++] = ((uint64_t)order_key(scores[r0 + i]) << 32) | (uint64_t)i;
        qsort(order, m, sizeof(uint64_t), cmp_u64);
        if (grow)
            for (int64_t j = 0; j < change && j < m; j++) mask[r0 + (order[j] & 0xFFFFFFFFu)] = 1;
        else
            for (int64_t j = m - change; j < m; j++) mask[r0 + (order[j] & 0xFFFFFFFFu)] = 0;
    }
    free(order);
    int64_t kept = 0;
    for (int64_t v = 0; v < V; v++) {
        counts[v] = 0;
        for (int64_t f = frame_start[v]; f < frame_start[v + 1]; f++) {
            int64_t c = 0;
            for (int64_t r = frame_row_start[f]; r < frame_row_start[f + 1]; r++) {
                if (mask[r]) {
                    if (kept < capacity) indices[kept] = r;
                    kept++;
                    c++;
                }
            }
            final_budgets[f] = c;
            counts[v] += c;
        }
    }
    return kept;
}
