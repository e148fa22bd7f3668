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

// out[r, :] = table[ids[r] - idStart, :] when the id is in the shard, else zeros.
extern "C" __global__ void tp_embedding(const float* table, int tableRows, int cols, int idStart, const int* ids,
    int n, float* out) {
  long total = (long) n * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int r = (int) (i / cols);
    int c = (int) (i % cols);
    int local = ids[r] - idStart;
    out[i] = (local >= 0 && local < tableRows) ? table[(long) local * cols + c] : 0.0f;
  }
}

// out[b, :] = sum (or mean over the whole bag size) of table rows of ids[offsets[b] .. offsets[b+1]) that
// the shard holds.
extern "C" __global__ void tp_embedding_bag(const float* table, int tableRows, int cols, int idStart,
    const int* ids, const int* offsets, int bags, int mean, float* out) {
  long total = (long) bags * cols;
  for (long i = blockIdx.x * (long) blockDim.x + threadIdx.x; i < total; i += (long) gridDim.x * blockDim.x) {
    int b = (int) (i / cols);
    int c = (int) (i % cols);
    int from = offsets[b], to = offsets[b + 1];
    float acc = 0.0f;
    for (int k = from; k < to; k++) {
      int local = ids[k] - idStart;
      if (local >= 0 && local < tableRows) acc += table[(long) local * cols + c];
    }
    if (mean && to > from) acc /= (float) (to - from);
    out[i] = acc;
  }
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
