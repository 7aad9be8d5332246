"""The contrastive first stage of the few-label head (``model.contrastive_pairs``), SetFit's objective.

Before the head starts from the class means, the body trains on pairs of training rows: the cosine of the
two rows' features is pulled towards 1 for a pair of one class and towards 0 for a pair of two, by the
squared error, as SetFit's ``CosineSimilarityLoss`` does. The features are the mean of the body's tokens
where the mean pooling is folded in (SetFit's pooling exactly: the folded layer and the head take no part),
else what the head reads. The fine-tune that follows moves body and head together as without it.

Pairs are drawn as SetFit draws them: every pair of training rows (a row with itself included), shuffled,
split into pairs of one class and pairs of two; as many of each, taken in turn (the shorter list from its
start again), one of each alternately. The stage is one epoch of the library's ``Trainer`` (its optimizer,
schedule, precision and devices) on those pairs, at SetFit's settings: learning rate 2e-5, batches of 16
pairs, a tenth of the steps warming up.

Off by default: on AG News with 8 labeled rows per class it scored as the few-label head without it, for
a third more time (docs/guides/few-labels.md).
"""

import dataclasses
import logging
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, List, Tuple

import numpy as np

log = logging.getLogger(__name__)

LEARNING_RATE = 2e-5  # SetFit's body learning rate
BATCH_PAIRS = 16  # SetFit's batch size
WARMUP = 0.1  # SetFit's warmup proportion


def draw_pairs(labels: np.ndarray, pairs: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pairs`` pairs of row indices (first, second) and their targets (1.0: one class, 0.0: two), half each.

    Empty arrays where the labels give no pair of one of the two sorts (a single class).
    """
    labels = np.asarray(labels)
    first, second = np.triu_indices(len(labels))  # every pair, a row with itself included
    order = np.random.default_rng(seed).permutation(len(first))
    first, second = first[order], second[order]
    same = labels[first] == labels[second]
    if same.all() or not same.any():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    half = pairs // 2
    chosen = []
    for sort in (same, ~same):
        where = np.flatnonzero(sort)
        chosen.append(where[np.arange(half) % len(where)])  # in turn, from the start again where it runs out
    taken = np.stack(chosen, axis=1).reshape(-1)  # one of one class, one of two, alternately
    return first[taken], second[taken], same[taken].astype(np.float32)


@contextmanager
def head_dropout_off(model):
    """The dropout layers outside the encoder at rate 0 for the stage: the pairs' cosines compare the features as
    SetFit's compare its pooled vectors (the encoder keeps its own dropout); restored after."""
    import torch

    encoder = model.get_submodule(model.base_model_prefix)
    inside = {id(m) for m in encoder.modules()}
    outside = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and id(m) not in inside]
    rates = [m.p for m in outside]
    for module in outside:
        module.p = 0.0
    try:
        yield
    finally:
        for module, rate in zip(outside, rates):
            module.p = rate


class PairCollator:
    """A batch of pairs: the first rows then the second rows, padded together, and the targets."""

    def __init__(self, rows: List[Dict[str, Any]], pad):
        self.rows, self.pad = rows, pad

    def __call__(self, pairs: List[Dict[str, Any]]) -> Dict[str, Any]:
        import torch

        batch = self.pad([self.rows[p["first"]] for p in pairs] + [self.rows[p["second"]] for p in pairs])
        batch["target"] = torch.tensor([p["target"] for p in pairs], dtype=torch.float32)
        return batch


def pair_trainer_class():
    """The Trainer subclass whose loss is SetFit's (imported here: transformers only when a run trains)."""
    import torch
    from transformers import Trainer

    from finetune.training.prototypes import token_mean

    class PairTrainer(Trainer):
        """Trains on batches of PairCollator: the squared error of the pairs' feature cosines against the targets.

        ``reads``: the layer whose input is the features, read by a hook: the folded mean-pooling layer (its input
        is the body's tokens, meaned here as SetFit means them), else the task kind's head layer.
        """

        def __init__(self, *args, reads, **kwargs):
            super().__init__(*args, **kwargs)
            self.reads = reads

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("target")
            found = []

            def keep(module, args, kwargs):
                found.append(args[0] if args else kwargs["hidden_states"])

            hook = self.reads.register_forward_pre_hook(keep, with_kwargs=True)
            try:
                outputs = model(**inputs)
            finally:
                hook.remove()
            features = found[-1]
            if features.dim() == 3:  # tokens: their mean, padding left out
                features = token_mean(features, inputs["attention_mask"])
            first, second = features.float().chunk(2)
            cosine = torch.nn.functional.cosine_similarity(first, second, dim=-1)
            loss = torch.nn.functional.mse_loss(cosine, target.to(cosine))
            return (loss, outputs) if return_outputs else loss

    return PairTrainer


def contrastive_stage(model, kind, train, pad, args, pairs: int, folded: bool) -> str:
    """Train ``model``'s body on ``pairs`` pairs of ``train``'s rows (see the module doc); what was done, in words.

    ``pad``: the collator that pads rows of model inputs; ``args``: the run's TrainingArguments, whose hardware
    settings (device, precision, seed) the stage keeps and whose schedule it replaces with SetFit's. ``folded``:
    the last encoder layer is the folded mean pooling (prototypes.fold_mean_pooling): the features are the mean
    of its input tokens, SetFit's exactly, and that layer, like the head, takes no part.
    """
    from datasets import Dataset

    from finetune.training.prototypes import MODEL_INPUTS

    first, second, target = draw_pairs(np.asarray(train["label"]), pairs, args.seed)
    if not len(target):
        return "no contrastive stage (the training rows hold a single class)"
    inputs = [c for c in train.column_names if c in MODEL_INPUTS and c != "label"]
    rows = train.select_columns(inputs).to_list()
    data = Dataset.from_dict({"first": first.tolist(), "second": second.tolist(), "target": target.tolist()})
    reads = model.get_submodule(model.base_model_prefix).encoder.layer[-1] if folded else kind.head(model)
    with tempfile.TemporaryDirectory() as scratch:  # the stage saves nothing; the Trainer wants a folder
        stage_args = dataclasses.replace(
            args,
            output_dir=scratch,
            learning_rate=LEARNING_RATE,
            per_device_train_batch_size=BATCH_PAIRS,
            gradient_accumulation_steps=1,
            num_train_epochs=1,
            max_steps=-1,
            warmup_steps=WARMUP,
            lr_scheduler_type="linear",
            weight_decay=0.0,  # SetFit: 0.01, whose pull over a few dozen steps at 2e-5 is nil
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            train_sampling_strategy="random",
            auto_find_batch_size=False,
            torch_compile=False,
            disable_tqdm=True,
        )
        trainer = pair_trainer_class()(
            model=model, args=stage_args, train_dataset=data, data_collator=PairCollator(rows, pad), reads=reads
        )
        with head_dropout_off(model):
            result = trainer.train()
    log.info(
        "Contrastive stage: %d pairs of training rows (%d of one class), %d steps, loss %.4f, %.1f s",
        len(target),
        int(target.sum()),
        result.global_step,
        result.training_loss,
        result.metrics["train_runtime"],
    )
    return described(len(target))


def described(pairs: int) -> str:
    """The stage in the head's description (the log, the model card)."""
    return f"the body trained first on {pairs} pairs of training rows (SetFit's contrastive objective)"
