"""Terminal autocomplete: type, and the next characters and word completions update per key.

Usage: python examples/autocomplete.py [MODEL_DIR]   (Enter or Ctrl-D ends; Backspace works)

Each keystroke appends one character to a runtime Context (one model step, whatever was
typed before); suggestions are read from it without re-reading the text.
"""

import sys
import termios
import tty

from runtime import Generator, TextgenError


def suggestions(ctx) -> str:
    try:
        nxt = "  ".join(f"{c!r} {p:.0%}" for c, p in ctx.top(3))
        words = "  ".join(w or "·" for w, _ in ctx.complete(3))
    except TextgenError:  # too little text yet for a window model
        return "(keep typing)"
    return f"next: {nxt} | words: {words}"


def main() -> int:
    try:
        gen = Generator.load(sys.argv[1] if len(sys.argv) > 1 else None)
    except TextgenError as exc:
        print(f"cannot load the model: {exc}", file=sys.stderr)
        return 1
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # one key at a time, no echo
    text, ctx = "", gen.context()
    try:
        while True:
            key = sys.stdin.read(1)
            if key in ("", "\x04", "\n", "\r"):
                break
            if key in ("\x7f", "\b"):  # backspace: contexts only grow, so rebuild this one
                text = text[:-1]
                ctx = gen.context(text)
            elif key in gen.spec.char_to_index:
                text += key
                ctx.append(key)
            else:
                sys.stdout.write("\a")  # a character the model does not know
                continue
            sys.stdout.write(f"\r\x1b[K{text}  [{suggestions(ctx)}]\n")
            sys.stdout.flush()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
