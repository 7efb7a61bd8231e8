"""Training data: a built mixture split → encoded conversations → padded micro-batches,
in an order that is a pure function of (seed, epoch, step), so a run resumes at the exact
sample it stopped at without replaying the data before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dragonfly.model.constants import IGNORE_INDEX


def split_texts(dataset_dir: str | Path, split: str) -> list[str]:
    """Every message's text of a built split, in row order (empty when the split is not
    there: the trainer reports that itself): the corpus a fresh tiny tokenizer learns from."""
    from datasets import load_from_disk

    splits = load_from_disk(str(dataset_dir))
    if split not in splits:
        return []
    return [message["content"] for conversation in splits[split]["messages"] for message in conversation]


class ConversationDataset(Dataset):
    """Rows of a mixture split (``images`` relative to ``root``, ``messages``), encoded."""

    def __init__(self, rows, root: str | Path, processor, max_length: int):
        self.rows = rows
        self.root = Path(root)
        self.processor = processor
        self.max_length = max_length

    @classmethod
    def from_mixture(
        cls, dataset_dir: str | Path, split: str, root: str | Path, processor, max_length: int, expected=None
    ):
        """Rows of ``split`` of a built mixture. With ``expected`` (a MixtureConfig), the build's
        manifest must say it finished and was built from exactly that config (StaleDatasetError)."""
        from datasets import load_from_disk

        from dragonfly.data.manifest import DatasetNotFoundError, MissingSplitError, verify_dataset

        dataset_dir = Path(dataset_dir)
        if expected is not None:
            dataset_dir = verify_dataset(dataset_dir.parent, expected)
        if not dataset_dir.exists():
            raise DatasetNotFoundError(
                f"training data {dataset_dir} not found", hint="build it with `dragonfly data build --mixture NAME`"
            )
        splits = load_from_disk(str(dataset_dir))
        if split not in splits:
            raise MissingSplitError(f"{dataset_dir} has no split {split!r}; it has {', '.join(splits)}")
        return cls(splits[split], root, processor, max_length)

    def without_too_long(self) -> tuple[ConversationDataset, list[dict]]:
        """This split less the samples longer than ``max_length`` (truncation would cut their
        reply, or all of it: a sample with nothing to learn), and a record of each left out.
        The same on every rank: a pure function of the rows and the processor."""
        lengths = [
            self.processor.sequence_length(m, len(i))
            for m, i in zip(self.rows["messages"], self.rows["images"], strict=True)
        ]
        over = [n for n, length in enumerate(lengths) if length > self.max_length]
        if not over:
            return self, []
        ids, origins = self.rows["id"], self.rows["origin"] if "origin" in self.rows.column_names else None
        records = [
            {"id": ids[n], "origin": origins[n] if origins else "", "reason": "too_long", "length": lengths[n],
             "max_length": self.max_length}
            for n in over
        ]  # fmt: skip
        keep = sorted(set(range(len(lengths))) - set(over))
        return ConversationDataset(self.rows.select(keep), self.root, self.processor, self.max_length), records

    def __len__(self) -> int:
        return len(self.rows)

    def length(self, index: int) -> tuple[bool, int]:
        """(has image, rough text length): the key length grouping sorts by."""
        row = self.rows[index]
        return bool(row["images"]), sum(len(m["content"]) for m in row["messages"])

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        images = [self.root / path for path in row["images"]]
        try:
            return self.processor.encode_conversation(row["messages"], images, max_length=self.max_length)
        except Exception as err:  # name the sample: a bad row hours into a run must be findable
            raise RuntimeError(f"sample {row['id']!r} ({row.get('origin', '')}): {err}") from err


@dataclass
class Collator:
    """Right-pads ids/labels and concatenates the images of the micro-batch."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = e["input_ids"], e["labels"], 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        with_images = [e for e in examples if "pixel_values" in e]
        if with_images:
            batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
            batch["image_regions"] = torch.cat([e["image_regions"] for e in with_images])
        return batch


def epoch_order(num_samples: int, seed: int, epoch: int, global_batch: int, lengths=None) -> list[int]:
    """The sample order of one epoch; with ``lengths``, LLaVA-style grouping.

    Grouping sorts each megabatch (8 global batches) by (modality, length) so a micro-batch
    pads little and rarely mixes text-only with image samples, then shuffles the global
    batches it made. Everything is seeded by (seed, epoch).
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_samples, generator=gen).tolist()
    if lengths is None:
        return order
    mega = 8 * global_batch
    grouped = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: (lengths[i][0], lengths[i][1]))
        batches = [chunk[j : j + global_batch] for j in range(0, len(chunk), global_batch)]
        for b in torch.randperm(len(batches), generator=gen).tolist():
            grouped.extend(batches[b])
    return grouped


class StepBatches(torch.utils.data.Sampler):
    """Yields this rank's micro-batches (index lists), optimiser step by step, from a start step.

    Step ``t`` uses samples ``order[t*G:(t+1)*G]`` of its epoch; its micro-batch ``c`` goes to
    rank ``c % world`` as that rank's accumulation step ``c // world``, so one process with
    accumulation sees exactly the micro-batches that several processes see together.
    """

    def __init__(
        self,
        dataset: ConversationDataset,
        global_batch: int,
        micro_batch: int,
        world: int,
        rank: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        group_by_length: bool = False,
    ):
        self.dataset, self.global_batch, self.micro = dataset, global_batch, micro_batch
        self.world, self.rank, self.seed = world, rank, seed
        self.total_steps, self.start_step = total_steps, start_step
        self.steps_per_epoch = len(dataset) // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(dataset)} samples cannot fill one global batch of {global_batch}")
        self.lengths = [dataset.length(i) for i in range(len(dataset))] if group_by_length else None

    def __iter__(self):
        order, order_epoch = None, -1
        for step in range(self.start_step, self.total_steps):
            epoch, within = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order = epoch_order(len(self.dataset), self.seed, epoch, self.global_batch, self.lengths)
                order_epoch = epoch
            batch = order[within * self.global_batch : (within + 1) * self.global_batch]
            chunks = [batch[c : c + self.micro] for c in range(0, len(batch), self.micro)]
            yield from chunks[self.rank :: self.world]

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.global_batch // (self.micro * self.world)
