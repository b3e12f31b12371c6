// Ripple attention on the CPU, parallel over (image, head). Each task copies its head's
// phi(q), phi(k) [n, d] and v augmented with a ones column [n, d+1] out of the fused qkv rows
// into scratch (O(n d)), so that one product yields numerator and denominator together:
// [num_i, den_i] = sum_j w(i, j) phi(q_i).phi(k_j) [v_j, 1].
//
// Backward. With o_i = num_i / (den_i + eps) and upstream g_i, the loss is linear in
// [num_i, den_i] with coefficients uu_i = [g_i, -g_i.o_i] / (den_i + eps) (d+1 values), so
//   dL/dA_ij = w_ij (uu_i . [v_j, 1]),  dL/dv_j = sum_i w_ij A_ij uu_i[:d],
//   dL/dw_ij = A_ij (uu_i . [v_j, 1])   (A_ij = phi(q_i).phi(k_j)),
// and phi(x) = elu(x) + 1 has phi'(x) = 1 for x > 0, exp(x) otherwise, i.e. min(phi(x), 1).
#include "ops/cpu/ripple.h"

#include <Eigen/Core>
#include <algorithm>
#include <bit>
#include <cmath>

#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace lvit::cpu {

namespace {

constexpr double kEps = 1e-6;  // the denominator's eps (DESIGN.md)

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// phi(x) = elu(x) + 1 = x + 1 (x > 0), exp(x) (x <= 0), written as max(x, 0) + exp(min(x, 0))
// so that Eigen vectorises it (its select() is scalar); phi'(x) = 1 (x > 0), exp(x) (x <= 0)
// equals min(phi(x), 1), so backward needs no second exp.
template <typename T>
void phi_inplace(RowMat<T>& x) {
  auto a = x.array();
  a = a.max(T(0)) + a.min(T(0)).exp();
}

struct Dims {
  int64_t B, N, D, H, d, S, g;
};
Dims dims_of(const Tensor& qkv, const RippleArgs& a) {
  const int64_t D = qkv.shape()[2] / 3;
  return {qkv.shape()[0], qkv.shape()[1], D, a.heads, D / a.heads, a.stages, a.grid};
}

// Grid cells in a level-s block: 4^s, or the whole grid once 2^s reaches its side.
int64_t block_cells(int64_t s, int64_t g) {
  const int64_t side = (int64_t{1} << s) < g ? int64_t{1} << s : g;  // s <= 31 (op checks S)
  return side * side;
}

std::vector<int64_t> identity_order(int64_t n) {
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  return perm;
}

// Scratch row p of the linear form holds token perm[p]: the class token first, then the grid
// cells in Morton (Z) order, so that every level-s dyadic block (2^s x 2^s cells) is the
// contiguous run of rows [1 + k 4^s, 1 + (k+1) 4^s).
std::vector<int64_t> morton_order(int64_t g) {
  std::vector<int64_t> perm(1 + g * g);
  perm[0] = 0;
  for (int64_t r = 0; r < g; ++r)
    for (int64_t c = 0; c < g; ++c) {
      uint64_t z = 0;
      for (int bit = 0; (int64_t{1} << bit) < g; ++bit) {
        z |= ((static_cast<uint64_t>(c) >> bit) & 1u) << (2 * bit);
        z |= ((static_cast<uint64_t>(r) >> bit) & 1u) << (2 * bit + 1);
      }
      perm[1 + z] = 1 + r * g + c;
    }
  return perm;
}

// lambda(i, j) in token order, [N * N]: the class token pairs with everything at stage S-1;
// grid cells at the level of their smallest common dyadic block, i.e. the bit length of
// (r_i ^ r_j) | (c_i ^ c_j), capped at S-1.
std::vector<uint8_t> stage_matrix(int64_t g, int64_t S) {
  const int64_t n = 1 + g * g;
  std::vector<uint8_t> lam(n * n, static_cast<uint8_t>(S - 1));
  for (int64_t i = 0; i < g * g; ++i)
    for (int64_t j = 0; j < g * g; ++j) {
      const uint64_t x = static_cast<uint64_t>(((i / g) ^ (j / g)) | ((i % g) ^ (j % g)));
      const int64_t l = std::bit_width(x);
      lam[(1 + i) * n + 1 + j] = static_cast<uint8_t>(std::min(l, S - 1));
    }
  return lam;
}

// One (image, head)'s inputs in scratch order: fq = phi(q), fk = phi(k) [n, d], va = [v, 1].
template <typename T>
struct HeadInputs {
  RowMat<T> fq, fk, va;
  void load(const T* qkv_img, const Dims& m, int64_t h, const std::vector<int64_t>& perm) {
    fq.resize(m.N, m.d);
    fk.resize(m.N, m.d);
    va.resize(m.N, m.d + 1);
    for (int64_t p = 0; p < m.N; ++p) {
      const T* row = qkv_img + perm[p] * 3 * m.D + h * m.d;
      std::copy(row, row + m.d, fq.data() + p * m.d);
      std::copy(row + m.D, row + m.D + m.d, fk.data() + p * m.d);
      std::copy(row + 2 * m.D, row + 2 * m.D + m.d, va.data() + p * (m.d + 1));
      va(p, m.d) = T(1);
    }
    phi_inplace(fq);
    phi_inplace(fk);
  }
};

// o_t = num / (den + eps) for token t = perm[p]; den is saved for backward.
template <typename T>
void store_out(const RowMat<T>& numa, const Dims& m, int64_t h, const std::vector<int64_t>& perm,
               T* out_img, T* den_bh) {
  for (int64_t p = 0; p < m.N; ++p) {
    const int64_t t = perm[p];
    const T den = numa(p, m.d);
    const T inv = T(1) / (den + T(kEps));
    T* o = out_img + t * m.D + h * m.d;
    for (int64_t c = 0; c < m.d; ++c) o[c] = numa(p, c) * inv;
    den_bh[t] = den;
  }
}

// uu [n, d+1] (scratch order): d loss / d [num_i, den_i] = [g_i, -g_i.o_i] / (den_i + eps).
template <typename T>
void load_uu(const T* gout_img, const T* out_img, const T* den_bh, const Dims& m, int64_t h,
             const std::vector<int64_t>& perm, RowMat<T>& uu) {
  uu.resize(m.N, m.d + 1);
  for (int64_t p = 0; p < m.N; ++p) {
    const int64_t t = perm[p];
    const T* g = gout_img + t * m.D + h * m.d;
    const T* o = out_img + t * m.D + h * m.d;
    const T inv = T(1) / (den_bh[t] + T(kEps));
    T go = 0;
    for (int64_t c = 0; c < m.d; ++c) {
      uu(p, c) = g[c] * inv;
      go += g[c] * o[c];
    }
    uu(p, m.d) = -go * inv;
  }
}

// Chains d/d phi(q), d/d phi(k) through phi' = min(phi, 1) (in place) and writes them with
// d/dv into the fused gqkv rows.
template <typename T>
void store_grads(RowMat<T>& gfq, RowMat<T>& gfk, const RowMat<T>& gv, const HeadInputs<T>& in,
                 const Dims& m, int64_t h, const std::vector<int64_t>& perm, T* gqkv_img) {
  gfq.array() *= in.fq.array().min(T(1));
  gfk.array() *= in.fk.array().min(T(1));
  for (int64_t p = 0; p < m.N; ++p) {
    T* gx = gqkv_img + perm[p] * 3 * m.D + h * m.d;
    std::copy(gfq.data() + p * m.d, gfq.data() + (p + 1) * m.d, gx);
    std::copy(gfk.data() + p * m.d, gfk.data() + (p + 1) * m.d, gx + m.D);
    std::copy(gv.data() + p * m.d, gv.data() + (p + 1) * m.d, gx + 2 * m.D);
  }
}

// Per-(image, head) alpha gradients [B*H, S] -> summed over the batch in a fixed order, so the
// result does not depend on the thread count.
void reduce_galpha(const std::vector<double>& per_bh, const Dims& m, std::vector<double>& galpha) {
  galpha.assign(m.H * m.S, 0.0);
  for (int64_t b = 0; b < m.B; ++b)
    for (int64_t i = 0; i < m.H * m.S; ++i) galpha[i] += per_bh[b * m.H * m.S + i];
}

}  // namespace

