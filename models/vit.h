// The Vision Transformer and its presets. Weight names and layouts are timm's
// VisionTransformer's, so a checkpoint's weights load into timm's model of the same shape.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/nn/attention.h"

namespace lvit {

struct ViTConfig {
  std::string preset = "vit-cifar";
  int64_t image_size = 32;
  int64_t patch_size = 4;
  int64_t in_chans = 3;
  int64_t dim = 384;
  int64_t depth = 12;
  int64_t num_heads = 6;
  double mlp_ratio = 4.0;
  int64_t num_classes = 100;
  std::string attention_type = "softmax";  // softmax | ripple | hydra
  double layernorm_eps = 1e-6;
  double dropout = 0.1;
  double drop_path = 0.0;
  int64_t ripple_stages = 3;
  int64_t hydra_branches = 4;
  int64_t hydra_layers = -1;  // -1: all blocks

  int64_t grid() const { return image_size / patch_size; }
  int64_t tokens() const { return grid() * grid() + 1; }
  int64_t mlp_hidden() const { return static_cast<int64_t>(dim * mlp_ratio); }
  // Hydra in blocks [depth - hydra_layers, depth) when attention_type is hydra.
  std::string block_attention(int64_t block) const;
  // Throws UserError naming the flag for impossible configurations.
  void validate() const;
  nlohmann::json to_json() const;
  static ViTConfig from_json(const nlohmann::json& j);  // missing keys keep their defaults
};

// vit-cifar, ripple-cifar, hydra-cifar, vit-tiny, ripple-tiny, hydra-tiny, vit-micro, ...
ViTConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

// Builds the token-mixing attention module of one block (factory shared by all attention types).
std::shared_ptr<nn::Attention> make_attention(const ViTConfig& cfg, int64_t block, Generator& init,
                                              std::shared_ptr<Generator> gen);

class Block : public nn::Module {
 public:
  Block(const ViTConfig& cfg, int64_t index, double drop_path, Generator& init,
        std::shared_ptr<Generator> gen);
  // x [B, N, D] and xn = norm1(x) -> the block's output and next_norm(output): each residual
  // pass makes the LayerNorm after it (ops::linear_add_dropout_norm), so the caller hands in
  // norm1's output and the norm that follows the block.
  ops::ResidualNorm forward(const Tensor& x, const Tensor& xn,
                            const nn::LayerNorm& next_norm) const;
  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<nn::Attention> attn;
  std::shared_ptr<nn::MLP> mlp;
  std::shared_ptr<nn::DropPath> drop_path;
};

class ViT : public nn::Module {
 public:
  // Parameters initialised from `seed` (timm's scheme); dropout masks from the model's own
  // generator (seed + 1), whose state checkpoints save.
  ViT(const ViTConfig& cfg, uint64_t seed = 0);
  // images [B, C, H, W] -> logits [B, num_classes]
  Tensor forward(const Tensor& images) const;
  const ViTConfig& config() const { return cfg_; }
  Generator& dropout_generator() { return *gen_; }

  std::shared_ptr<nn::PatchEmbed> patch_embed;
  Tensor cls_token, pos_embed;
  std::vector<std::shared_ptr<Block>> blocks;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> head;

 private:
  ViTConfig cfg_;
  std::shared_ptr<Generator> gen_;
  std::shared_ptr<nn::Dropout> pos_drop_;
};

}  // namespace lvit
