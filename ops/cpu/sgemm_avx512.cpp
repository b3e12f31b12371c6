// fp32 GEMM for AVX-512, Goto/BLIS style. Loops, outermost first:
//   jc: up to kNCMax columns      pc: a KC-deep slice of K -> pack op(B)[pc, jc] as NR-wide
//                                     panels, shared by all threads (each packs a share)
//   row tasks (MR-multiples, at most MC rows), handed to whichever thread is free
//                                 -> pack op(A)[rows, pc] as MR-tall panels
//   jb: kNL2 columns of packed B, which stay in L2 while
//   ir: one MR-tall A panel (stays in L1) sweeps
//   jr: the NR-wide B panels of the jb block -> micro-kernel: an MR x NR tile of C in registers.
// K is never split between threads, and every C element sums its K terms in the same order
// whoever computes it, so results are bitwise reproducible for any thread count.
#include "ops/cpu/sgemm_avx512.h"

#if LVIT_HAVE_SGEMM_AVX512

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <new>

#include "core/thread_pool.h"

namespace lvit::cpu {

namespace {

// Micro-tile: kMR rows x kNV vectors of 16 floats. 14 x 2 uses 28 of the 32 zmm registers for
// accumulators, 2 for the row of B and one for the broadcast of A; per k it issues 28 FMAs
// against 2 vector loads and 14 broadcasts, which keeps both FMA ports busy. 12 x 32, 8 x 48 and
// 6 x 64 measured the same within the VM's noise on the ViT-S shapes.
constexpr int kMR = 14;
constexpr int kNV = 2;
constexpr int kNR = 16 * kNV;
// Sizes for a 48 KB L1d and 2 MB L2 per core: the A panel (kMR x kKC, 21 KB) stays in L1 while
// it sweeps kNL2 columns of packed B (kKC x kNL2, 768 KB, in L2); the MC x KC block of A (258 KB)
// is read from L2 once per kNL2 columns. KC 384 measured up to 15% faster than 256 (fewer C tile
// round trips and packing passes), and this order faster than keeping the B panel in L1.
constexpr int64_t kKC = 384;
constexpr int64_t kMC = 12 * kMR;
constexpr int64_t kNL2 = 512;
// Columns of B packed per K slice: bounds the packed B to 6 MB.
constexpr int64_t kNCMax = 4096;

// A 64-byte aligned buffer that only grows, reused across calls: per thread for packed A, the
// calling thread's for the packed B that all threads read.
class Scratch {
 public:
  ~Scratch() { std::free(data_); }
  float* get(int64_t n) {
    if (n > size_) {
      std::free(data_);
      size_ = 0;
      const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      size_ = n;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  int64_t size_ = 0;
};
thread_local Scratch t_packed_a, t_packed_b;

// The first `n` (0..16) lanes.
inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// r[i] lane j -> r[j] lane i: unpack pairs of rows, shuffle quads within 128-bit lanes, then
// transpose the 4 x 4 grid of 128-bit lanes. 64 shuffles for 256 floats.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[4g + q], 128-bit lane L: column 4L + q of rows 4g .. 4g + 3.
  __m512 u[16];
  for (int g = 0; g < 16; g += 4) {
    u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
    u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
    u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    const __m512 lo01 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x44);
    const __m512 hi01 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x44);
    const __m512 hi23 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xEE);
    r[q] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    r[4 + q] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    r[8 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    r[12 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
}

// Packs the `width` x kc operand slice whose element (w, k) is src[w * sw + k * sk] into
// W-wide panels: panel p holds dst[p * W * kc + k * W + w'] for w = p * W + w', zero-padded to a
// multiple of W so the micro-kernel always runs full tiles. Either sw or sk is 1.
template <int W>
void pack_panels(const float* src, int64_t sw, int64_t sk, int64_t width, int64_t kc, float* dst) {
  for (int64_t p0 = 0; p0 < width; p0 += W, dst += W * kc) {
    const int64_t w = std::min<int64_t>(W, width - p0);
    const float* s = src + p0 * sw;
    if (sw == 1) {
      // Panel rows are contiguous in the source (op(B) = B, op(A) = A^T): a masked row copy.
      for (int64_t k = 0; k < kc; ++k)
        for (int v = 0; v < W; v += 16) {
          const __m512 x = _mm512_maskz_loadu_ps(lanes(w - v), s + k * sk + v);
          _mm512_mask_storeu_ps(dst + k * W + v, lanes(W - v), x);
        }
      continue;
    }
    // The source rows run along k (op(A) = A, op(B) = B^T): 16 x 16 blocks through registers.
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int64_t kn = std::min<int64_t>(16, kc - k0);
      for (int v = 0; v < W; v += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = v + i < w ? _mm512_maskz_loadu_ps(lanes(kn), s + (v + i) * sw + k0)
                           : _mm512_setzero_ps();
        transpose16x16(r);
        for (int64_t k = 0; k < kn; ++k)
          _mm512_mask_storeu_ps(dst + (k0 + k) * W + v, lanes(W - v), r[k]);
      }
    }
  }
}

// C tile (mr <= kMR rows, nr <= kNR columns at c) = sum_k pa[k] (x) pb[k] + beta * C (+ the
// row vector bias, the tile's nr entries, where given), where pa holds kMR floats and pb kNR
// floats per k. beta == 0 writes C without reading it.
template <int kMR, int kNV>
void micro_kernel(int64_t kc, const float* __restrict pa, const float* __restrict pb, float* c,
                  int64_t ldc, int64_t mr, int64_t nr, float beta, const float* bias) {
  constexpr int kNR = 16 * kNV;
  __m512 acc[kMR][kNV];
#pragma GCC unroll 32
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) b[v] = _mm512_load_ps(pb + k * kNR + 16 * v);
#pragma GCC unroll 32
    for (int i = 0; i < kMR; ++i) {
      const __m512 a = _mm512_set1_ps(pa[k * kMR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
  }
  __mmask16 mask[kNV];
  for (int v = 0; v < kNV; ++v) mask[v] = lanes(nr - 16 * v);
  const __m512 vbeta = _mm512_set1_ps(beta);
  __m512 vbias[kNV];
#pragma GCC unroll 4
  for (int v = 0; v < kNV; ++v)
    vbias[v] = bias ? _mm512_maskz_loadu_ps(mask[v], bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 32
  for (int i = 0; i < kMR; ++i) {
    if (i >= mr) break;
    float* row = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) {
      __m512 out = acc[i][v];
      if (beta != 0.f) {
        const __m512 old = _mm512_maskz_loadu_ps(mask[v], row + 16 * v);
        out = beta == 1.f ? _mm512_add_ps(old, out) : _mm512_fmadd_ps(vbeta, old, out);
      }
      if (bias) out = _mm512_add_ps(out, vbias[v]);
      _mm512_mask_storeu_ps(row + 16 * v, mask[v], out);
    }
  }
}

// The C rows [ic, ic + mc) of one K slice against the packed B slice pb (kc x nc, at column jc);
// bias (nullptr: none) is the row vector's entry for column jc.
void row_block(bool ta, int64_t ic, int64_t mc, int64_t jc, int64_t nc, int64_t pc, int64_t kc,
               const float* A, int64_t lda, const float* pb, float* C, int64_t ldc, float beta,
               const float* bias) {
  float* pa = t_packed_a.get(kc * ((mc + kMR - 1) / kMR * kMR));
  // op(A) element (i, k) is A[i * a_row + k * a_k].
  const int64_t a_row = ta ? 1 : lda, a_k = ta ? lda : 1;
  pack_panels<kMR>(A + ic * a_row + pc * a_k, a_row, a_k, mc, kc, pa);
  for (int64_t jb = 0; jb < nc; jb += kNL2) {
    const int64_t jb_end = std::min(nc, jb + kNL2);
    for (int64_t ir = 0; ir < mc; ir += kMR)
      for (int64_t jr = jb; jr < jb_end; jr += kNR)
        micro_kernel<kMR, kNV>(kc, pa + ir * kc, pb + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc,
                               std::min<int64_t>(kMR, mc - ir), std::min<int64_t>(kNR, nc - jr),
                               beta, bias ? bias + jr : nullptr);
  }
}

}  // namespace

void sgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float* C, int64_t ldc, float beta,
                  const float* bias) {
  if (M == 0 || N == 0) return;
  const int64_t threads = num_threads();
  // Row tasks: about four per thread, so a thread whose vCPU is stolen for a while holds up at
  // most a quarter of its share, but no more than MC rows (the packed A block's size) and never
  // less than one micro-tile.
  const int64_t per_task = (M + 4 * threads - 1) / (4 * threads);
  const int64_t task_rows = std::clamp((per_task + kMR - 1) / kMR * kMR, int64_t{kMR}, kMC);
  const int64_t tasks = (M + task_rows - 1) / task_rows;
  const int64_t nc_max = std::min(kNCMax, N);
  float* pb = t_packed_b.get(std::min(K, kKC) * ((nc_max + kNR - 1) / kNR * kNR));
  // op(B) element (k, j) is B[k * b_k + j * b_col].
  const int64_t b_col = tb ? ldb : 1, b_k = tb ? 1 : ldb;
  for (int64_t jc = 0; jc < N; jc += kNCMax) {
    const int64_t nc = std::min(kNCMax, N - jc);
    const int64_t panels = (nc + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc);
      parallel_for(panels, 4, [&](int64_t p0, int64_t p1) {
        pack_panels<kNR>(B + pc * b_k + (jc + p0 * kNR) * b_col, b_col, b_k,
                         std::min(nc, p1 * kNR) - p0 * kNR, kc, pb + p0 * kNR * kc);
      });
      parallel_tasks(tasks, [&](int64_t t) {
        const int64_t ic = t * task_rows;
        row_block(ta, ic, std::min(task_rows, M - ic), jc, nc, pc, kc, A, lda, pb, C, ldc,
                  pc == 0 ? beta : 1.f, pc == 0 && bias ? bias + jc : nullptr);
      });
    }
  }
}

}  // namespace lvit::cpu

#endif
