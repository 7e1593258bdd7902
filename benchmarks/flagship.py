"""Train the flagship recipe on real CIFAR-10 and print test accuracy against training wall time.

    flock /tmp/cifar_cpu.lock .venv/bin/python benchmarks/flagship.py --data /root/data [--budget 15min]
        [--epochs 7] [--widths 32,128,128] [--batch-size 2000] [--sgd] [--eval-every 1] [--profile quick]

Training time excludes the per-epoch test evaluation (timed apart). Results go in benchmarks/README.md.
The recipe itself is cifar_course/flagship.py (cc.flagship_recipe, cc.train_flagship); in a terminal the
run shows a progress bar over its steps.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cifar_course as cc  # noqa: E402


# Issue 3's goals for the quick profile: (test accuracy, seconds of training).
GOALS = {"5min": (0.85, 300), "15min": (0.90, 900)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFAR_COURSE_DATA", "auto"))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--budget", choices=("5min", "15min"), default="5min",
                        help="15min: cc.FLAGSHIP_15_MINUTES (quick profile)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--widths")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate per 1024 examples")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--activation")
    parser.add_argument("--precision", help="mixed_bfloat16, mixed_float16 or float32")
    parser.add_argument("--bias-scaler", type=float)
    parser.add_argument("--lookahead", type=int, choices=(0, 1))
    parser.add_argument("--alternating-flip", type=int, choices=(0, 1))
    parser.add_argument("--tta-level", type=int, choices=(0, 1, 2))
    parser.add_argument("--low-resolution", type=int,
                        help="progressive resizing: the image size of the first epochs")
    parser.add_argument("--low-resolution-epochs", type=int, help="how many epochs at --low-resolution")
    parser.add_argument("--sgd", action="store_true", help="cc.FLAGSHIP_SGD: airbench94's SGD and Lookahead")
    parser.add_argument("--muon-lr", type=float, help="Muon's step size at the start (recipe: 0.24)")
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = {k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate_per_1024": args.lr,
        "weight_decay": args.weight_decay, "activation": args.activation,
        "widths": args.widths and tuple(int(w) for w in args.widths.split(",")),
        "bias_scaler": args.bias_scaler, "tta_level": args.tta_level,
        "low_resolution": args.low_resolution, "low_resolution_epochs": args.low_resolution_epochs,
        "lookahead": None if args.lookahead is None else bool(args.lookahead),
        "alternating_flip": None if args.alternating_flip is None else bool(args.alternating_flip),
    }.items() if v is not None}
    if args.precision:  # "float32" means no mixed precision (None), so it is set apart from the rest
        overrides["mixed_precision"] = None if args.precision == "float32" else args.precision
    if args.muon_lr:
        overrides["muon_learning_rate"] = args.muon_lr
    if args.sgd:
        overrides = {**cc.FLAGSHIP_SGD, **overrides}
    if args.budget == "15min":
        overrides = {**cc.FLAGSHIP_15_MINUTES, **overrides}
    recipe = cc.flagship_recipe(args.profile, **overrides)
    data = cc.load_cifar10(args.data)
    print(cc.describe(data))
    print("recipe:", json.dumps(recipe))
    start = time.perf_counter()
    _, history, rows = cc.train_flagship(data, recipe, eval_every=args.eval_every, seed=args.seed)
    print(f"{'epoch':>5}  {'train time (s)':>14}  {'test acc (TTA)':>14}")
    for row in rows:
        print(f"{row['epoch']:>5}  {row['train_time_s']:>14.1f}  {row['test_acc']:>14.4f}")
    wall_time = time.perf_counter() - start
    print(f"total wall time including evaluation: {wall_time:.0f} s")
    final = rows[-1]
    metrics = {"test_accuracy_tta": final["test_acc"], "train_time_s": final["train_time_s"],
               "epochs": recipe["epochs"], "goal_accuracy": GOALS[args.budget][0],
               "goal_train_time_s": GOALS[args.budget][1]}
    if len(rows) > 1:
        metrics["test_accuracy_by_epoch"] = [row["test_acc"] for row in rows]
    met = final["test_acc"] >= GOALS[args.budget][0] and final["train_time_s"] <= GOALS[args.budget][1]
    print(f"goal {GOALS[args.budget]}: {'met' if met else 'NOT met'}")
    name = (f"flagship_{args.budget}" + ("_sgd" if recipe["optimizer"] == "sgd" else "")
            + (f"_seed{args.seed}" if args.seed else ""))  # seed 0's record keeps the plain name
    path = cc.record(name, metrics, data.source, wall_time,
                     profile=cc.profile(args.profile),
                     notes=f"benchmarks/flagship.py, seed {args.seed}, recipe {json.dumps(recipe)}")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
