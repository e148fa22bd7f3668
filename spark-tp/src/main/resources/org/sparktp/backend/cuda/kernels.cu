// spark-tp CUDA kernels, compiled at run time by NVRTC to a CUBIN for the device's compute capability
// (CudaKernels.java). Header-free on purpose: NVRTC has no default include path, so bf16/fp16 are
// handled as unsigned short bits (fp16 through PTX cvt), and -inf is spelled as its bit pattern.
// Every tensor is row-major; elementwise work is fp32 (storage casts are separate kernels).
// The formulas match org.sparktp.backend.Activation (PyTorch's definitions).

#define TP_NEG_INF __int_as_float(0xff800000)

// Activation codes (CudaKernels.actCode): 0 gelu (erf), 1 gelu_tanh, 2 relu, 3 silu, 4 tanh,
// 5 sigmoid, 7 identity.
__device__ __forceinline__ float tp_act(float x, int act) {
  switch (act) {
    case 0: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 1: {
      float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(u));
    }
    case 2: return x > 0.0f ? x : 0.0f;
    case 3: return x / (1.0f + expf(-x));
    case 4: return tanhf(x);
    case 5: return 1.0f / (1.0f + expf(-x));
    default: return x;
  }
}

// x[r, c] = act(x[r, c] + bias[c]); bias may be null.
extern "C" __global__ void tp_bias_act(float* x, const float* bias, int rows, int cols, int act) {
  long n = (long) rows * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    float v = x[i];
    if (bias != 0) {
      v += bias[i % cols];
    }
    x[i] = tp_act(v, act);
  }
}

// dst[i] += src[i]
extern "C" __global__ void tp_add(float* dst, const float* src, long n) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    dst[i] += src[i];
  }
}

// x[i] *= s (s = 0 writes zeros, whatever x held)
extern "C" __global__ void tp_scale(float* x, long n, float s) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    x[i] = s == 0.0f ? 0.0f : x[i] * s;
  }
}

// Block-wide sum and max (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float tp_block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  int warps = blockDim.x >> 5;
  v = lane < warps ? shared[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ float tp_block_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  int warps = blockDim.x >> 5;
  v = lane < warps ? shared[lane] : TP_NEG_INF;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Softmax over each row (one block per row) of scale * x, with an optional causal mask for attention
// scores laid out as rows of kLen keys, qLen query rows per head: query q = row % qLen sees keys
// j <= q + (kLen - qLen). Plain softmax: scale 1, causal 0. A fully masked row becomes zeros.
extern "C" __global__ void tp_softmax_rows(float* x, int rows, int cols, float scale, int causal, int qLen) {
  __shared__ float shared[32];
  int row = blockIdx.x;
  if (row >= rows) return;
  float* p = x + (long) row * cols;
  int limit = cols;
  if (causal) {
    int q = row % qLen;
    limit = q + (cols - qLen) + 1;
    if (limit > cols) limit = cols;
    if (limit < 0) limit = 0;
  }
  float m = TP_NEG_INF;
  for (int c = threadIdx.x; c < limit; c += blockDim.x) m = fmaxf(m, p[c] * scale);
  m = tp_block_max(m, shared);
  float s = 0.0f;
  for (int c = threadIdx.x; c < limit; c += blockDim.x) s += expf(p[c] * scale - m);
  s = tp_block_sum(s, shared);
  float inv = s > 0.0f ? 1.0f / s : 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    p[c] = c < limit ? expf(p[c] * scale - m) * inv : 0.0f;
  }
}

// Layer norm over each row (one block per row): (x - mean) / sqrt(var + eps) * gamma + beta, biased
// variance, fp32 accumulation, two passes. gamma and beta may be null.
extern "C" __global__ void tp_layer_norm(float* x, const float* gamma, const float* beta, int rows, int cols,
    float eps) {
  __shared__ float shared[32];
  int row = blockIdx.x;
  if (row >= rows) return;
  float* p = x + (long) row * cols;
  float s = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) s += p[c];
  float mean = tp_block_sum(s, shared) / cols;
  float v = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float d = p[c] - mean;
    v += d * d;
  }
  float rstd = rsqrtf(tp_block_sum(v, shared) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float y = (p[c] - mean) * rstd;
    if (gamma != 0) y *= gamma[c];
    if (beta != 0) y += beta[c];
    p[c] = y;
  }
}