// ---- dense reference: the weighted n x n kernel per head ----

void ripple_dense_fwd(const Tensor& qkv, const RippleArgs& a, Tensor& out, Tensor& den) {
  const Dims m = dims_of(qkv, a);
  const std::vector<uint8_t> lam = stage_matrix(m.g, m.S);
  const std::vector<int64_t> perm = identity_order(m.N);
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "ripple_dense_fwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    T* pout = out.data<T>();
    T* pden = den.data<T>();
    parallel_for(m.B * m.H, 1, [&](int64_t s0, int64_t s1) {
      HeadInputs<T> in;
      RowMat<T> w(m.N, m.N), numa(m.N, m.d + 1);
      std::vector<T> al(m.S);
      for (int64_t bh = s0; bh < s1; ++bh) {
        const int64_t b = bh / m.H, h = bh % m.H;
        for (int64_t s = 0; s < m.S; ++s) al[s] = static_cast<T>(a.alpha[h * m.S + s]);
        in.load(pqkv + b * m.N * 3 * m.D, m, h, perm);
        w.noalias() = in.fq * in.fk.transpose();  // A_ij = phi(q_i).phi(k_j)
        for (int64_t i = 0; i < m.N * m.N; ++i) w.data()[i] *= al[lam[i]];
        numa.noalias() = w * in.va;  // [num, den]
        store_out(numa, m, h, perm, pout + b * m.N * m.D, pden + bh * m.N);
      }
    });
  });
}

