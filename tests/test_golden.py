"""The shipped default model's greedy output, byte for byte (see golden/README.md)."""

from __future__ import annotations

from pathlib import Path

from runtime import Generator

GOLDEN = Path(__file__).parent / "golden" / "default_greedy.txt"


def test_default_model_greedy_output_is_unchanged() -> None:
    assert Generator.load().generate("This is Z", 200) + "\n" == GOLDEN.read_text()


def test_golden_starts_as_the_model_card_says() -> None:
    card = (Path(__file__).parent.parent / "artifacts" / "default" / "MODEL_CARD.md").read_text()
    assert GOLDEN.read_text()[:59] in card