// RMSNorm over each row (one block per row): x / sqrt(mean(x^2) + eps) * gamma; gamma may be null.
extern "C" __global__ void tp_rms_norm(float* x, const float* gamma, int rows, int cols, float eps) {
  __shared__ float shared[32];
  int row = blockIdx.x;
  if (row >= rows) return;
  float* p = x + (long) row * cols;
  float s = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) s += p[c] * p[c];
  float r = rsqrtf(tp_block_sum(s, shared) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float y = p[c] * r;
    if (gamma != 0) y *= gamma[c];
    p[c] = y;
  }
}

// Storage loads and stores: f32, bf16 (bits), f16 (PTX cvt). Tag types pick the 16-bit format.
struct tp_bf16 { unsigned short bits; };
struct tp_f16 { unsigned short bits; };
__device__ __forceinline__ float tp_ld(const float* p) { return *p; }
__device__ __forceinline__ float tp_ld(const tp_bf16* p) { return __uint_as_float(((unsigned int) p->bits) << 16); }
__device__ __forceinline__ float tp_ld(const tp_f16* p) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
  return f;
}
__device__ __forceinline__ void tp_st(float* p, float v) { *p = v; }
__device__ __forceinline__ void tp_st(tp_bf16* p, float v) {
  unsigned int u = __float_as_uint(v);
  p->bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short) ((u >> 16) | 0x40u)
      : (unsigned short) ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ void tp_st(tp_f16* p, float v) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  p->bits = h;
}

// out[r, :] = table[ids[r] - idStart, :] (widened to f32) when the id is in the shard, else zeros: the
// vocab-parallel lookup (the partial rows are summed over ranks).
template <typename T>
__device__ void tp_embedding_body(const T* table, int tableRows, int cols, int idStart, const int* ids, int n,
    float* out) {
  long total = (long) n * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int r = (int) (i / cols);
    int c = (int) (i % cols);
    int local = ids[r] - idStart;
    out[i] = (local >= 0 && local < tableRows) ? tp_ld(table + (long) local * cols + c) : 0.0f;
  }
}

extern "C" __global__ void tp_embedding(const float* table, int tableRows, int cols, int idStart, const int* ids,
    int n, float* out) {
  tp_embedding_body(table, tableRows, cols, idStart, ids, n, out);
}
extern "C" __global__ void tp_embedding_bf16(const unsigned short* table, int tableRows, int cols, int idStart,
    const int* ids, int n, float* out) {
  tp_embedding_body((const tp_bf16*) table, tableRows, cols, idStart, ids, n, out);
}
extern "C" __global__ void tp_embedding_f16(const unsigned short* table, int tableRows, int cols, int idStart,
    const int* ids, int n, float* out) {
  tp_embedding_body((const tp_f16*) table, tableRows, cols, idStart, ids, n, out);
}

// out[b, :] = sum (or mean over the whole bag size) of table rows of ids[offsets[b] .. offsets[b+1]) that
// the shard holds.
template <typename T>
__device__ void tp_embedding_bag_body(const T* table, int tableRows, int cols, int idStart, const int* ids,
    const int* offsets, int bags, int mean, float* out) {
  long total = (long) bags * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int b = (int) (i / cols);
    int c = (int) (i % cols);
    int from = offsets[b], to = offsets[b + 1];
    float acc = 0.0f;
    for (int k = from; k < to; k++) {
      int local = ids[k] - idStart;
      if (local >= 0 && local < tableRows) acc += tp_ld(table + (long) local * cols + c);
    }
    if (mean && to > from) acc /= (float) (to - from);
    out[i] = acc;
  }
}

extern "C" __global__ void tp_embedding_bag(const float* table, int tableRows, int cols, int idStart,
    const int* ids, const int* offsets, int bags, int mean, float* out) {
  tp_embedding_bag_body(table, tableRows, cols, idStart, ids, offsets, bags, mean, out);
}
extern "C" __global__ void tp_embedding_bag_bf16(const unsigned short* table, int tableRows, int cols, int idStart,
    const int* ids, const int* offsets, int bags, int mean, float* out) {
  tp_embedding_bag_body((const tp_bf16*) table, tableRows, cols, idStart, ids, offsets, bags, mean, out);
}
extern "C" __global__ void tp_embedding_bag_f16(const unsigned short* table, int tableRows, int cols, int idStart,
    const int* ids, const int* offsets, int bags, int mean, float* out) {
  tp_embedding_bag_body((const tp_f16*) table, tableRows, cols, idStart, ids, offsets, bags, mean, out);
}

