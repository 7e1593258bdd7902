"""Images/s of Keras' ImageDataGenerator against the course's tf.data pipeline, same recipe, one process.

    flock /tmp/cifar_cpu.lock .venv/bin/python benchmarks/pipeline_throughput.py [--images 12800]

Recipes: "affine" (rotation 15, shifts 0.1, horizontal flip, zoom 0.2) and "padcrop" (shifts of up to 4 px
with reflected borders + flip; `pad_crop_flip` in the pipeline). Batch 64 for both loaders. The loaders
alternate and the best of `--repeats` rounds counts. Real CIFAR-10 when CIFAR_COURSE_DATA is set,
the synthetic stand-in otherwise (the script says which). Goal (issue 2): >= 3x on "affine", >= 10x on
"padcrop". Results go in benchmarks/README.md.
"""

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cifar_course as cc  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_800, help="images timed per round and loader")
    parser.add_argument("--train-size", type=int, default=20_000, help="images the loaders draw from")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    source = os.environ.get("CIFAR_COURSE_DATA") or "synthetic"
    prof = cc.profile("quick")
    data = cc.load_cifar10(source, profile=prof) if source != "synthetic" else cc.make_synthetic(args.train_size, 10)
    data = cc.subset(data, args.train_size, None)
    (x_train, y_train), _ = data
    print(cc.describe(data))
    print(f"Machine: {cc.results.hardware()['cpu']}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = cc.measure_throughput(x_train, y_train, batch_size=args.batch_size, n_images=args.images,
                                 repeats=args.repeats)
    print(cc.markdown_table(rows, digits=1))
    for recipe, goal in (("affine", 3), ("padcrop", 10)):
        ratio = [r["speed-up"] for r in rows if r["recipe"] == recipe and r["loader"] != "ImageDataGenerator"][0]
        print(f"{recipe}: {ratio:.1f}x (goal {goal}x) {'met' if ratio >= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
