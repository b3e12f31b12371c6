#include "models/flops.h"

namespace lvit {

namespace {

// Token mixing of one block, per image: T tokens, D width, H heads of d channels.
double mixing_flops(const ViTConfig& c, const std::string& type) {
  const double T = static_cast<double>(c.tokens()), D = static_cast<double>(c.dim);
  const double d = D / static_cast<double>(c.num_heads);
  if (type == "softmax") {
    // Q K^T and P V: 2 * T^2 * D each; softmax: ~5 FLOPs per score (max, sub, exp, sum, scale).
    return 4.0 * T * T * D + 5.0 * T * T * c.num_heads;
  }
  if (type == "hydra") {
    // Normalising q and k (square-sum, root, divide: ~3 per element each), kv = sum phi(k)*v
    // (2 per element), out = phi(q)*kv (1 per element).
    return 6.0 * T * D + 2.0 * T * D + T * D;
  }
  // Ripple, linear-time form: phi on q and k (~3 per element each); the global term KV_all and
  // phi(q)^T KV_all (2 * T * d * D each) plus the z terms (2 * T * D each); per local level s
  // (blocks of m = 4^s patch tokens, s < S-1): (Q_b K_b^T) V_b costs 4 * m * d per token and
  // head when m < d, K_b^T V_b and Q_b (K_b^T V_b) cost 4 * d^2 per token and head otherwise,
  // plus the block z sums (4 * d per token and head).
  const double n = static_cast<double>(c.grid() * c.grid());
  double f = 6.0 * T * D + 4.0 * T * d * D + 4.0 * T * D;
  for (int64_t s = 0; s + 1 < c.ripple_stages; ++s) {
    const double m = static_cast<double>(int64_t{1} << (2 * s));
    f += (m < d ? 4.0 * n * m * D : 4.0 * n * d * D) + 4.0 * n * D;
  }
  // Combining numerator and denominator: a divide per output element, weights per level.
  return f + T * D * (1.0 + static_cast<double>(c.ripple_stages));
}

}  // namespace

FlopCount forward_flops(const ViTConfig& c) {
  const double T = static_cast<double>(c.tokens()), D = static_cast<double>(c.dim);
  const double Hm = static_cast<double>(c.mlp_hidden());
  const double n = static_cast<double>(c.grid() * c.grid());
  const double pix = static_cast<double>(c.in_chans * c.patch_size * c.patch_size);
  FlopCount f;
  for (int64_t b = 0; b < c.depth; ++b) {
    f.attention_mixing += mixing_flops(c, c.block_attention(b));
    f.projections += 2.0 * T * D * 3.0 * D + 2.0 * T * D * D;
    // fc1 + fc2 GEMMs, exact GELU ~8 FLOPs per hidden element
    f.mlp += 4.0 * T * D * Hm + 8.0 * T * Hm;
    // two layernorms (~8 per element), two residual adds
    f.other += 2.0 * 8.0 * T * D + 2.0 * T * D;
  }
  f.other += 2.0 * n * pix * D                                // patch embedding
             + T * D                                          // position embedding add
             + 8.0 * T * D                                    // final norm (all tokens, as timm)
             + 2.0 * D * static_cast<double>(c.num_classes);  // head on the class token
  return f;
}

int64_t parameter_count(const ViTConfig& c) {
  const int64_t D = c.dim, Hm = c.mlp_hidden();
  const int64_t pix = c.in_chans * c.patch_size * c.patch_size;
  int64_t p = pix * D + D                           // patch_embed.proj
              + D                                   // cls_token
              + c.tokens() * D                      // pos_embed
              + 2 * D                               // norm
              + D * c.num_classes + c.num_classes;  // head
  for (int64_t b = 0; b < c.depth; ++b) {
    p += 4 * D                        // norm1, norm2
         + 3 * D * D + 3 * D          // qkv
         + D * D + D                  // proj
         + D * Hm + Hm + Hm * D + D;  // mlp
    if (c.block_attention(b) == "ripple" && c.ripple_stages > 1)
      p += c.num_heads * (c.ripple_stages - 1);
  }
  return p;
}

}  // namespace lvit