// Rotary position embedding, rotate-half form (Llama/NeoX as in Hugging Face), in place on `heads` heads of headDim
// columns from column col of x [rows, stride] (Backend.rope): row r has position positions[r], and for
// i < headDim / 2 the pair (x_i, x_{i + half}) turns by positions[r] * invFreq[i].
extern "C" __global__ void tp_rope(float* x, int rows, int stride, int col, int heads, int headDim,
    const int* positions, const float* invFreq) {
  int half = headDim / 2;
  long total = (long) rows * heads * half;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int k = (int) (i % half);
    long rh = i / half;
    int h = (int) (rh % heads);
    int r = (int) (rh / heads);
    double angle = (double) positions[r] * invFreq[k]; // as the CPU computes it
    double sd, cd;
    sincos(angle, &sd, &cd);
    float sn = (float) sd, cs = (float) cd;
    float* p = x + (long) r * stride + col + (long) h * headDim;
    float a = p[k], b = p[k + half];
    p[k] = a * cs - b * sn;
    p[k + half] = b * cs + a * sn;
  }
}

// fp32 -> bf16, round to nearest even (NaN stays NaN).
extern "C" __global__ void tp_cast_f32_bf16(const float* src, unsigned short* dst, long n) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    unsigned int u = __float_as_uint(src[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      dst[i] = (unsigned short) ((u >> 16) | 0x40u);
    } else {
      dst[i] = (unsigned short) ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
}

extern "C" __global__ void tp_cast_bf16_f32(const unsigned short* src, float* dst, long n) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    dst[i] = __uint_as_float(((unsigned int) src[i]) << 16);
  }
}

// fp32 <-> fp16 through the PTX conversions (round to nearest even).
extern "C" __global__ void tp_cast_f32_f16(const float* src, unsigned short* dst, long n) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(src[i]));
    dst[i] = h;
  }
}

extern "C" __global__ void tp_cast_f16_f32(const unsigned short* src, float* dst, long n) {
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < n; i += (long) gridDim.x * blockDim.x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(src[i]));
    dst[i] = f;
  }
}

// SwiGLU: out[r, j] = silu(gu[r, j]) * gu[r, half + j] for j < half (gu is [rows, 2 * half]).
extern "C" __global__ void tp_swiglu(const float* gu, int rows, int half, float* out) {
  long total = (long) rows * half;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    long r = i / half;
    int j = (int) (i % half);
    float g = gu[r * 2 * half + j];
    out[i] = g / (1.0f + expf(-g)) * gu[r * 2 * half + half + j];
  }
}

// dst[c, r] = src[r, c] for src [rows, cols] of 1-, 2- or 4-byte elements (copyRows with transpose: GPT-2's
// Conv1D [in, out] blocks into PyTorch's [out, in]); dst is the first element of the destination rows.
template <typename T>
__device__ void tp_transpose_body(const T* src, int rows, int cols, T* dst) {
  long total = (long) rows * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    long c = i / rows; // destination row
    long r = i % rows; // consecutive threads write consecutive destination elements
    dst[i] = src[r * cols + c];
  }
}
extern "C" __global__ void tp_transpose_u8(const unsigned char* src, int rows, int cols, unsigned char* dst) {
  tp_transpose_body(src, rows, cols, dst);
}
extern "C" __global__ void tp_transpose_u16(const unsigned short* src, int rows, int cols, unsigned short* dst) {
  tp_transpose_body(src, rows, cols, dst);
}
extern "C" __global__ void tp_transpose_u32(const unsigned int* src, int rows, int cols, unsigned int* dst) {
  tp_transpose_body(src, rows, cols, dst);
}

// ---- attention (prefill over a ragged batch, and decode over device-resident KV caches)
//
// One block per (query token t, KV head g): it serves every query head h with kvOf[h] == g (grouped-query
// attention: the group's heads share one read of K and V), TP_ATT_MAXG heads at a time. Keys go by tiles of
// TP_ATT_TILE with an online softmax (running max and sum per head, FlashAttention's rescaling), so any sequence
// length runs in fixed shared memory. Each thread owns (head, dim) pairs of the output accumulator.
// Metadata (meta, int32): offsets[nseq + 1], kvOf[heads], past[nseq] (decode only); caches: device addresses.

