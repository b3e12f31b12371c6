// Chooses the token-mixing module of each block from the config.
#include "models/nn/linear_attention.h"
#include "models/vit.h"

namespace lvit {

std::shared_ptr<nn::Attention> make_attention(const ViTConfig& cfg, int64_t block, Generator& init,
                                              std::shared_ptr<Generator> gen) {
  const std::string type = cfg.block_attention(block);
  if (type == "softmax")
    return std::make_shared<nn::SoftmaxAttention>(cfg.dim, cfg.num_heads, cfg.dropout, init, gen);
  if (type == "ripple")
    return std::make_shared<nn::RippleAttention>(cfg.dim, cfg.num_heads, cfg.dropout, init, gen,
                                                 nn::TokenLayout{1, cfg.grid(), cfg.grid()},
                                                 cfg.ripple_stages);
  if (type == "hydra")
    return std::make_shared<nn::HydraAttention>(cfg.dim, cfg.num_heads, cfg.dropout, init, gen,
                                                cfg.hydra_branches);
  throw UserError(fmt::format("--attention-type {}: not one of softmax, ripple, hydra", type));
}

}  // namespace lvit
