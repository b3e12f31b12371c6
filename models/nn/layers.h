// Basic layers. Parameter names follow timm's VisionTransformer.
#pragma once
#include <memory>
#include <optional>

#include "models/nn/module.h"
#include "ops/linear.h"

namespace lvit::nn {

class Linear : public Module {
 public:
  // Weight [out, in] trunc-normal(0.02), bias zero (timm's init for ViT linears).
  Linear(int64_t in, int64_t out, bool bias, Generator& init);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) const;
  // The dtype forward(x) writes: bf16 for an f32 x under bf16 autocast on a GPU (the
  // mixed-precision norm that feeds a bf16 GEMM), else x's own.
  std::optional<DType> output_dtype(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

// Dropout / DropPath draw their masks from the model's shared generator.
class Dropout : public Module {
 public:
  Dropout(double p, std::shared_ptr<Generator> gen) : p(p), gen_(std::move(gen)) {}
  Tensor forward(const Tensor& x) const;
  // dropout(gelu(fc(x))) (ops::linear_gelu_dropout: on the GPU one node for the three).
  Tensor forward_linear_gelu(const Linear& fc, const Tensor& x) const;
  // h = residual + dropout(fc(x)) and norm(h) (ops::linear_add_dropout_norm: on the GPU one
  // node for the linear layer, dropout and add, whose backward makes the bias gradient in the
  // dropout's pass, and one kernel for the residual pass and the norm's forward).
  ops::ResidualNorm forward_linear_residual_norm(const Linear& fc, const Tensor& residual,
                                                 const Tensor& x, const LayerNorm& norm) const;
  double p;

 private:
  std::shared_ptr<Generator> gen_;
};

class DropPath : public Module {
 public:
  DropPath(double p, std::shared_ptr<Generator> gen) : p(p), gen_(std::move(gen)) {}
  Tensor forward(const Tensor& x) const;
  double p;

 private:
  std::shared_ptr<Generator> gen_;
};

// fc1 -> GELU -> dropout -> fc2 -> dropout (timm's Mlp).
class MLP : public Module {
 public:
  MLP(int64_t dim, int64_t hidden, double dropout, Generator& init, std::shared_ptr<Generator> gen);
  Tensor forward(const Tensor& x) const;
  // h = residual + forward(x) and norm(h), the final dropout fused with the residual add, fc2
  // and the norm (Dropout::forward_linear_residual_norm).
  ops::ResidualNorm forward_residual_norm(const Tensor& residual, const Tensor& x,
                                          const LayerNorm& norm) const;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<Dropout> drop;
};

// Conv with kernel = stride = patch, as a linear map of patchified pixels: images [B, C, H, W]
// -> tokens [B, (H/p)(W/p), D]. proj.weight [D, C, p, p], proj.bias [D].
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t in_chans, int64_t dim, int64_t patch, Generator& init);
  Tensor forward(const Tensor& images) const;
  int64_t patch;

 private:
  struct Proj : Module {
    Proj(Tensor w, Tensor b);
    Tensor weight, bias;
  };
  std::shared_ptr<Proj> proj_;
};

}  // namespace lvit::nn
