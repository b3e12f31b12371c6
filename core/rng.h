// Philox4x32-10 counter-based RNG (Salmon et al., SC'11). Every random number is a pure function
// of (seed, offset, element index), so CPU and GPU kernels produce the same stream for the same
// seed, in any order and on any number of threads.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

namespace lvit {

#if defined(__CUDACC__)
#define LVIT_HD __host__ __device__ __forceinline__
#else
#define LVIT_HD inline
#endif

struct Philox {
  // The 64-bit product of two 32-bit words. On the GPU one mul.wide.u32 (a single IMAD.WIDE.U32):
  // written as a 64-bit multiply, nvcc emitted a 64 x 64-bit multiply that ptxas lowered to
  // IMAD.WIDE.U32 plus an add of a zero high part, two more instructions per Philox round
  // (Nsight Compute's instruction counts of the fused GELU + dropout kernel, H200).
  static LVIT_HD uint64_t mul_wide(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
    uint64_t p;
    asm("mul.wide.u32 %0, %1, %2;" : "=l"(p) : "r"(a), "r"(b));
    return p;
#else
    return static_cast<uint64_t>(a) * b;
#endif
  }

  // One Philox4x32-10 block: 4 random 32-bit words for counter (c0..c3) and key (k0, k1).
  static LVIT_HD void block(uint32_t c[4], uint32_t k0, uint32_t k1) {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = mul_wide(M0, c[0]), p1 = mul_wide(M1, c[2]);
      uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
      uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
      uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
      c[0] = n0;
      c[1] = lo1;
      c[2] = n2;
      c[3] = lo0;
      k0 += W0;
      k1 += W1;
    }
  }

  // L independent blocks in structure-of-arrays form (lane l: counter (c0[l], .., c3[l])),
  // written so that the compiler vectorises the rounds across lanes.
  template <int L>
  static inline void blocks(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3, uint32_t k0,
                            uint32_t k1) {
    // Lanes held as 64-bit vector elements (GCC/Clang vector extensions): the 32x32->64
    // products and the hi/lo split are then plain vector ops (vpmullq/vpsrlq on AVX-512).
    if constexpr (L % 8 != 0) {
      for (int l = 0; l < L; ++l) {  // odd lane counts: one scalar block per lane
        uint32_t c[4] = {c0[l], c1[l], c2[l], c3[l]};
        block(c, k0, k1);
        c0[l] = c[0];
        c1[l] = c[1];
        c2[l] = c[2];
        c3[l] = c[3];
      }
    } else {
      blocks_vec<L / 8>(c0, c1, c2, c3, k0, k1);
    }
  }

  // 8 * V lanes as V vectors of eight 64-bit elements.
  template <int V>
  static inline void blocks_vec(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3, uint32_t k0,
                                uint32_t k1) {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    typedef uint64_t u64x8 __attribute__((vector_size(64)));
    u64x8 a0[V], a1[V], a2[V], a3[V];
    for (int v = 0; v < V; ++v)
      for (int j = 0; j < 8; ++j) {
        a0[v][j] = c0[8 * v + j];
        a1[v][j] = c1[8 * v + j];
        a2[v][j] = c2[8 * v + j];
        a3[v][j] = c3[8 * v + j];
      }
    const u64x8 lo_mask = u64x8{} + 0xffffffffull;
    // 32 x 32 -> 64-bit products: every element holds a 32-bit value, so on AVX-512 this is one
    // vpmuludq (the low halves' product) where the generic 64-bit multiply is a 3-uop vpmullq.
    // (Written inline: a helper returning a 512-bit vector changes the ABI without AVX-512.)
    for (int r = 0; r < 10; ++r) {
      for (int v = 0; v < V; ++v) {
#if defined(__AVX512F__) && !defined(__CUDACC__)
        const u64x8 p0 = (u64x8)_mm512_mul_epu32((__m512i)a0[v], _mm512_set1_epi64(M0));
        const u64x8 p1 = (u64x8)_mm512_mul_epu32((__m512i)a2[v], _mm512_set1_epi64(M1));
#else
        const u64x8 p0 = a0[v] * static_cast<uint64_t>(M0);
        const u64x8 p1 = a2[v] * static_cast<uint64_t>(M1);
#endif
        a0[v] = (p1 >> 32) ^ a1[v] ^ static_cast<uint64_t>(k0);
        a2[v] = (p0 >> 32) ^ a3[v] ^ static_cast<uint64_t>(k1);
        a1[v] = p1 & lo_mask;
        a3[v] = p0 & lo_mask;
      }
      k0 += W0;
      k1 += W1;
    }
    for (int v = 0; v < V; ++v)
      for (int j = 0; j < 8; ++j) {
        c0[8 * v + j] = static_cast<uint32_t>(a0[v][j]);
        c1[8 * v + j] = static_cast<uint32_t>(a1[v][j]);
        c2[8 * v + j] = static_cast<uint32_t>(a2[v][j]);
        c3[8 * v + j] = static_cast<uint32_t>(a3[v][j]);
      }
  }

  // The four words of block blk of the stream (seed, offset): counter (blk, offset), key seed.
  // Word k is the stream's element 4 blk + k.
  static LVIT_HD void words(uint64_t seed, uint64_t offset, uint64_t blk, uint32_t (&c)[4]) {
    c[0] = static_cast<uint32_t>(blk);
    c[1] = static_cast<uint32_t>(blk >> 32);
    c[2] = static_cast<uint32_t>(offset);
    c[3] = static_cast<uint32_t>(offset >> 32);
    block(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  }

  // The 32-bit word for element i of the stream (seed, offset).
  static LVIT_HD uint32_t word(uint64_t seed, uint64_t offset, uint64_t i) {
    uint32_t c[4];
    words(seed, offset, i >> 2, c);
    return c[i & 3];
  }

  // Uniform in [0, 1) with 24 random bits (exact in f32).
  static LVIT_HD float uniform(uint64_t seed, uint64_t offset, uint64_t i) {
    return uniform_of(word(seed, offset, i));
  }
  static LVIT_HD float uniform_of(uint32_t word) {
    return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
  }

  // The word test of uniform >= p for 0 <= p < 1 (p < 1 as a float: ops::check_probability):
  // uniform_of(w) >= p iff w >= keep_threshold(p).
  // (w >> 8) 2^-24 >= p, with the 24-bit integer converted and scaled exactly, holds iff
  // w >> 8 >= ceil(p 2^24) (p 2^24 is exact in fp32), i.e. iff w >= 256 ceil(p 2^24), which
  // fits in 32 bits for p < 1. The GPU mask kernels use it: one integer compare per element.
  static LVIT_HD uint32_t keep_threshold(float p) {
    return p <= 0.0f ? 0u : static_cast<uint32_t>(ceilf(p * 16777216.0f)) << 8;
  }
};

// A seed plus a running offset: every consumer reserves a fresh offset, so two calls never share
// numbers. The state (seed, offset) is what checkpoints save.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  uint64_t next_offset() { return offset_++; }

  // Host conveniences (each reserves a new offset).
  float uniform();             // [0, 1)
  uint64_t next_u64();         // 64 random bits
  int64_t randint(int64_t n);  // [0, n)
  double normal(double mean, double std);

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// Standard normal for element i of stream (seed, offset), by Box-Muller.
double philox_normal(uint64_t seed, uint64_t offset, uint64_t i);
// out[i] = philox_normal(seed, offset, i) for i < n, one Philox block per 4 values.
void fill_normal(double* out, uint64_t n, uint64_t seed, uint64_t offset);

}  // namespace lvit
