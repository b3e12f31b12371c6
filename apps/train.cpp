// lvit-train: trains a ViT on CIFAR-100/10 (or Tiny ImageNet) and writes metrics and checkpoints.
#include <filesystem>

#include "apps/common.h"
#include "apps/recipe.h"
#include "apps/trainer.h"
#include "core/thread_pool.h"

using namespace lvit;

int main(int argc, char** argv) {
  return app::run_main("lvit-train", [&] {
    CLI::App cli{"lvit-train: train a softmax, Ripple or Hydra ViT"};
    app::ModelFlags mf;
    app::add_model_flags(cli, mf);
    app::TrainOptions o;
    std::string data_dir = data::default_data_dir(), out, resume;
    int threads = 0;
    cli.add_option("--dataset", o.dataset, "cifar100, cifar10 or tiny-imagenet")
        ->check(CLI::IsMember({"cifar100", "cifar10", "tiny-imagenet"}));
    cli.add_option("--data-dir", data_dir,
                   "Folder holding the dataset folders, or a dataset folder ($LVIT_DATA, "
                   "../shared/data, ./data)");
    cli.add_option("--epochs", o.epochs, "Epochs");
    cli.add_option("--batch-size", o.batch_size, "Training batch size");
    cli.add_option("--eval-batch-size", o.eval_batch_size, "Evaluation batch size");
    cli.add_option("--optimizer", o.optimizer, "adamw or sgd");
    cli.add_option("--lr", o.lr, "Peak learning rate");
    cli.add_option("--min-lr", o.min_lr, "Learning rate at the end of the cosine");
    cli.add_option("--weight-decay", o.weight_decay, "Decoupled weight decay (matrices only)");
    cli.add_option("--momentum", o.momentum, "SGD momentum");
    cli.add_option("--warmup-epochs", o.warmup_epochs, "Linear warmup epochs (fractions allowed)");
    cli.add_option("--label-smoothing", o.label_smoothing, "Label smoothing");
    cli.add_option("--clip-grad", o.clip_grad, "Global grad-norm clip (0: off)");
    cli.add_option("--crop-padding", o.crop_padding, "Random-crop padding in pixels (0: no crop)");
    cli.add_flag("!--no-flip", o.hflip, "Disable random horizontal flips");
    std::string recipe;
    cli.add_option("--recipe", recipe,
                   "seed (crop+flip, smoothing 0.1, dropout 0.1, AdamW 3e-4, 200 epochs, batch "
                   "128) or strong (seed + RandAugment n2 m9, mixup 0.8, CutMix 1.0, erasing "
                   "0.25, drop path 0.1, no dropout, warmup 5); explicit flags override it");
    cli.add_option("--randaugment-n", o.randaugment_n, "RandAugment ops per image (0: off)");
    cli.add_option("--randaugment-m", o.randaugment_m,
                   "RandAugment magnitude, a bin of torchvision's 31 (0-30)");
    cli.add_flag("--trivial-augment", o.trivial_augment,
                 "TrivialAugmentWide instead of RandAugment");
    cli.add_option("--reprob", o.reprob, "Random-erasing probability");
    cli.add_option("--remode", o.remode,
                   "Random-erasing fill: pixel (per-pixel normal) or const (0)");
    cli.add_option("--mixup", o.mixup, "Mixup Beta alpha (0: off)");
    cli.add_option("--cutmix", o.cutmix, "CutMix Beta alpha (0: off)");
    cli.add_option("--mixup-prob", o.mixup_prob, "Probability of mixing a batch");
    cli.add_option("--mixup-switch-prob", o.mixup_switch_prob,
                   "Probability of CutMix instead of mixup when both are on");
    cli.add_option("--ema-decay", o.ema_decay,
                   "Model EMA decay (0: off); evaluated each epoch, RUN_DIR/model_ema.safetensors");
    app::DataFlags df;
    app::add_data_flags(cli, df);
    cli.add_option("--seed", o.seed, "Seed for initialisation, data order, augmentation, dropout");
    cli.add_option("--dropout-seed", o.dropout_seed,
                   "Dropout/drop-path masks' seed (-1: --seed + 1); other values keep --seed's "
                   "weights and batches");
    cli.add_option("--max-steps-per-epoch", o.max_steps_per_epoch,
                   "Cap steps per epoch (smoke runs)");
    cli.add_option("--eval-limit", o.eval_limit, "Evaluate on the first N test images only");
    cli.add_option("--workers", o.workers, "Data loader threads");
    cli.add_option("--log-every", o.log_every,
                   "Write the step loss to RUN_DIR/steps.jsonl every N steps (0: off)");
    cli.add_option("--threads", threads, "Compute threads (0: all cores or $LVIT_THREADS)");
    cli.add_option("--device", o.device, "cpu or cuda[:N]");
    cli.add_flag("!--no-cuda-graphs", o.cuda_graphs,
                 "GPU: run every step eagerly instead of replaying a captured CUDA graph");
    cli.add_flag("--gemm-tune", o.gemm_tune,
                 "GPU: time up to 8 of cuBLASLt's algorithms for each GEMM on its first call and "
                 "keep the fastest (about 1% faster steps; two runs may then round differently)");
    cli.add_flag("!--no-gpu-data", o.gpu_data,
                 "GPU: build f32 batches on the CPU instead of uploading uint8 images and "
                 "cropping, flipping and normalising them on the GPU");
    cli.add_option("--precision", o.precision,
                   "GPU arithmetic: fp32, tf32 (TF32 tensor-core GEMMs, fp32 elsewhere), or bf16 "
                   "(default; mixed precision: bf16 activations and GEMMs, fp32 weights and loss)");
    cli.add_option("--out", out,
                   "Run directory: metrics.jsonl, model.safetensors, train_state.safetensors");
    cli.add_option(
        "--resume", resume,
        "Continue the run in this directory (its saved config and options win, except --epochs)");
    cli.add_option("--log-format", o.log_format,
                   "text (progress bar) or jsonl (metrics lines on stdout)");
    cli.add_flag("!--no-progress", o.progress, "No progress bar");
    try {
      cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return cli.exit(e);
    }
    // A resumed run keeps its saved options (the recipe it started from included).
    auto given = [&](const std::string& flag) { return cli.count(flag) > 0; };
    if (resume.empty()) app::apply_recipe(recipe, given, o, mf);
    app::apply_threads(threads);
    // Fails at once on a bad --device/--precision/--gemm-tune.
    app::setup_device(o.device, o.precision, o.gemm_tune);
    if (!resume.empty() && out.empty()) out = resume;
    // Check the flags before the (slow) data load, so a bad configuration fails at once.
    o.validate();
    ViTConfig cfg;
    if (resume.empty()) cfg = app::build_config(mf, o.dataset);
    int64_t skipped = 0;
    data::ImageDataset train = app::load_split(data_dir, o.dataset, true, df, &skipped);
    data::ImageDataset test = app::load_split(data_dir, o.dataset, false, df, &skipped);
    std::unique_ptr<app::Trainer> trainer;
    if (!resume.empty()) {
      trainer = app::Trainer::resume(resume, o, train, &test);
    } else {
      if (!mf.num_classes && o.dataset == "tiny-imagenet") cfg.num_classes = train.num_classes;
      trainer = std::make_unique<app::Trainer>(cfg, o, train, &test);
    }
    const ViTConfig& c = trainer->model().config();
    if (o.log_format == "text")
      std::fprintf(
          stderr,
          "lvit-train: %s (%s attention, D %lld, depth %lld, heads %lld, %lld params) on %s: "
          "%lld train / %lld test images, %lld steps/epoch, %d threads, device %s\n",
          c.preset.c_str(), c.attention_type.c_str(), static_cast<long long>(c.dim),
          static_cast<long long>(c.depth), static_cast<long long>(c.num_heads),
          static_cast<long long>(trainer->model().num_parameters()), train.name.c_str(),
          static_cast<long long>(train.size), static_cast<long long>(test.size),
          static_cast<long long>(trainer->steps_per_epoch()), num_threads(),
          app::device_description(parse_device(o.device)).c_str());
    const uint64_t run_seed = trainer->options().seed;
    if (o.log_format == "text" && trainer->model().dropout_generator().seed() != run_seed + 1)
      std::fprintf(stderr,
                   "lvit-train: dropout masks from seed %llu (--seed %llu's weights and data)\n",
                   static_cast<unsigned long long>(trainer->model().dropout_generator().seed()),
                   static_cast<unsigned long long>(run_seed));
    if (o.log_format == "text" && !trainer->data_path().empty())
      std::fprintf(stderr, "lvit-train: data path: %s\n", trainer->data_path().c_str());
    if (o.log_format == "text" && app::gemm_tuning_on())
      std::fprintf(stderr,
                   "lvit-train: GEMM tuning on: cuBLASLt algorithms chosen by timing, so two runs "
                   "of one seed may round differently\n");
    if (o.log_format == "text" && df.skip_bad_images)
      std::fprintf(stderr, "lvit-train: %lld bad images skipped\n",
                   static_cast<long long>(skipped));
    trainer->run(out);
    return 0;
  });
}
