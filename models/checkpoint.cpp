#include "models/checkpoint.h"

#include "core/safetensors.h"

namespace lvit {

void save_model(const std::string& path, const ViT& model, const nlohmann::json& extra) {
  std::map<std::string, std::string> meta{{"format", "pt"},
                                          {"config", model.config().to_json().dump()}};
  for (auto& [k, v] : extra.items()) meta[k] = v.is_string() ? v.get<std::string>() : v.dump();
  save_safetensors(path, model.named_parameters(), meta);
}

namespace {
ViTConfig config_from_file(const SafetensorsFile& f, const std::string& path) {
  auto it = f.metadata.find("config");
  LVIT_USER_CHECK(
      it != f.metadata.end(),
      "{}: no model config in the safetensors metadata (key 'config'); not an lvit checkpoint?",
      path);
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  LVIT_USER_CHECK(!j.is_discarded() && j.is_object(), "{}: metadata 'config' is not a JSON object",
                  path);
  ViTConfig c;
  try {
    c = ViTConfig::from_json(j);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: bad model config: {}", path, e.what()));
  }
  try {
    c.validate();
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: impossible model config: {}", path, e.what()));
  }
  return c;
}
}  // namespace

ViTConfig read_model_config(const std::string& path) {
  return config_from_file(load_safetensors(path), path);
}

std::unique_ptr<ViT> load_model(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  auto model = std::make_unique<ViT>(config_from_file(f, path));
  model->load_state_dict(f.tensors, path);
  return model;
}

void save_train_state(const std::string& path, const optim::Optimizer& opt,
                      const TrainProgress& p) {
  nlohmann::json j = {{"epoch", p.epoch},
                      {"batch_in_epoch", p.batch_in_epoch},
                      {"global_step", p.global_step},
                      {"optimizer_steps", opt.steps()},
                      {"dropout_seed", std::to_string(p.dropout_seed)},
                      {"dropout_offset", std::to_string(p.dropout_offset)},
                      {"options", p.options}};
  save_safetensors(path, opt.state(), {{"train_state", j.dump()}});
}

TrainProgress load_train_state(const std::string& path, optim::Optimizer& opt) {
  SafetensorsFile f = load_safetensors(path);
  auto it = f.metadata.find("train_state");
  LVIT_USER_CHECK(it != f.metadata.end(), "{}: no 'train_state' metadata; not an lvit train state",
                  path);
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  LVIT_USER_CHECK(!j.is_discarded() && j.is_object(), "{}: 'train_state' metadata is not JSON",
                  path);
  TrainProgress p;
  try {
    p.epoch = j.at("epoch").get<int64_t>();
    p.batch_in_epoch = j.at("batch_in_epoch").get<int64_t>();
    p.global_step = j.at("global_step").get<int64_t>();
    p.dropout_seed = std::stoull(j.at("dropout_seed").get<std::string>());
    p.dropout_offset = std::stoull(j.at("dropout_offset").get<std::string>());
    p.options = j.value("options", nlohmann::json::object());
    opt.load_state(f.tensors, j.at("optimizer_steps").get<int64_t>(), path);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: bad train state: {}", path, e.what()));
  } catch (const std::logic_error& e) {  // stoull
    throw UserError(fmt::format("{}: bad RNG state in train state: {}", path, e.what()));
  }
  return p;
}

}  // namespace lvit
