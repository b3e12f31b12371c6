#include "models/vit.h"

#include <map>
#include <utility>

#include "ops/ops.h"

namespace lvit {

// ---- config ----

std::string ViTConfig::block_attention(int64_t block) const {
  if (attention_type != "hydra") return attention_type;
  const int64_t L = hydra_layers < 0 ? depth : hydra_layers;
  return block >= depth - L ? "hydra" : "softmax";
}

void ViTConfig::validate() const {
  LVIT_USER_CHECK(
      attention_type == "softmax" || attention_type == "ripple" || attention_type == "hydra",
      "--attention-type: '{}' is not softmax, ripple or hydra", attention_type);
  LVIT_USER_CHECK(image_size > 0 && patch_size > 0 && image_size % patch_size == 0,
                  "--patch-size {} does not divide --image-size {}", patch_size, image_size);
  LVIT_USER_CHECK(dim > 0 && depth > 0 && num_heads > 0,
                  "--dim, --depth and --heads must be positive");
  LVIT_USER_CHECK(dim % num_heads == 0, "--heads {} does not divide --dim {}", num_heads, dim);
  LVIT_USER_CHECK(mlp_ratio > 0 && mlp_hidden() > 0, "--mlp-ratio {} must be positive", mlp_ratio);
  LVIT_USER_CHECK(num_classes > 0, "--num-classes must be positive");
  LVIT_USER_CHECK(dropout >= 0 && dropout < 1, "--dropout {} not in [0, 1)", dropout);
  LVIT_USER_CHECK(drop_path >= 0 && drop_path < 1, "--drop-path {} not in [0, 1)", drop_path);
  if (attention_type == "ripple") {
    LVIT_USER_CHECK(ripple_stages >= 1, "--ripple-stages {} must be at least 1", ripple_stages);
    const int64_t g = grid();
    LVIT_USER_CHECK(
        (g & (g - 1)) == 0,
        "ripple attention needs a power-of-two patch grid, got {}x{} (--image-size {} / "
        "--patch-size {})",
        g, g, image_size, patch_size);
  }
  if (attention_type == "hydra") {
    LVIT_USER_CHECK(hydra_branches >= 1 && dim % hydra_branches == 0,
                    "--hydra-branches {} does not divide --dim {}", hydra_branches, dim);
    LVIT_USER_CHECK(hydra_layers >= -1 && hydra_layers <= depth,
                    "--hydra-layers {} not in [0, depth = {}]", hydra_layers, depth);
  }
}

nlohmann::json ViTConfig::to_json() const {
  return {{"preset", preset},
          {"image_size", image_size},
          {"patch_size", patch_size},
          {"in_chans", in_chans},
          {"dim", dim},
          {"depth", depth},
          {"num_heads", num_heads},
          {"mlp_ratio", mlp_ratio},
          {"num_classes", num_classes},
          {"attention_type", attention_type},
          {"layernorm_eps", layernorm_eps},
          {"dropout", dropout},
          {"drop_path", drop_path},
          {"ripple_stages", ripple_stages},
          {"hydra_branches", hydra_branches},
          {"hydra_layers", hydra_layers < 0 ? depth : hydra_layers}};
}

ViTConfig ViTConfig::from_json(const nlohmann::json& j) {
  ViTConfig c;
  auto get = [&](const char* k, auto& v) {
    if (j.contains(k)) j.at(k).get_to(v);
  };
  get("preset", c.preset);
  get("image_size", c.image_size);
  get("patch_size", c.patch_size);
  get("in_chans", c.in_chans);
  get("dim", c.dim);
  get("depth", c.depth);
  get("num_heads", c.num_heads);
  get("mlp_ratio", c.mlp_ratio);
  get("num_classes", c.num_classes);
  get("attention_type", c.attention_type);
  get("layernorm_eps", c.layernorm_eps);
  get("dropout", c.dropout);
  get("drop_path", c.drop_path);
  get("ripple_stages", c.ripple_stages);
  get("hydra_branches", c.hydra_branches);
  get("hydra_layers", c.hydra_layers);
  return c;
}

namespace {
std::map<std::string, ViTConfig> make_presets() {
  std::map<std::string, ViTConfig> m;
  auto add = [&](const std::string& family, ViTConfig base) {
    for (const char* type : {"softmax", "ripple", "hydra"}) {
      ViTConfig c = base;
      c.attention_type = type;
      std::string prefix = std::string(type) == "softmax" ? "vit" : type;
      c.preset = prefix + "-" + family;
      m[c.preset] = c;
    }
  };
  ViTConfig cifar;  // defaults: image 32, patch 4, D 384, depth 12, heads 6, 100 classes
  add("cifar", cifar);
  ViTConfig tiny = cifar;
  tiny.image_size = 64;
  tiny.num_classes = 200;
  add("tiny", tiny);
  ViTConfig micro = cifar;  // for CPU smoke runs
  micro.dim = 128;
  micro.depth = 4;
  micro.num_heads = 4;
  add("micro", micro);
  return m;
}
const std::map<std::string, ViTConfig>& presets() {
  static const auto m = make_presets();
  return m;
}
}  // namespace

ViTConfig preset_config(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string names;
    for (auto& [n, c] : presets()) names += (names.empty() ? "" : ", ") + n;
    throw UserError(fmt::format("--preset: unknown preset '{}' (known: {})", name, names));
  }
  return it->second;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (auto& [n, c] : presets()) v.push_back(n);
  return v;
}

