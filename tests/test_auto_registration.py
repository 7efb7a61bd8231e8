"""`import dragonfly` is all the transformers Auto classes need (issue #23, item 4), in every
import order a user can type, each in a fresh interpreter (an earlier import in this process
would hide a missing registration); the released code's folder, which says `model_type:
dragonfly` too, is refused with our error instead of loading as a random model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

RELEASED = Path(__file__).resolve().parent / "fixtures" / "released" / "bin"
LOAD = (
    "m = AutoModelForImageTextToText.from_pretrained(D); p = AutoProcessor.from_pretrained(D);"
    "print(type(m).__name__, type(p).__name__, type(p.image_processor).__name__)"
)
EXPECTED = "DragonflyForConditionalGeneration DragonflyProcessor DragonflyImageProcessor"
ORDERS = {
    "dragonfly, then transformers": f"import dragonfly; from transformers import AutoModelForImageTextToText, AutoProcessor; {LOAD}",
    "transformers, then dragonfly": f"from transformers import AutoModelForImageTextToText, AutoProcessor; import dragonfly; {LOAD}",
    # transformers loads its image-processor Auto module from inside its processor Auto module
    "the processor first": f"import dragonfly; from transformers import AutoProcessor, AutoModelForImageTextToText; {LOAD}",
    # our model module is what makes transformers load its Auto models
    "our model module first": "import dragonfly.model.modeling; from transformers import AutoModelForImageTextToText,"
    f" AutoProcessor; {LOAD}",
    "AutoConfig alone": "import dragonfly; from transformers import AutoConfig;"
    "print(type(AutoConfig.from_pretrained(D)).__name__)",
    "the pipeline": "import dragonfly; from transformers import pipeline;"
    "print(type(pipeline('image-text-to-text', model=D).model).__name__)",
}
EXPECTS = {"AutoConfig alone": "DragonflyConfig", "the pipeline": "DragonflyForConditionalGeneration"}


def run(code: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"D = {str(folder)!r}\n{code}"], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("order", list(ORDERS))
def test_import_dragonfly_is_enough_for_the_auto_classes(order, saved_tiny):
    done = run(ORDERS[order], saved_tiny)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == EXPECTS.get(order, EXPECTED)


def test_without_import_dragonfly_transformers_does_not_know_it(saved_tiny):
    """The control: the registration above is what `import dragonfly` did."""
    done = run(f"from transformers import AutoModelForImageTextToText, AutoProcessor; {LOAD}", saved_tiny)
    assert done.returncode != 0 and "dragonfly" in done.stderr


def test_the_released_layout_is_refused_with_the_way_to_convert_it():
    done = run(
        "import dragonfly; from transformers import AutoModelForImageTextToText as A; A.from_pretrained(D)", RELEASED
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dragonfly.errors.CheckpointError: this folder holds a checkpoint of the released")
    assert "dragonfly convert-released" in last
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "dragonfly.cli",
            "predict",
            "--model",
            str(RELEASED),
            "--image",
            "x.png",
            "--question",
            "?",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 1 and cli.stderr.startswith(f"error: {RELEASED} holds a checkpoint of the released")


def test_load_names_a_folder_of_another_model():
    from dragonfly.errors import CheckpointError
    from dragonfly.inference import load

    with pytest.raises(CheckpointError, match="holds a 'llama' model, not a Dragonfly checkpoint"):
        load(RELEASED.parents[1] / "hub" / "llama3")
