"""Dragonfly as an lmms-eval model: ``lmms-eval --model dragonfly --model_args pretrained=DIR``.

lmms-eval (0.7.x) finds it through the entry-point group ``lmms_eval.models`` that
pyproject.toml declares (:func:`manifest`); nothing here is imported unless lmms-eval is
installed (``pip install '.[lmms-eval]'``). Requests arrive as lmms-eval builds them:
``generate_until`` args ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``,
``loglikelihood`` args ``(context, doc_to_target, doc_to_visual, doc_id, task, split)``; the
images come from ``doc_to_visual(self.task_dict[task][split][doc_id])``. Contexts carry no
image placeholder (lmms-eval's simple models add their own), so one ``<image>`` line per
image goes before the context, as Dragonfly was trained. Decoding is greedy whatever the
task's temperature: the paper's numbers are greedy.
"""

from __future__ import annotations

from lmms_eval.api.model import lmms
from PIL import Image

from dragonfly.eval.generate import generate_batch
from dragonfly.inference import load
from dragonfly.model.constants import IMAGE_TOKEN


def manifest():
    """The entry point's payload: lmms-eval's registration record for ``dragonfly``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="dragonfly", simple_class_path=f"{__name__}.Dragonfly")


def _flatten(visuals) -> list:
    if visuals is None:
        return []
    if not isinstance(visuals, list | tuple):
        return [visuals]
    return [v for item in visuals for v in _flatten(item)]


class Dragonfly(lmms):
    """``pretrained``: a saved Dragonfly directory; ``batch_size`` requests per forward."""

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 1,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int | str = 32,
        **_ignored,
    ) -> None:
        super().__init__()
        self.model, self.processor = load(pretrained, dtype)
        self.model.to(device)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    # -- inputs ---------------------------------------------------------------------------
    def _images(self, doc_to_visual, doc_id, task, split) -> list[Image.Image]:
        if doc_to_visual is None:
            return []
        visuals = _flatten(doc_to_visual(self.task_dict[task][split][doc_id]))
        if not all(isinstance(v, Image.Image) for v in visuals):
            kinds = sorted({type(v).__name__ for v in visuals})
            raise ValueError(f"dragonfly takes images only; task {task!r} gives {kinds}")
        return [v.convert("RGB") for v in visuals]

    @staticmethod
    def _messages(context: str, n_images: int) -> list[dict[str, str]]:
        if IMAGE_TOKEN not in context:
            context = f"{IMAGE_TOKEN}\n" * n_images + context
        return [{"role": "user", "content": context}]

    # -- the three request types ----------------------------------------------------------
    def generate_until(self, requests) -> list[str]:
        """Greedy answers, ``batch_size`` at a time among requests with the same generation
        settings, cut at the first ``until`` string."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            limit = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                images = [self._images(*requests[i].args[2:6]) for i in chunk]
                conversations = [
                    self._messages(requests[i].args[0], len(im)) for i, im in zip(chunk, images, strict=True)
                ]
                texts = generate_batch(self.model, self.processor, conversations, images, limit)
                for i, text in zip(chunk, texts, strict=True):
                    for stop in until:
                        text = text.split(stop, 1)[0] if stop else text
                    out[i] = text.strip()
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Sum of the continuation's token log-probabilities after the prompt, and whether
        greedy decoding would produce exactly it (multiple-choice tasks score this way)."""
        import torch

        results = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            images = self._images(doc_to_visual, doc_id, task, split)
            doc = self.task_dict[task][split][doc_id] if task in self.task_dict else None
            continuation = target(doc) if callable(target) else target
            prompt = self.processor.build_prompt(self._messages(context, len(images)))
            prefix = len(self.processor.text_ids(prompt))  # the images are tiled once, below
            with torch.inference_mode():
                inputs = self.processor(text=[prompt + continuation], images=images or None)
                logits = self.model(**inputs).logits[0, prefix - 1 : -1].float()  # [C, V]
            wanted = inputs["input_ids"][0, prefix:]  # [C]
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, wanted[:, None])[:, 0]
            results.append((float(logprobs.sum()), bool((logits.argmax(-1) == wanted).all())))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("dragonfly answers single-round requests (generate_until)")
