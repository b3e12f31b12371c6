// Checkpoints. RUN_DIR/model.safetensors holds the model weights under timm's names, with the
// model config as JSON under the metadata key "config" (readable by PyTorch's safetensors);
// RUN_DIR/train_state.safetensors holds the optimizer state, epoch/step and RNG states. Both are
// written atomically (temp file, fsync, rename).
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "models/optim/optimizer.h"
#include "models/vit.h"

namespace lvit {

void save_model(const std::string& path, const ViT& model,
                const nlohmann::json& extra_metadata = nlohmann::json::object());
// Reads the config from the file's metadata, builds the model and loads the weights. Any
// problem (missing file, no config, bad shapes) is a UserError naming the file.
std::unique_ptr<ViT> load_model(const std::string& path);
ViTConfig read_model_config(const std::string& path);

struct TrainProgress {
  int64_t epoch = 0;           // current epoch (0-based)
  int64_t batch_in_epoch = 0;  // batches of `epoch` already consumed
  int64_t global_step = 0;     // optimizer steps taken
  uint64_t dropout_seed = 0, dropout_offset = 0;
  nlohmann::json options;  // training options, to check a resume is consistent
};

void save_train_state(const std::string& path, const optim::Optimizer& opt, const TrainProgress& p);
// Restores optimizer state into `opt` and returns the progress record.
TrainProgress load_train_state(const std::string& path, optim::Optimizer& opt);

}  // namespace lvit
