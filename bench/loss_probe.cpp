// lvit-loss-probe: a checkpoint's label-smoothed loss on the first N training images (no
// augmentation) in eval mode and in train mode (dropout on), the latter averaged over R dropout
// draws. bench/loss_probe.py computes the same in PyTorch (bench/lvit_torch.py's model with the
// checkpoint's weights), so the two frameworks' forward passes, dropout included, can be compared
// on the same weights and images:
//   lvit-loss-probe --checkpoint RUN/model.safetensors --data-dir DIR --device cuda --precision
//   bf16 python3 bench/loss_probe.py --checkpoint RUN/model.safetensors --data-dir DIR
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/common.h"
#include "autograd/node.h"
#include "data/augment.h"
#include "data/cifar.h"
#include "models/checkpoint.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace lvit;

int main(int argc, char** argv) {
  return app::run_main("lvit-loss-probe", [&] {
    CLI::App cli{"lvit-loss-probe: eval-mode and train-mode (dropout) loss of a checkpoint"};
    std::string checkpoint, data_dir = data::default_data_dir(), device = "cpu", precision = "fp32";
    int64_t batches = 20, batch_size = 500, draws = 8;
    double smoothing = 0.1;
    cli.add_option("--checkpoint", checkpoint, "model.safetensors (lvit-train or torch_train.py)")
        ->required();
    cli.add_option("--data-dir", data_dir, "Folder holding cifar-100-binary, or that folder");
    cli.add_option("--batches", batches, "Batches of the training set's first images");
    cli.add_option("--batch-size", batch_size, "Images per batch");
    cli.add_option("--draws", draws, "Dropout draws (seeds 1000, 1001, ...) for train mode");
    cli.add_option("--label-smoothing", smoothing, "Label smoothing of the loss");
    cli.add_option("--device", device, "cpu or cuda[:N]");
    cli.add_option("--precision", precision, "GPU arithmetic: fp32, tf32 or bf16");
    try {
      cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return cli.exit(e);
    }
    LVIT_USER_CHECK(batches >= 1 && batch_size >= 1 && draws >= 1,
                    "--batches, --batch-size and --draws must be at least 1");
    const Device dev = app::setup_device(device, precision);
    std::unique_ptr<ViT> model = load_model(checkpoint);
    model->to(dev);
    const ViTConfig& c = model->config();
    const data::ImageDataset ds = data::load_dataset(data_dir, "cifar100", true);
    LVIT_USER_CHECK(ds.height == c.image_size && ds.num_classes == c.num_classes,
                    "--checkpoint {}: a {}-pixel, {}-class model, not CIFAR-100's", checkpoint,
                    c.image_size, c.num_classes);
    LVIT_USER_CHECK(batches * batch_size <= ds.size, "--batches x --batch-size: {} > {} images",
                    batches * batch_size, ds.size);
    const data::Normalization norm = data::normalization_for(ds.name);
    const int64_t numel = ds.image_numel();
    std::vector<Tensor> images, labels;
    for (int64_t b = 0; b < batches; ++b) {
      std::vector<float> x(static_cast<size_t>(batch_size * numel));
      std::vector<int64_t> y(static_cast<size_t>(batch_size));
      for (int64_t i = 0; i < batch_size; ++i) {
        const int64_t k = b * batch_size + i;
        data::normalize_image(ds.image(k), ds.channels, ds.height, ds.width, norm,
                              x.data() + i * numel);
        y[static_cast<size_t>(i)] = ds.labels[static_cast<size_t>(k)];
      }
      images.push_back(
          Tensor::from_vector(x, {batch_size, ds.channels, ds.height, ds.width}).to(dev));
      labels.push_back(Tensor::from_vector(y, {batch_size}).to(dev));
    }
    ops::AutocastGuard autocast(app::autocast_dtype_for(dev, precision));
    autograd::NoGradGuard no_grad;
    auto mean_loss = [&] {
      double sum = 0;
      for (int64_t b = 0; b < batches; ++b)
        sum += ops::cross_entropy(model->forward(images[b]), labels[b], smoothing).item();
      return sum / static_cast<double>(batches);
    };
    model->eval();
    const double eval_loss = mean_loss();
    model->train();
    double sum = 0, sum2 = 0;
    for (int64_t r = 0; r < draws; ++r) {
      model->dropout_generator().set_state(static_cast<uint64_t>(1000 + r), 0);
      const double l = mean_loss();
      sum += l;
      sum2 += l * l;
    }
    const double mean = sum / static_cast<double>(draws);
    const double sem = std::sqrt(std::max(0.0, sum2 / static_cast<double>(draws) - mean * mean) /
                                 static_cast<double>(draws));
    std::printf(
        "lvit: %lld images, eval-mode loss %.5f, train-mode loss %.5f +- %.5f (%lld "
        "dropout draws, dropout %.3g)\n",
        static_cast<long long>(batches * batch_size), eval_loss, mean, sem,
        static_cast<long long>(draws), c.dropout);
    return 0;
  });
}