void ripple_dense_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out, const Tensor& den,
                      const RippleArgs& a, Tensor& gqkv, std::vector<double>& galpha) {
  const Dims m = dims_of(qkv, a);
  const std::vector<uint8_t> lam = stage_matrix(m.g, m.S);
  const std::vector<int64_t> perm = identity_order(m.N);
  std::vector<double> per_bh(m.B * m.H * m.S, 0.0);
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "ripple_dense_bwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    const T* pgo = gout.data<T>();
    const T* pout = out.data<T>();
    const T* pden = den.data<T>();
    T* pg = gqkv.data<T>();
    parallel_for(m.B * m.H, 1, [&](int64_t s0, int64_t s1) {
      HeadInputs<T> in;
      RowMat<T> A(m.N, m.N), G(m.N, m.N), uu, gfq(m.N, m.d), gfk(m.N, m.d), gv(m.N, m.d);
      std::vector<T> al(m.S);
      for (int64_t bh = s0; bh < s1; ++bh) {
        const int64_t b = bh / m.H, h = bh % m.H;
        for (int64_t s = 0; s < m.S; ++s) al[s] = static_cast<T>(a.alpha[h * m.S + s]);
        in.load(pqkv + b * m.N * 3 * m.D, m, h, perm);
        load_uu(pgo + b * m.N * m.D, pout + b * m.N * m.D, pden + bh * m.N, m, h, perm, uu);
        A.noalias() = in.fq * in.fk.transpose();
        G.noalias() = uu * in.va.transpose();  // uu_i . [v_j, 1]
        double* ga = per_bh.data() + bh * m.S;
        for (int64_t i = 0; i < m.N * m.N; ++i) {
          const uint8_t s = lam[i];
          ga[s] += static_cast<double>(A.data()[i]) * G.data()[i];  // dL/dalpha
          A.data()[i] *= al[s];                                     // weighted kernel P
          G.data()[i] *= al[s];                                     // dL/dA
        }
        gv.noalias() = A.transpose() * uu.leftCols(m.d);
        gfq.noalias() = G * in.fk;
        gfk.noalias() = G.transpose() * in.fq;
        store_grads(gfq, gfk, gv, in, m, h, perm, pg + b * m.N * 3 * m.D);
      }
    });
  });
  reduce_galpha(per_bh, m, galpha);
}

