"""Command line (also `python -m cifar_course ...`):

    cifar-course serve MODEL [--host 127.0.0.1] [--port 8000] [--top-k 3]
    cifar-course export-demo FOLDER     train the deployment chapter's small CNN, write the files to serve
"""

from __future__ import annotations

import argparse
import sys


def export_demo(folder, epochs: int | None = None, width: int | None = None) -> dict:
    """What the deployment chapter (10) does before serving: train the small CNN briefly on the
    profile's data, then write FOLDER/model.tflite and FOLDER/model.onnx, each with its JSON."""
    from pathlib import Path

    import cifar_course as cc

    if cc.SERVING_ONLY:
        raise RuntimeError("export-demo trains a model: it needs the full environment (make "
                           ".venv/bin/.synced), not the serving install.")
    p = cc.profile()
    cc.seed_everything(0)
    data = cc.load_cifar10()
    (x_train, y_train), _ = data
    stats = cc.channel_stats(x_train)
    train_ds = cc.make_dataset(x_train, y_train, 128, training=True, augment="padcrop", stats=stats)
    model = cc.build_small_cnn(width=width or p.choose(smoke=8, quick=16, full=32))
    cc.train_model(model, train_ds, epochs or p.choose(smoke=2, quick=3, full=30), learning_rate=3e-3,
                   schedule="onecycle", verbose=0)
    return cc.export_for_serving(model, Path(folder), data.class_names, stats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cifar-course", description="Tools of the cifar-course book.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve an exported model over HTTP (page /, docs /docs, "
                                              "GET /health, POST /predict with PNG/JPEG images).")
    serve.add_argument("model", help="a .tflite or .onnx file or a SavedModel folder, with its "
                                     "preprocessing JSON beside it")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 inside a container)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--top-k", type=int, default=3, help="classes returned per image (default 3)")
    serve.add_argument("--max-body-mb", type=float, default=8.0, help="largest accepted request body")
    serve.add_argument("--threads", type=int, default=None, help="threads per TFLite/ONNX model")
    serve.add_argument("--workers", type=int, default=None,
                       help="inference threads (default: one per core), each with its own interpreter")
    demo = commands.add_parser("export-demo", help="Train the deployment chapter's small CNN on the "
                                                   "profile's data (CIFAR_COURSE_PROFILE) and write "
                                                   "FOLDER/model.tflite and model.onnx to serve.")
    demo.add_argument("folder", help="where to write the model files and their JSON")
    demo.add_argument("--epochs", type=int, default=None, help="default: the chapter's, per profile")
    args = parser.parse_args(argv)

    if args.command == "export-demo":
        for kind, path in export_demo(args.folder, args.epochs).items():
            print(f"{kind}: {path}")
        return 0

    from .serve import serve as run_server

    try:
        run_server(args.model, host=args.host, port=args.port, top_k=args.top_k,
                   max_body_bytes=int(args.max_body_mb * 1024 * 1024), num_threads=args.threads,
                   workers=args.workers)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"cifar-course serve: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
