// Analytical forward FLOPs per image, counting a multiply-add as 2 FLOPs. GEMM-like work is
// counted exactly; elementwise work (layernorm, GELU, residual adds, softmax exponentials,
// feature maps) is counted as a few FLOPs per element, stated per term in flops.cpp.
#pragma once
#include <cstdint>

#include "models/vit.h"

namespace lvit {

struct FlopCount {
  double attention_mixing = 0;  // q/k/v -> attention output (the part that differs by type)
  double projections = 0;       // qkv and output projections
  double mlp = 0;               // fc1, GELU, fc2
  double other = 0;             // patch embedding, layernorms, residual adds, head
  double total() const { return attention_mixing + projections + mlp + other; }
};

FlopCount forward_flops(const ViTConfig& cfg);
// Parameters the config allocates (must equal ViT(cfg).num_parameters()).
int64_t parameter_count(const ViTConfig& cfg);

}  // namespace lvit