// ---- linear-time telescoped form ----
// w(i, j) = alpha_{S-1} + sum_{s<S-1} (alpha_s - alpha_{s+1}) [j in B_s(i)]: one global term
// over all tokens plus, per level s < S-1, block-local attention with coefficient
// c_s = alpha_s - alpha_{s+1} over the blocks of m = min(4^s, g^2) grid rows (the class token,
// row 0, is in no block). A block is computed as (Q_b K_b^T) [V_b, 1] when m < d (O(m^2 d))
// and through K_b^T [V_b, 1] (d x (d+1)) otherwise (O(m d^2)); level 0 (m = 1) is the
// diagonal, done for all cells at once (one GEMM call per 1-cell block would cost more in call
// overhead than in arithmetic).

void ripple_linear_fwd(const Tensor& qkv, const RippleArgs& a, Tensor& out, Tensor& den) {
  const Dims m = dims_of(qkv, a);
  const std::vector<int64_t> perm = morton_order(m.g);
  const int64_t cells = m.g * m.g;  // grid rows 1 .. N-1 of the scratch
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "ripple_linear_fwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    T* pout = out.data<T>();
    T* pden = den.data<T>();
    parallel_for(m.B * m.H, 1, [&](int64_t s0, int64_t s1) {
      HeadInputs<T> in;
      RowMat<T> numa(m.N, m.d + 1), kv(m.d, m.d + 1), blk;
      for (int64_t bh = s0; bh < s1; ++bh) {
        const int64_t b = bh / m.H, h = bh % m.H;
        const double* al = a.alpha.data() + h * m.S;
        in.load(pqkv + b * m.N * 3 * m.D, m, h, perm);
        kv.noalias() = in.fk.transpose() * in.va;  // [KV_all, z_all]
        numa.noalias() = static_cast<T>(al[m.S - 1]) * (in.fq * kv);
        for (int64_t s = 0; s + 1 < m.S; ++s) {
          const T c = static_cast<T>(al[s] - al[s + 1]);
          const int64_t mb = block_cells(s, m.g);
          if (mb == 1) {  // level 0: each cell alone, o_i += c (phi(q_i).phi(k_i)) [v_i, 1]
            auto Q = in.fq.bottomRows(cells), K = in.fk.bottomRows(cells);
            numa.bottomRows(cells).noalias() +=
                c * (Q.cwiseProduct(K).rowwise().sum().asDiagonal() * in.va.bottomRows(cells));
            continue;
          }
          for (int64_t r0 = 1; r0 < m.N; r0 += mb) {
            auto Q = in.fq.middleRows(r0, mb);
            auto K = in.fk.middleRows(r0, mb);
            auto V = in.va.middleRows(r0, mb);
            if (mb < m.d) {
              blk.noalias() = Q * K.transpose();  // [m, m]
              numa.middleRows(r0, mb).noalias() += c * (blk * V);
            } else {
              blk.noalias() = K.transpose() * V;  // [d, d+1]
              numa.middleRows(r0, mb).noalias() += c * (Q * blk);
            }
          }
        }
        store_out(numa, m, h, perm, pout + b * m.N * m.D, pden + bh * m.N);
      }
    });
  });
}

