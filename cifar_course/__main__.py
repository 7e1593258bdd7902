"""Command line: `cifar-course serve MODEL [--host 127.0.0.1] [--port 8000] [--top-k 3]`
(or `python -m cifar_course serve ...`)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cifar-course", description="Tools of the cifar-course book.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve an exported model over HTTP (GET /health, "
                                              "POST /predict with PNG/JPEG images).")
    serve.add_argument("model", help="a .tflite or .onnx file or a SavedModel folder, with its "
                                     "preprocessing JSON beside it")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 inside a container)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--top-k", type=int, default=3, help="classes returned per image (default 3)")
    serve.add_argument("--max-body-mb", type=float, default=8.0, help="largest accepted request body")
    serve.add_argument("--threads", type=int, default=None, help="TFLite interpreter threads")
    args = parser.parse_args(argv)

    from .serve import serve as run_server

    try:
        run_server(args.model, host=args.host, port=args.port, top_k=args.top_k,
                   max_body_bytes=int(args.max_body_mb * 1024 * 1024), num_threads=args.threads)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"cifar-course serve: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
