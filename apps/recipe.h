// Named training recipes (--recipe seed|strong): a bundle of defaults for the training options
// and the model's regularisation. A knob whose own flag is on the command line keeps the flag's
// value, whatever the order of the flags.
//
//   seed:   crop (pad 4) + flip, label smoothing 0.1, dropout 0.1, AdamW lr 3e-4 (weight decay
//           0.05), 200 epochs, batch 128, cosine schedule.
//   strong: DeiT-like, on top of seed: RandAugment n 2 m 9, mixup 0.8, CutMix 1.0 (switch 0.5),
//           random erasing 0.25 (pixel mode), drop path 0.1, dropout 0 (DeiT's), warmup 5 epochs.
#pragma once
#include <functional>
#include <string>

#include "apps/common.h"
#include "apps/trainer.h"

namespace lvit::app {

// `given(flag)` says whether "--flag" was on the command line. Throws UserError for an unknown
// recipe name. Records the name in o.recipe.
void apply_recipe(const std::string& name, const std::function<bool(const std::string&)>& given,
                  TrainOptions& o, ModelFlags& mf);

}  // namespace lvit::app
