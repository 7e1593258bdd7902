"""Train the flagship recipe on real CIFAR-10 and print test accuracy against training wall time.

    flock /tmp/cifar_cpu.lock .venv/bin/python benchmarks/flagship.py --data /root/data [--epochs 8]
        [--widths 32,128,128] [--batch-size 512] [--eval-every 1] [--profile quick]

Training time excludes the per-epoch test evaluation (timed apart). Results go in benchmarks/README.md.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cifar_course as cc  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFAR_COURSE_DATA", "auto"))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--widths")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate per 1024 examples")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--activation")
    parser.add_argument("--precision", help="mixed_bfloat16, mixed_float16 or float32")
    parser.add_argument("--bias-scaler", type=float)
    parser.add_argument("--lookahead", type=int, choices=(0, 1))
    parser.add_argument("--tta-level", type=int, choices=(0, 1, 2))
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = {k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate_per_1024": args.lr,
        "weight_decay": args.weight_decay, "activation": args.activation,
        "widths": args.widths and tuple(int(w) for w in args.widths.split(",")),
        "bias_scaler": args.bias_scaler, "tta_level": args.tta_level,
        "lookahead": None if args.lookahead is None else bool(args.lookahead),
        "mixed_precision": args.precision and (None if args.precision == "float32" else args.precision),
    }.items() if v is not None}
    recipe = cc.flagship_recipe(args.profile, **overrides)
    data = cc.load_cifar10(args.data)
    print(cc.describe(data))
    print("recipe:", json.dumps(recipe))
    start = time.perf_counter()
    _, history, rows = cc.train_flagship(data, recipe, eval_every=args.eval_every, seed=args.seed)
    print(f"{'epoch':>5}  {'train time (s)':>14}  {'test acc (TTA)':>14}")
    for row in rows:
        print(f"{row['epoch']:>5}  {row['train_time_s']:>14.1f}  {row['test_acc']:>14.4f}")
    print(f"total wall time including evaluation: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