// ---- model ----

Block::Block(const ViTConfig& cfg, int64_t index, double dp, Generator& init,
             std::shared_ptr<Generator> gen) {
  norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(cfg.dim, cfg.layernorm_eps));
  attn = register_module("attn", make_attention(cfg, index, init, gen));
  norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(cfg.dim, cfg.layernorm_eps));
  mlp = register_module(
      "mlp", std::make_shared<nn::MLP>(cfg.dim, cfg.mlp_hidden(), cfg.dropout, init, gen));
  drop_path = register_module("drop_path", std::make_shared<nn::DropPath>(dp, gen));
}

ops::ResidualNorm Block::forward(const Tensor& x, const Tensor& xn,
                                 const nn::LayerNorm& next_norm) const {
  if (drop_path->p > 0 && drop_path->is_training()) {
    Tensor h = ops::add(x, drop_path->forward(attn->forward(xn)));
    Tensor out = ops::add(h, drop_path->forward(mlp->forward(norm2->forward(h))));
    return {out, next_norm.forward(out)};
  }
  // No stochastic depth: each branch's last linear layer and dropout are fused with its residual
  // add (the same values and masks as add(x, dropout(branch)); on the GPU one node whose
  // backward makes the bias gradient in the dropout's pass), and with the norm after it.
  const auto [h, hn] = attn->forward_residual_norm(x, xn, *norm2);
  return mlp->forward_residual_norm(h, hn, next_norm);
}

ViT::ViT(const ViTConfig& cfg, uint64_t seed)
    : cfg_(cfg), gen_(std::make_shared<Generator>(seed + 1)) {
  cfg_.validate();
  Generator init(seed);
  patch_embed = register_module(
      "patch_embed", std::make_shared<nn::PatchEmbed>(cfg.in_chans, cfg.dim, cfg.patch_size, init));
  // timm: cls_token ~ N(0, 1e-6), pos_embed ~ trunc_normal(0.02)
  cls_token = register_parameter("cls_token", Tensor::empty({1, 1, cfg.dim}));
  nn::normal_(cls_token, init, 1e-6);
  pos_embed = register_parameter("pos_embed", Tensor::empty({1, cfg.tokens(), cfg.dim}));
  nn::trunc_normal_(pos_embed, init, 0.02);
  pos_drop_ = register_module("pos_drop", std::make_shared<nn::Dropout>(cfg.dropout, gen_));
  for (int64_t i = 0; i < cfg.depth; ++i) {
    // Stochastic depth rate grows linearly over the blocks, as in timm.
    const double dp = cfg.depth > 1 ? cfg.drop_path * i / (cfg.depth - 1) : cfg.drop_path;
    blocks.push_back(register_module("blocks." + std::to_string(i),
                                     std::make_shared<Block>(cfg_, i, dp, init, gen_)));
  }
  norm = register_module("norm", std::make_shared<nn::LayerNorm>(cfg.dim, cfg.layernorm_eps));
  head =
      register_module("head", std::make_shared<nn::Linear>(cfg.dim, cfg.num_classes, true, init));
}

Tensor ViT::forward(const Tensor& images) const {
  LVIT_CHECK(images.dim() == 4 && images.shape()[1] == cfg_.in_chans &&
                 images.shape()[2] == cfg_.image_size && images.shape()[3] == cfg_.image_size,
             "ViT: images {} do not match the model's {}x{}x{}", shape_str(images.shape()),
             cfg_.in_chans, cfg_.image_size, cfg_.image_size);
  const int64_t B = images.shape()[0];
  // Under bf16 autocast on a GPU: every weight's bf16 copy in one multi-tensor cast.
  const ops::AutocastParamCopies weight_copies(parameters());
  // [B, N, D]; the residual stream is f32 even under mixed precision.
  Tensor x = ops::cast(patch_embed->forward(images), cls_token.dtype());
  Tensor cls = ops::broadcast_to(cls_token, {B, 1, cfg_.dim});
  x = ops::add(ops::concat({cls, x}, 1), pos_embed);  // [B, 1 + N, D]
  x = pos_drop_->forward(x);
  // Each block's last residual pass makes the next block's norm1, or the final norm.
  Tensor xn = blocks.empty() ? norm->forward(x) : blocks[0]->norm1->forward(x);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const nn::LayerNorm& next = i + 1 < blocks.size() ? *blocks[i + 1]->norm1 : *norm;
    ops::ResidualNorm r = blocks[i]->forward(x, xn, next);
    x = std::move(r.h);
    xn = std::move(r.y);
  }
  x = xn;
  Tensor cls_out = ops::reshape(ops::slice(x, 1, 0, 1), {B, cfg_.dim});
  return head->forward(cls_out);
}

}  // namespace lvit
