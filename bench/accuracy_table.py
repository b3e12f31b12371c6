"""Summarises 30-epoch accuracy runs: lvit's metrics.jsonl and bench/torch_train.py's output.

    python3 bench/accuracy_table.py lvit:RUN/metrics.jsonl torch:torch0.jsonl ...

Each argument is LABEL:FILE. lvit writes top-1 in percent; torch_train.py's epoch lines (those
with "wall_s") carry fractions, scaled here to percent. Prints one row per run (final
epoch: top-1, top-5, training loss, wall seconds, img/s) and the mean and standard deviation of
top-1 per label.
"""
import json
import os
import statistics
import sys


def epochs(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if "epoch" in d and "test_top1" in d:
                rows[d["epoch"]] = d
    if not rows:
        sys.exit(f"{path}: no epoch lines with test_top1")
    return rows


def main(args):
    if not args:
        sys.exit(__doc__)
    by_label = {}
    print(f"{'label':12s} {'run':32s} {'epoch':>5s} {'top-1':>6s} {'top-5':>6s} "
          f"{'train loss':>10s} {'wall s':>7s} {'img/s':>8s}")
    for arg in args:
        label, sep, path = arg.partition(":")
        if not sep:
            sys.exit(f"{arg}: expected LABEL:FILE")
        rows = epochs(path)
        last = rows[max(rows)]
        scale = 100.0 if "wall_s" in last else 1.0  # torch_train.py writes fractions
        top1, top5 = scale * last["test_top1"], scale * last.get("test_top5", float("nan"))
        wall = last.get("wall_time_s", last.get("wall_s", float("nan")))
        # The run: the file's last two path components (lvit's run folder and metrics.jsonl).
        run = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        print(f"{label[:12]:12s} {run[-32:]:32s} {max(rows):5d} {top1:6.2f} {top5:6.2f} "
              f"{last.get('train_loss', float('nan')):10.4f} {wall:7.1f} "
              f"{last.get('img_per_s', float('nan')):8.0f}")
        by_label.setdefault(label, []).append(top1)
    for label, values in by_label.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{label}: {len(values)} runs, top-1 mean {statistics.mean(values):.2f}, sd {sd:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
