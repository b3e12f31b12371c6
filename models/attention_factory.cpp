// Chooses the token-mixing module of each block from the config.
#include "models/vit.h"

namespace lvit {

std::shared_ptr<nn::Attention> make_attention(const ViTConfig& cfg, int64_t block, Generator& init,
                                              std::shared_ptr<Generator> gen) {
  const std::string type = cfg.block_attention(block);
  if (type == "softmax")
    return std::make_shared<nn::SoftmaxAttention>(cfg.dim, cfg.num_heads, cfg.dropout, init, gen);
  throw UserError(fmt::format("--attention-type {}: not available in this build", type));
}

}  // namespace lvit
