#include "apps/recipe.h"

namespace lvit::app {

void apply_recipe(const std::string& name, const std::function<bool(const std::string&)>& given,
                  TrainOptions& o, ModelFlags& mf) {
  if (name.empty()) return;
  LVIT_USER_CHECK(name == "seed" || name == "strong", "--recipe: '{}' is not seed or strong", name);
  o.recipe = name;
  const bool strong = name == "strong";
  // set(flag, field, value): the recipe's value unless the flag was given.
  auto set = [&](const char* flag, auto& field, auto value) {
    if (!given(flag)) field = value;
  };
  set("--epochs", o.epochs, int64_t{200});
  set("--batch-size", o.batch_size, int64_t{128});
  set("--optimizer", o.optimizer, std::string("adamw"));
  set("--lr", o.lr, 3e-4);
  set("--weight-decay", o.weight_decay, 0.05);
  set("--label-smoothing", o.label_smoothing, 0.1);
  set("--crop-padding", o.crop_padding, 4);
  if (!given("--dropout")) mf.dropout = strong ? 0.0 : 0.1;
  if (!strong) return;
  set("--warmup-epochs", o.warmup_epochs, 5.0);
  // --trivial-augment takes RandAugment's place.
  if (!given("--trivial-augment")) set("--randaugment-n", o.randaugment_n, 2);
  set("--randaugment-m", o.randaugment_m, 9);
  set("--mixup", o.mixup, 0.8);
  set("--cutmix", o.cutmix, 1.0);
  set("--reprob", o.reprob, 0.25);
  if (!given("--drop-path")) mf.drop_path = 0.1;
}

}  // namespace lvit::app
