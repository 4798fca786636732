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


def test_model_card_command_rebuilds_the_default_model(tmp_path) -> None:
    """The command in MODEL_CARD.md, run again, gives the shipped model's behaviour."""
    from runtime.artifact import ModelSpec
    from trainer.train import TrainConfig, train

    card = (Path(__file__).parent.parent / "artifacts" / "default" / "MODEL_CARD.md").read_text()
    assert "textgen-train train --seed 0 --out artifacts/default --force" in card
    spec = train(TrainConfig(out_dir=tmp_path / "m", seed=0))
    shipped = ModelSpec.read(Generator.load().model_dir)
    assert spec.chars == shipped.chars and spec.architecture == shipped.architecture
    # Same seed, same CPU kernels: the same training curve (a tolerance for other CPUs'
    # float rounding) and the same greedy text.
    assert abs(spec.training["loss"] - shipped.training["loss"]) < 1e-3
    rebuilt = Generator.load(tmp_path / "m").generate("This is Z", 200) + "\n"
    assert rebuilt == GOLDEN.read_text()
