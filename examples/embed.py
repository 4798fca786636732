"""Embed the runtime in an app: load once, generate on demand, handle its errors."""

import sys

from runtime import GenerationOptions, Generator, TextgenError


def main() -> int:
    model = sys.argv[1] if len(sys.argv) > 1 else None  # None: the shipped default model
    try:
        gen = Generator.load(model)
    except TextgenError as exc:
        print(f"cannot load the model: {exc}", file=sys.stderr)
        return 1
    prompt = gen.spec.sample_prompt
    print("greedy: ", gen.generate(prompt, 40))
    creative = GenerationOptions(temperature=0.8, top_k=5, seed=42, stop=(".",))
    print("sampled:", gen.generate(prompt, 40, creative))
    try:
        gen.generate("\u2603", 10)  # a character the model has never seen
    except TextgenError as exc:
        print("refused:", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