#define TP_ATT_TILE 32
#define TP_ATT_MAXG 8
#define TP_ATT_MAXD 256
#define TP_ATT_THREADS 256
#define TP_ATT_PAIRS ((TP_ATT_MAXG * TP_ATT_MAXD) / TP_ATT_THREADS)

// the sequence of token t: offsets[s] <= t < offsets[s + 1] (binary search; empty sequences skipped)
__device__ __forceinline__ int tp_seq_of(const int* offsets, int nseq, int t) {
  int lo = 0, hi = nseq - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (offsets[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// q: the query rows (row t at q + t * qStride, head h at h * headDim); keys j in [0, nKeys): K row j at
// k + j * kvStride, V row j at v + j * kvStride (the KV head's columns already added); out row t at
// out + t * outStride + h * headDim.
template <typename T>
__device__ void tp_attend(const float* q, long qStride, const T* k, const T* v, long kvStride, int nKeys,
    const int* heads, int nh, int headDim, float scale, float* out, long outStride) {
  __shared__ float qs[TP_ATT_MAXG * TP_ATT_MAXD];
  __shared__ float sc[TP_ATT_MAXG * TP_ATT_TILE];
  __shared__ float mrun[TP_ATT_MAXG], lrun[TP_ATT_MAXG], corr[TP_ATT_MAXG];
  int tid = threadIdx.x;
  int pairs = nh * headDim;
  for (int i = tid; i < pairs; i += blockDim.x) {
    qs[i] = q[(long) heads[i / headDim] * headDim + i % headDim];
  }
  if (tid < nh) {
    mrun[tid] = TP_NEG_INF;
    lrun[tid] = 0.0f;
  }
  float acc[TP_ATT_PAIRS];
  for (int p = 0; p < TP_ATT_PAIRS; p++) acc[p] = 0.0f;
  __syncthreads();
  int warp = tid >> 5, lane = tid & 31, warps = blockDim.x >> 5;
  for (int j0 = 0; j0 < nKeys; j0 += TP_ATT_TILE) {
    int tile = min(TP_ATT_TILE, nKeys - j0);
    // scores: one warp per (head, key) pair, lanes over the head dimension
    for (int pr = warp; pr < nh * TP_ATT_TILE; pr += warps) {
      int gi = pr / TP_ATT_TILE, j = pr % TP_ATT_TILE;
      float d = 0.0f;
      if (j < tile) {
        const T* kr = k + (long) (j0 + j) * kvStride;
        for (int x = lane; x < headDim; x += 32) d += qs[gi * headDim + x] * tp_ld(kr + x);
      }
      for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (lane == 0) sc[pr] = j < tile ? d * scale : TP_NEG_INF;
    }
    __syncthreads();
    if (tid < nh) {
      float mt = TP_NEG_INF;
      for (int j = 0; j < tile; j++) mt = fmaxf(mt, sc[tid * TP_ATT_TILE + j]);
      float mnew = fmaxf(mrun[tid], mt);
      corr[tid] = mrun[tid] == TP_NEG_INF ? 0.0f : expf(mrun[tid] - mnew);
      mrun[tid] = mnew;
    }
    __syncthreads();
    for (int pr = tid; pr < nh * TP_ATT_TILE; pr += blockDim.x) {
      int gi = pr / TP_ATT_TILE, j = pr % TP_ATT_TILE;
      sc[pr] = j < tile ? expf(sc[pr] - mrun[gi]) : 0.0f;
    }
    __syncthreads();
    if (tid < nh) {
      float s = 0.0f;
      for (int j = 0; j < tile; j++) s += sc[tid * TP_ATT_TILE + j];
      lrun[tid] = lrun[tid] * corr[tid] + s;
    }
    for (int p = 0; p < TP_ATT_PAIRS; p++) {
      int i = tid + p * blockDim.x;
      if (i < pairs) {
        int gi = i / headDim, x = i % headDim;
        float a = acc[p] * corr[gi];
        for (int j = 0; j < tile; j++) a += sc[gi * TP_ATT_TILE + j] * tp_ld(v + (long) (j0 + j) * kvStride + x);
        acc[p] = a;
      }
    }
    __syncthreads();
  }
  for (int p = 0; p < TP_ATT_PAIRS; p++) {
    int i = tid + p * blockDim.x;
    if (i < pairs) {
      int gi = i / headDim, x = i % headDim;
      out[(long) heads[gi] * headDim + x] = lrun[gi] > 0.0f ? acc[p] / lrun[gi] : 0.0f;
    }
  }
}

// the query heads of KV head g, from index `from` on: up to TP_ATT_MAXG of them into hs; returns how many, and
// in *next the index to continue from (heads at most 1024)
__device__ int tp_group(const int* kvOf, int heads, int g, int from, int* hs, int* next) {
  int n = 0, h = from;
  for (; h < heads && n < TP_ATT_MAXG; h++) {
    if (kvOf[h] == g) hs[n++] = h;
  }
  *next = h;
  return n;
}

// Prefill: grid (tokens, kvHeads). qkv [tokens, cols]; query head h at qCol + h * headDim; its K and V at
// kCol / vCol + kvOf[h] * headDim; causal: token i of a sequence sees keys 0..i, else the whole sequence.
extern "C" __global__ void tp_attention(const float* qkv, int cols, int qCol, int kCol, int vCol, int heads,
    int headDim, const int* meta, int nseq, int causal, float scale, float* out) {
  __shared__ int hs[TP_ATT_MAXG];
  __shared__ int nh, next;
  const int* offsets = meta;
  const int* kvOf = meta + nseq + 1;
  int t = blockIdx.x, g = blockIdx.y;
  int s = tp_seq_of(offsets, nseq, t);
  int start = offsets[s], n = offsets[s + 1] - start;
  int nKeys = causal ? t - start + 1 : n;
  for (int from = 0; from < heads; ) {
    if (threadIdx.x == 0) nh = tp_group(kvOf, heads, g, from, hs, &next);
    __syncthreads();
    if (nh > 0) {
      tp_attend(qkv + (long) t * cols + qCol, cols, qkv + (long) start * cols + kCol + (long) g * headDim,
          qkv + (long) start * cols + vCol + (long) g * headDim, cols, nKeys, hs, nh, headDim, scale,
          out + (long) t * heads * headDim, heads * headDim);
    }
    from = next;
    __syncthreads();
  }
}

// Writes the step's new keys and values into the caches: token t of sequence s (i-th new token) goes to row
// past[s] + i of caches[s] ([capacity, kvw], stored as T), from columns kvCol .. kvCol + kvw of qkv.
template <typename T>
__device__ void tp_kv_store_body(const float* qkv, int cols, int kvCol, int kvw, const int* meta, int nseq,
    int heads, const unsigned long long* caches, int tokens) {
  const int* offsets = meta;
  const int* past = meta + nseq + 1 + heads;
  long total = (long) tokens * kvw;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int t = (int) (i / kvw), c = (int) (i % kvw);
    int s = tp_seq_of(offsets, nseq, t);
    T* cache = (T*) caches[s];
    tp_st(cache + (long) (past[s] + t - offsets[s]) * kvw + c, qkv[(long) t * cols + kvCol + c]);
  }
}

// Decode: grid (tokens, kvHeads); query token i of sequence s attends to rows 0 .. past[s] + i of its cache
// (K heads then V heads, kvw = 2 * kvHeads * headDim wide), after tp_kv_store_* wrote the step's rows.
template <typename T>
__device__ void tp_cached_attention_body(const float* qkv, int cols, int qCol, int kvHeads, int heads, int headDim,
    const int* meta, int nseq, const unsigned long long* caches, float scale, float* out) {
  __shared__ int hs[TP_ATT_MAXG];
  __shared__ int nh, next;
  const int* offsets = meta;
  const int* kvOf = meta + nseq + 1;
  const int* past = kvOf + heads;
  int t = blockIdx.x, g = blockIdx.y;
  int s = tp_seq_of(offsets, nseq, t);
  int kvw = 2 * kvHeads * headDim;
  const T* cache = (const T*) caches[s];
  int nKeys = past[s] + (t - offsets[s]) + 1;
  for (int from = 0; from < heads; ) {
    if (threadIdx.x == 0) nh = tp_group(kvOf, heads, g, from, hs, &next);
    __syncthreads();
    if (nh > 0) {
      tp_attend(qkv + (long) t * cols + qCol, cols, cache + (long) g * headDim,
          cache + (long) (kvHeads + g) * headDim, kvw, nKeys, hs, nh, headDim, scale,
          out + (long) t * heads * headDim, heads * headDim);
    }
    from = next;
    __syncthreads();
  }
}

extern "C" __global__ void tp_kv_store_f32(const float* qkv, int cols, int kvCol, int kvw, const int* meta,
    int nseq, int heads, const unsigned long long* caches, int tokens) {
  tp_kv_store_body<float>(qkv, cols, kvCol, kvw, meta, nseq, heads, caches, tokens);
}
extern "C" __global__ void tp_kv_store_bf16(const float* qkv, int cols, int kvCol, int kvw, const int* meta,
    int nseq, int heads, const unsigned long long* caches, int tokens) {
  tp_kv_store_body<tp_bf16>(qkv, cols, kvCol, kvw, meta, nseq, heads, caches, tokens);
}
extern "C" __global__ void tp_kv_store_f16(const float* qkv, int cols, int kvCol, int kvw, const int* meta,
    int nseq, int heads, const unsigned long long* caches, int tokens) {
  tp_kv_store_body<tp_f16>(qkv, cols, kvCol, kvw, meta, nseq, heads, caches, tokens);
}
extern "C" __global__ void tp_cached_attention_f32(const float* qkv, int cols, int qCol, int kvHeads, int heads,
    int headDim, const int* meta, int nseq, const unsigned long long* caches, float scale, float* out) {
  tp_cached_attention_body<float>(qkv, cols, qCol, kvHeads, heads, headDim, meta, nseq, caches, scale, out);
}
extern "C" __global__ void tp_cached_attention_bf16(const float* qkv, int cols, int qCol, int kvHeads, int heads,
    int headDim, const int* meta, int nseq, const unsigned long long* caches, float scale, float* out) {
  tp_cached_attention_body<tp_bf16>(qkv, cols, qCol, kvHeads, heads, headDim, meta, nseq, caches, scale, out);
}
extern "C" __global__ void tp_cached_attention_f16(const float* qkv, int cols, int qCol, int kvHeads, int heads,
    int headDim, const int* meta, int nseq, const unsigned long long* caches, float scale, float* out) {
  tp_cached_attention_body<tp_f16>(qkv, cols, qCol, kvHeads, heads, headDim, meta, nseq, caches, scale, out);
}

// ---- the LM head's reductions on a vocabulary slice (vocab-parallel sampling)

// Per row of logits [rows, cols] (one block per row): out[r] = {max, index of the first max (as float, + idStart),
// log(sum(exp(x - max)))}: greedy choice and the log-softmax normaliser of this rank's slice; the ranks combine
// them with small collectives (max of maxes, then the sums rescaled).
extern "C" __global__ void tp_row_max_lse(const float* x, int rows, int cols, int idStart, float* out) {
  __shared__ float shared[32];
  __shared__ int sidx[32];
  int row = blockIdx.x;
  if (row >= rows) return;
  const float* p = x + (long) row * cols;
  float m = TP_NEG_INF;
  int mi = 0x7fffffff;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = p[c];
    if (v > m || (v == m && c < mi)) { m = v; mi = c; }
  }
  // arg-max: warp then block (ties to the lowest index, as torch.argmax)
  for (int o = 16; o > 0; o >>= 1) {
    float om = __shfl_xor_sync(0xffffffffu, m, o);
    int oi = __shfl_xor_sync(0xffffffffu, mi, o);
    if (om > m || (om == m && oi < mi)) { m = om; mi = oi; }
  }
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) { shared[warp] = m; sidx[warp] = mi; }
  __syncthreads();
  m = lane < warps ? shared[lane] : TP_NEG_INF;
  mi = lane < warps ? sidx[lane] : 0x7fffffff;
  for (int o = 16; o > 0; o >>= 1) {
    float om = __shfl_xor_sync(0xffffffffu, m, o);
    int oi = __shfl_xor_sync(0xffffffffu, mi, o);
    if (om > m || (om == m && oi < mi)) { m = om; mi = oi; }
  }
  float s = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(p[c] - m);
  s = tp_block_sum(s, shared);
  if (threadIdx.x == 0) {
    out[row * 3] = m;
    out[row * 3 + 1] = (float) (mi + idStart);
    out[row * 3 + 2] = logf(s);
  }
}
