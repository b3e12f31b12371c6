#!/usr/bin/env python3
"""Training curves of lvit runs: loss and test top-1 against epoch, several runs overlaid.

    python3 scripts/plot_runs.py runs/a runs/b --out docs/training_curves.png

Reads RUN_DIR/steps.jsonl (the step loss every --log-every steps; drawn as a running mean) and
RUN_DIR/metrics.jsonl (one line per epoch: train loss, test top-1/top-5, and the EMA weights
top-1 when the run had --ema-decay). matplotlib only.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON line ({e})")
    return rows


def running_mean(xs, k):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories written by lvit-train --out")
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--smooth", type=int, default=10, help="running-mean window over logged steps")
    args = ap.parse_args()

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = 0
    for run in args.runs:
        name = os.path.basename(os.path.normpath(run))
        steps = read_jsonl(os.path.join(run, "steps.jsonl"))
        epochs = read_jsonl(os.path.join(run, "metrics.jsonl"))
        if not steps and not epochs:
            sys.exit(f"{run}: no steps.jsonl or metrics.jsonl (not an lvit run directory?)")
        if steps:
            line, = ax_loss.plot([r["epoch"] for r in steps],
                                 running_mean([r["loss"] for r in steps], args.smooth), label=name)
            color = line.get_color()
        else:
            line, = ax_loss.plot([r["epoch"] for r in epochs], [r["train_loss"] for r in epochs],
                                 marker="o", label=name)
            color = line.get_color()
        if epochs and "test_top1" in epochs[0]:
            ax_acc.plot([r["epoch"] for r in epochs], [r["test_top1"] for r in epochs], marker="o",
                        color=color, label=f"{name} top-1")
            if "test_top5" in epochs[0]:
                ax_acc.plot([r["epoch"] for r in epochs], [r["test_top5"] for r in epochs], marker="s",
                            linestyle="--", color=color, alpha=0.6, label=f"{name} top-5")
            if "test_top1_ema" in epochs[0]:  # --ema-decay runs
                ax_acc.plot([r["epoch"] for r in epochs], [r["test_top1_ema"] for r in epochs],
                            marker="^", linestyle=":", color=color, label=f"{name} EMA top-1")
        drawn += 1
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (CE on the smoothed / mixed targets)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({drawn} runs)")


if __name__ == "__main__":
    main()
