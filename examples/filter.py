"""A Unix filter: each line of stdin is a prompt; each line of stdout its completion.

    printf 'This is Z\nsoftware\n' | python examples/filter.py --length 30

All prompts go through one batch (one onnxruntime Run per generated character).
"""

import argparse
import sys

from runtime import GenerationOptions, Generator, TextgenError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: shipped model)")
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    prompts = sys.stdin.read().splitlines()
    if not prompts:
        return 0
    try:
        gen = Generator.load(args.model)
        options = GenerationOptions(temperature=args.temperature, seed=args.seed)
        for text in gen.generate_batch(prompts, args.length, options):
            sys.stdout.write(text + "\n")
    except TextgenError as exc:
        print(f"filter: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