// Each term X (global or one block, coefficient c) contributes c Q_X [KV_X, z_X]; with
// GQ_X = Q_X^T uu_X its gradients are dQ_X = c uu_X [KV,z]^T, dK_X = c [V,1]_X GQ_X^T,
// dV_X = c K_X GQ_X[:, :d] and dc = <GQ_X, [KV,z]> (or, in the (Q K^T) V form, with
// A = Q K^T and G = uu [V,1]^T: dQ = c G K, dK = c G^T Q, dV = c A^T uu[:, :d], dc = <A, G>).
// dc for level s goes to alpha_s with + and to alpha_{s+1} with -.
void ripple_linear_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& out, const Tensor& den,
                       const RippleArgs& a, Tensor& gqkv, std::vector<double>& galpha) {
  const Dims m = dims_of(qkv, a);
  const std::vector<int64_t> perm = morton_order(m.g);
  const int64_t cells = m.g * m.g;  // grid rows 1 .. N-1 of the scratch
  std::vector<double> per_bh(m.B * m.H * m.S, 0.0);
  LVIT_DISPATCH_FLOAT(qkv.dtype(), "ripple_linear_bwd", [&] {
    using T = scalar_t;
    const T* pqkv = qkv.data<T>();
    const T* pgo = gout.data<T>();
    const T* pout = out.data<T>();
    const T* pden = den.data<T>();
    T* pg = gqkv.data<T>();
    parallel_for(m.B * m.H, 1, [&](int64_t s0, int64_t s1) {
      HeadInputs<T> in;
      RowMat<T> uu, gfq(m.N, m.d), gfk(m.N, m.d), gv(m.N, m.d);
      RowMat<T> kv(m.d, m.d + 1), gq(m.d, m.d + 1), A, G;
      for (int64_t bh = s0; bh < s1; ++bh) {
        const int64_t b = bh / m.H, h = bh % m.H;
        const double* al = a.alpha.data() + h * m.S;
        double* ga = per_bh.data() + bh * m.S;
        in.load(pqkv + b * m.N * 3 * m.D, m, h, perm);
        load_uu(pgo + b * m.N * m.D, pout + b * m.N * m.D, pden + bh * m.N, m, h, perm, uu);

        // global term, coefficient alpha_{S-1}
        const T aL = static_cast<T>(al[m.S - 1]);
        kv.noalias() = in.fk.transpose() * in.va;
        gq.noalias() = in.fq.transpose() * uu;
        gfq.noalias() = aL * (uu * kv.transpose());
        gfk.noalias() = aL * (in.va * gq.transpose());
        gv.noalias() = aL * (in.fk * gq.leftCols(m.d));
        ga[m.S - 1] += static_cast<double>(gq.cwiseProduct(kv).sum());

        for (int64_t s = 0; s + 1 < m.S; ++s) {
          const T c = static_cast<T>(al[s] - al[s + 1]);
          const int64_t mb = block_cells(s, m.g);
          double dc = 0;
          if (mb == 1) {  // level 0, diagonal: A_ii = phi(q_i).phi(k_i), G_ii = uu_i . [v_i, 1]
            auto Q = in.fq.bottomRows(cells), K = in.fk.bottomRows(cells);
            auto V = in.va.bottomRows(cells), U = uu.bottomRows(cells);
            const Eigen::Matrix<T, Eigen::Dynamic, 1> ad = Q.cwiseProduct(K).rowwise().sum();
            const Eigen::Matrix<T, Eigen::Dynamic, 1> gd = U.cwiseProduct(V).rowwise().sum();
            dc = static_cast<double>(ad.dot(gd));
            gfq.bottomRows(cells).noalias() += c * (gd.asDiagonal() * K);
            gfk.bottomRows(cells).noalias() += c * (gd.asDiagonal() * Q);
            gv.bottomRows(cells).noalias() += c * (ad.asDiagonal() * U.leftCols(m.d));
          } else {
            for (int64_t r0 = 1; r0 < m.N; r0 += mb) {
              auto Q = in.fq.middleRows(r0, mb);
              auto K = in.fk.middleRows(r0, mb);
              auto V = in.va.middleRows(r0, mb);
              auto U = uu.middleRows(r0, mb);
              if (mb < m.d) {
                A.noalias() = Q * K.transpose();  // [m, m]
                G.noalias() = U * V.transpose();  // [m, m]
                dc += static_cast<double>(A.cwiseProduct(G).sum());
                gfq.middleRows(r0, mb).noalias() += c * (G * K);
                gfk.middleRows(r0, mb).noalias() += c * (G.transpose() * Q);
                gv.middleRows(r0, mb).noalias() += c * (A.transpose() * U.leftCols(m.d));
              } else {
                kv.noalias() = K.transpose() * V;  // [d, d+1]
                gq.noalias() = Q.transpose() * U;  // [d, d+1]
                dc += static_cast<double>(gq.cwiseProduct(kv).sum());
                gfq.middleRows(r0, mb).noalias() += c * (U * kv.transpose());
                gfk.middleRows(r0, mb).noalias() += c * (V * gq.transpose());
                gv.middleRows(r0, mb).noalias() += c * (K * gq.leftCols(m.d));
              }
            }
          }
          ga[s] += dc;
          ga[s + 1] -= dc;
        }
        store_grads(gfq, gfk, gv, in, m, h, perm, pg + b * m.N * 3 * m.D);
      }
    });
  });
  reduce_galpha(per_bh, m, galpha);
}

}  // namespace lvit::cpu
