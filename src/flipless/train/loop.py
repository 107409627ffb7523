"""The training loop: compatible training of a new model, in one process or under torchrun.

One call trains the new model with the compatibility objective (:mod:`flipless.losses`) and a
teacher (:mod:`flipless.teachers`), and after each epoch measures validation accuracy and a
:class:`~flipless.metrics.comparison.Comparison` against the old model (NFR, BTC, BEC, …)::

    from flipless.losses import build_loss
    from flipless.teachers import ModelTeacher
    from flipless.train import TrainSettings, fit

    result = fit(new_model, scenario.new_train, scenario.validation,
                 objective=build_loss("fd-kl"), teacher=ModelTeacher(old_model),
                 settings=TrainSettings(epochs=20, batch_size=64, select="nfr-within:0.005"),
                 output_dir="runs/fd-kl")
    result.comparison.negative_flip_rate      # of the kept epoch, on validation

Conventions:

* ``batch_size`` counts the samples of one optimizer step over all processes and
  accumulation steps. Each global batch is cut into ``world size × accumulation_steps`` equal
  micro-batches in rank order, and each micro-batch's mean loss is weighted by its share of
  the global batch, so one process and several compute the same gradient (up to float
  rounding and batch-norm statistics, which are per process).
* The batch order of an epoch depends only on ``seed`` and the epoch, so a resumed run skips
  the steps already done and continues exactly (checkpoints: :mod:`flipless.train.state`).
* The kept model is chosen on the validation split by a stated rule
  (:mod:`flipless.train.selection`), never on test.
* Mixed precision: ``precision="bf16"`` (CUDA or CPU autocast) or ``"fp16"`` (CUDA, with a
  gradient scaler); gradients are unscaled before clipping and before the hooks see them.
* Only rank 0 writes checkpoints, logs to the tracker and prints.
* A growing label set: when the old model knows fewer classes (``old_classes=``, or the
  teacher's ``class_mask``), the validation comparison counts only the examples whose label
  it knows (``compare(..., old_classes=...)``), so NFR is not diluted by classes it never had.
* String ids: with ``id_names=`` (``UpdateScenario.id_names``: the string id of each sample
  number), the validation comparisons name their samples by those strings; batches and
  cached teacher logits keep the integer ids.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from flipless.data.labeled import LabeledData
from flipless.errors import InputError, MismatchError
from flipless.losses.objective import TERMS, CompatibilityLoss
from flipless.metrics.comparison import Comparison, compare
from flipless.teachers import known_classes
from flipless.train import distributed
from flipless.train.batches import check_dataset, epoch_order, fetch, labels_of, to_device
from flipless.train.hooks import HOOK_METHODS
from flipless.train.progress import Progress
from flipless.train.records import EpochRecord, FitResult, fill_validation, tracker_metrics
from flipless.train.schedules import Schedule, build_schedule
from flipless.train.selection import SelectionRule, undominated
from flipless.train.settings import TrainSettings
from flipless.train.state import (
    capture_rng,
    read_checkpoint,
    restore_rng,
    write_checkpoint,
    write_weights,
)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
BEST_WEIGHTS = "best.safetensors"


class _Student(nn.Module):
    """The new model, returning (logits, features or None) so DDP wraps one forward."""

    def __init__(self, model: nn.Module, with_features: bool) -> None:
        super().__init__()
        self.model = model
        self.with_features = with_features

    def forward(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.with_features:
            features = self.model.features(inputs)
            return self.model.head(features), features
        output = self.model(inputs)
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output, None


class Trainer:
    """Compatible training of ``model``; see the module docstring and :func:`fit`."""

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        validation_data: Dataset | None = None,
        *,
        objective: CompatibilityLoss | None = None,
        teacher: Any = None,
        old_model: nn.Module | None = None,
        old_validation_predictions: Any = None,
        old_classes: Sequence[int] | None = None,
        id_names: Sequence[str] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        settings: TrainSettings | None = None,
        hooks: Sequence[Any] = (),
        tracker: Any = None,
        output_dir: str | Path | None = None,
        resume: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not any(parameter.requires_grad for parameter in model.parameters()):
            raise InputError(
                "the model has no trainable parameters (requires_grad is False everywhere: a "
                "teacher freezes its model); train a copy with .requires_grad_(True)."
            )
        check_dataset(train_data, "train_data")
        if validation_data is not None:
            check_dataset(validation_data, "validation_data")
        if objective is not None and not isinstance(objective, CompatibilityLoss):
            raise InputError(
                "objective must be a CompatibilityLoss (flipless.losses.build_loss('fd-kl'), …); "
                f"got {type(objective).__name__}."
            )
        self.settings = settings or TrainSettings()
        self.rule = SelectionRule.parse(self.settings.select)
        if validation_data is None and self.rule.name == "accuracy":
            # Nothing to choose on: the kept model is the last epoch's.
            self.rule = SelectionRule.parse("last")
        self.model = model
        self.train_data = train_data
        self.validation_data = validation_data
        self.objective = objective
        self.teacher = teacher
        self.old_model = old_model
        self.old_validation_predictions = old_validation_predictions
        #: the classes the old model knows, when fewer than the new model's: the validation
        #: comparison counts only examples labelled with one of them
        self.old_classes = (
            tuple(int(k) for k in old_classes)
            if old_classes is not None
            else known_classes(teacher)
        )
        #: the string id of each sample number, for the validation comparisons (or None)
        self.id_names = None if id_names is None else np.asarray(tuple(id_names), dtype=object)
        if self.id_names is not None and isinstance(validation_data, LabeledData):
            ids = validation_data.ids.numpy()
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.id_names)):
                raise MismatchError(
                    f"validation_data has sample ids up to {ids.max()} (from {ids.min()}) but "
                    f"id_names names {len(self.id_names)} samples; expected the id_names of the "
                    "data these samples came from (UpdateScenario.id_names)."
                )
        self.optimizer_factory = optimizer or (lambda p: torch.optim.AdamW(p, lr=1e-3))
        self.scheduler_factory = scheduler
        self.hooks = list(hooks)
        for hook in self.hooks:
            if not any(callable(getattr(hook, method, None)) for method in HOOK_METHODS):
                raise InputError(
                    f"hook {type(hook).__name__} has none of the hook methods {HOOK_METHODS}; "
                    "subclass flipless.train.Hook."
                )
        self.tracker = tracker
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.resume = resume
        self._check_teacher()
        # set by fit(): the live state hooks may read
        self.world: distributed.World | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Schedule | None = None
        self.epoch = 0
        self.step = 0
        self._candidates: dict[int, dict[str, torch.Tensor]] = {}

    # -- set-up ------------------------------------------------------------------------------

    def _term_needs(self, name: str) -> bool:
        if self.objective is None:
            return False
        return any(name in TERMS[term.kind][1] for term in self.objective.terms)

    def _check_teacher(self) -> None:
        if self.rule.needs_nfr and self.validation_data is None:
            raise InputError(f"selection rule {self.rule} needs validation_data.")
        if self.objective is None:
            if self.teacher is not None:
                raise InputError("a teacher was given without an objective; pass objective=.")
            return
        if self.objective.needs_teacher and self.teacher is None:
            raise InputError(
                "the objective needs the old model's logits: pass teacher=ModelTeacher(old_model)"
                ", an EnsembleTeacher or a CachedTeacher."
            )
        if self._term_needs("teacher_features") and not hasattr(self.teacher, "features"):
            raise InputError("the objective's CNA term needs a teacher with features().")

    def _old_predictions(self) -> np.ndarray | None:
        """The old model's validation predictions (given, or from the old model / teacher)."""
        data = self.validation_data
        if data is None:
            return None
        if self.old_validation_predictions is not None:
            predictions = np.asarray(torch.as_tensor(self.old_validation_predictions).cpu())
            if predictions.ndim == 2:
                predictions = predictions.argmax(axis=1)
            if predictions.shape != (len(data),):
                raise MismatchError(
                    f"old_validation_predictions has shape {predictions.shape}; expected one "
                    f"prediction (or score row) per validation sample ({len(data)})."
                )
            return predictions.astype(np.int64)
        source = self.old_model
        if source is not None:
            source.to(self.world.device).eval()
            return self._predict(lambda inputs, ids: source(inputs), data)
        teacher = self.teacher
        if teacher is None or not (hasattr(teacher, "model") or hasattr(teacher, "members")):
            return None  # e.g. a cached teacher: its ids are the training set's
        known = getattr(teacher, "class_mask", None)

        def old_logits(inputs: Any, ids: Any) -> torch.Tensor:
            logits = teacher.logits(inputs, ids)  # in the new label space
            if known is not None:  # classes the old model never saw are not its answers
                logits = logits.masked_fill(~known.to(logits.device), float("-inf"))
            return logits

        return self._predict(old_logits, data)

    # -- evaluation ----------------------------------------------------------------------

    def _predict(self, forward: Callable[[Any, Any], Any], data: Dataset) -> np.ndarray:
        """argmax predictions over ``data``, sharded over processes and gathered in order."""
        world = self.world
        positions = torch.arange(len(data)).tensor_split(world.size)[world.rank]
        predictions = []
        with torch.no_grad(), self._autocast():
            for chunk in positions.split(self.settings.eval_batch_size):
                batch = to_device(fetch(data, chunk), world.device)
                output = forward(batch["inputs"], batch["ids"])
                if isinstance(output, (tuple, list)):
                    output = output[0]
                predictions.append(output.argmax(dim=1).cpu())
        local = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
        return torch.cat(distributed.gather_objects(world, local)).numpy()

    def _validate(self, old_predictions: np.ndarray | None) -> Comparison | float | None:
        data = self.validation_data
        if data is None:
            return None
        self.model.eval()
        new = self._predict(lambda inputs, ids: self.model(inputs), data)
        self.model.train()
        labels = np.asarray(data.labels if isinstance(data, LabeledData) else labels_of(data))
        if old_predictions is None:
            return float((new == labels).mean())
        ids = data.ids.numpy() if isinstance(data, LabeledData) else None
        if ids is not None and self.id_names is not None:
            ids = self.id_names[ids]
        return compare(old_predictions, new, labels, ids=ids, old_classes=self.old_classes)

    # -- the loop ------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision, device = self.settings.precision, self.world.device
        if precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _schedule(self) -> Schedule:
        """The learning-rate schedule: the ``scheduler`` factory's (a torch scheduler, stepped
        per optimizer step, or a :class:`Schedule`), else the one the settings name."""
        settings = self.settings
        if self.scheduler_factory is None:
            steps_per_epoch = len(self._global_batches(0))
            return build_schedule(
                settings.schedule,
                self.optimizer,
                settings.epochs * steps_per_epoch,
                steps_per_epoch,
                **settings.schedule_settings,
            )
        if settings.schedule != "constant":
            raise InputError(
                f"both a scheduler factory and settings.schedule={settings.schedule!r} were "
                "given; pass one of them."
            )
        made = self.scheduler_factory(self.optimizer)
        return made if isinstance(made, Schedule) else Schedule(made, "step")

    def _global_batches(self, epoch: int) -> list[torch.Tensor]:
        order = epoch_order(len(self.train_data), self.settings.seed, epoch)
        parts = self.world.size * self.settings.accumulation_steps
        batches = list(order.split(self.settings.batch_size))
        if batches and len(batches[-1]) < parts:
            batches.pop()  # too small to give every process and micro-step a sample
        if not batches:
            raise InputError(
                f"{len(self.train_data)} training samples cannot fill one step of "
                f"{parts} micro-batches; lower batch_size, processes or accumulation_steps."
            )
        return batches

    def _micro_batches(self, batch: torch.Tensor) -> list[torch.Tensor]:
        mine = batch.tensor_split(self.world.size)[self.world.rank]
        return list(mine.tensor_split(self.settings.accumulation_steps))

    def _loss(
        self, student: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, features = student(batch["inputs"])
        labels = batch["labels"]
        if self.objective is None:
            loss = F.cross_entropy(logits, labels)
            return loss, {"cross_entropy": loss.detach()}
        teacher_logits = teacher_features = class_mask = None
        if self.teacher is not None:
            with torch.no_grad():
                if self.objective.needs_teacher:
                    teacher_logits = self.teacher.logits(batch["inputs"], batch["ids"])
                    teacher_logits = teacher_logits.to(logits.device)
                if self._term_needs("teacher_features"):
                    teacher_features = self.teacher.features(batch["inputs"])
            class_mask = getattr(self.teacher, "class_mask", None)
            if class_mask is not None:
                class_mask = class_mask.to(logits.device)
        return self.objective(
            logits,
            labels,
            teacher_logits,
            class_mask=class_mask,
            new_features=features,
            teacher_features=teacher_features,
        )

    def _call_hooks(self, method: str, *args: Any) -> list[Any]:
        return [getattr(hook, method)(self, *args) for hook in self.hooks if hasattr(hook, method)]

    def _checkpoint_state(
        self, epoch: int, partial: dict[str, Any], history: list[EpochRecord], best: int | None
    ) -> dict[str, Any]:
        rng = distributed.gather_objects(self.world, capture_rng())
        partials = distributed.gather_objects(self.world, partial)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "hooks": [
                hook.state_dict() if hasattr(hook, "state_dict") else {} for hook in self.hooks
            ],
            "rng": rng,
            "epoch": epoch,
            "partial": partials,
            "step": self.step,
            "history": [record.as_dict() for record in history],
            "best": best,
            "settings": asdict(self.settings),
            "world_size": self.world.size,
        }

    def _save(
        self, epoch: int, partial: dict[str, Any], history: list[EpochRecord], best: int | None
    ) -> None:
        state = self._checkpoint_state(epoch, partial, history, best)
        if self.world.is_main and self.output_dir is not None:
            write_checkpoint(self.output_dir, state)
        distributed.barrier(self.world)

    def _restore(
        self, state: dict[str, Any]
    ) -> tuple[int, dict[str, Any], list[EpochRecord], int | None]:
        if state["world_size"] != self.world.size:
            raise InputError(
                f"the checkpoint in {self.output_dir} was written by {state['world_size']} "
                f"processes; resume with the same number (now {self.world.size})."
            )
        if state["settings"] != asdict(self.settings):
            changed = sorted(
                key
                for key, value in asdict(self.settings).items()
                if state["settings"].get(key) != value
            )
            raise InputError(
                f"the checkpoint in {self.output_dir} was written with other settings "
                f"({', '.join(changed)}); use the same settings, another output_dir, or "
                "resume=False to start afresh."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        for hook, hook_state in zip(self.hooks, state["hooks"], strict=False):
            if hasattr(hook, "load_state_dict"):
                hook.load_state_dict(hook_state)
        restore_rng(state["rng"][self.world.rank])
        self.step = state["step"]
        history = [EpochRecord(**record) for record in state["history"]]
        return state["epoch"], state["partial"][self.world.rank], history, state["best"]

    def _seed(self) -> None:
        seed = self.settings.seed
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def fit(self) -> FitResult:
        """Train; resume from ``output_dir``'s checkpoint when there is one (and resume=True).

        Under torchrun it joins the job's process group, which outlives this call
        (:mod:`flipless.train.distributed`), so ``fit`` may run any number of times in a job.
        """
        self.world = distributed.setup(self.settings.device)
        return self._fit(self.world, self.settings)

    def _fit(self, world: distributed.World, settings: TrainSettings) -> FitResult:
        if settings.precision == "fp16" and world.device.type != "cuda":
            raise InputError("precision='fp16' needs a CUDA device; use 'bf16' or '32' on CPU.")
        if settings.batch_size % (world.size * settings.accumulation_steps):
            raise InputError(
                f"batch_size={settings.batch_size} must be a multiple of processes × "
                f"accumulation_steps = {world.size} × {settings.accumulation_steps}."
            )
        self._seed()
        model = self.model.to(world.device)
        model.train()
        if self.objective is not None:
            self.objective.to(world.device)
        if self.teacher is not None and hasattr(self.teacher, "model"):
            self.teacher.model.to(world.device)
        for member in getattr(self.teacher, "members", []):
            member.model.to(world.device)
        student: nn.Module = _Student(model, self._term_needs("new_features"))
        if world.distributed:
            device_ids = [world.device.index] if world.device.type == "cuda" else None
            student = nn.parallel.DistributedDataParallel(student, device_ids=device_ids)
        self.optimizer = self.optimizer_factory(model.parameters())
        self.optimizer.zero_grad(set_to_none=True)  # gradients left by earlier work must not count
        self.scheduler = self._schedule()
        use_scaler = settings.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

        start_epoch, partial, history, best = 0, _fresh_epoch(), [], None
        state = read_checkpoint(self.output_dir) if self.output_dir and self.resume else None
        if state is not None:
            start_epoch, partial, history, best = self._restore(state)
        old_predictions = self._old_predictions()
        if self.rule.needs_nfr and old_predictions is None:
            raise InputError(
                f"selection rule {self.rule} needs the old model's validation predictions: pass "
                "old_model=, a model teacher, or old_validation_predictions=."
            )
        progress = Progress(settings.progress if world.is_main else "none", settings.epochs)
        if (
            world.is_main
            and self.tracker is not None
            and start_epoch == 0
            and not partial["batches_done"]
        ):
            self.tracker.log_params(self._params())
        self._call_hooks("on_fit_start")
        comparison: Comparison | None = None
        with progress:
            if state is not None:
                progress.note(
                    f"resuming from {self.output_dir / 'checkpoint.pt'}: epoch {start_epoch + 1}"
                    f", step {self.step} ({len(history)} of {settings.epochs} epochs done)"
                )
            for epoch in range(start_epoch, settings.epochs):
                self.epoch = epoch
                record = self._train_epoch(student, epoch, partial, history, best, progress)
                if self.scheduler.interval == "epoch":
                    self.scheduler.step()
                partial = _fresh_epoch()
                fill_validation(record, self._validate(old_predictions))
                history.append(record)
                best = self.rule.best(
                    [r.accuracy for r in history], [r.negative_flip_rate for r in history]
                )
                self._keep_candidates(history, model)
                self._call_hooks("on_epoch_end", record)
                progress.epoch_done(record)
                if world.is_main and self.tracker is not None:
                    self.tracker.log_metrics(tracker_metrics(record), step=epoch)
                self._save(epoch + 1, partial, history, best)
            if best is not None and best != len(history) - 1:
                model.load_state_dict(self._candidate(best))
            if world.is_main and self.output_dir is not None:
                write_weights(model.state_dict(), self.output_dir / BEST_WEIGHTS)
            final = self._validate(old_predictions)
            comparison = final if isinstance(final, Comparison) else None
            if world.is_main and self.tracker is not None and comparison is not None:
                self.tracker.log_comparison(comparison, name="validation_comparison")
        return FitResult(
            model=model,
            history=history,
            best_epoch=best if best is not None else len(history) - 1,
            rule=str(self.rule),
            comparison=comparison,
            settings=settings,
            output_dir=self.output_dir,
        )

    def _train_epoch(
        self,
        student: nn.Module,
        epoch: int,
        partial: dict[str, Any],
        history: list[EpochRecord],
        best: int | None,
        progress: Progress,
    ) -> EpochRecord:
        """One epoch from ``partial["batches_done"]`` on, continuing its sums after a resume."""
        settings, world = self.settings, self.world
        batches = self._global_batches(epoch)
        batches_done = partial["batches_done"]
        started = time.perf_counter() - partial["seconds"]
        # per micro-batch (size, loss, parts), summed only when needed: no per-step tensor ops
        pending: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]] = []

        def totals() -> tuple[float, dict[str, float], int]:
            """Running sums in float64, added in sample order (so a resume adds identically)."""
            loss_total, parts_total = partial["loss_sum"], dict(partial["parts"])
            count = partial["samples"]
            if pending:
                sizes = [size for size, _, _ in pending]
                losses = torch.stack([loss for _, loss, _ in pending]).double().tolist()
                for size, value in zip(sizes, losses, strict=True):
                    loss_total += value * size
                for name in pending[0][2]:
                    values = torch.stack([parts[name] for _, _, parts in pending]).double()
                    for size, value in zip(sizes, values.tolist(), strict=True):
                        parts_total[name] = parts_total.get(name, 0.0) + value * size
                count += sum(sizes)
            return loss_total, parts_total, count

        def so_far(done: int) -> dict[str, Any]:
            loss_total, parts_total, count = totals()
            return {
                "batches_done": done,
                "loss_sum": loss_total,
                "parts": parts_total,
                "samples": count,
                "seconds": time.perf_counter() - started,
            }

        progress.epoch_start(epoch, len(batches), batches_done)
        for index in range(batches_done, len(batches)):
            batch = batches[index]
            micro = self._micro_batches(batch)
            for position, chunk in enumerate(micro):
                last = position == len(micro) - 1
                sync = contextlib.nullcontext()
                if world.distributed and not last:
                    sync = student.no_sync()
                with sync:
                    data = to_device(fetch(self.train_data, chunk), world.device)
                    with self._autocast():
                        loss, parts = self._loss(student, data)
                    share = len(chunk) * world.size / len(batch)
                    scaled = loss if share == 1.0 else loss * share
                    for replaced in self._call_hooks("before_backward", scaled):
                        if replaced is not None:
                            scaled = replaced
                    if self.scaler is not None:
                        self.scaler.scale(scaled).backward()
                    else:
                        scaled.backward()
                    self._call_hooks("after_backward")
                pending.append((len(chunk), loss.detach(), parts))
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if settings.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), settings.clip_grad_norm)
            self._call_hooks("before_optimizer_step")
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scheduler.interval == "step":
                self.scheduler.step()
            self.step += 1
            progress.step_done(loss.detach())
            if settings.checkpoint_every and self.step % settings.checkpoint_every == 0:
                self._save(epoch, so_far(index + 1), history, best)
        seconds = time.perf_counter() - started
        totals_by_rank = distributed.gather_objects(world, totals())
        count = sum(total[2] for total in totals_by_rank) or 1
        train_loss = sum(total[0] for total in totals_by_rank) / count
        names = totals_by_rank[0][1]
        parts_mean = {
            name: sum(total[1].get(name, 0.0) for total in totals_by_rank) / count for name in names
        }
        return EpochRecord(
            epoch=epoch,
            steps=len(batches),
            train_loss=train_loss,
            parts=parts_mean,
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            seconds=seconds,
            samples_per_second=count / seconds if seconds > 0 else math.nan,
        )

    # -- the epochs that may still be chosen ----------------------------------------------

    def _keep_candidates(self, history: list[EpochRecord], model: nn.Module) -> None:
        """Keep the weights of every epoch the rule could still choose, drop the others.

        A rule's choice is never dominated (another epoch at least as accurate with an NFR at
        most as high, earlier on a tie), but which undominated epoch wins can change as epochs
        arrive (``nfr-within``), so all of them are kept: in memory, or in ``output_dir/epochs``.
        """
        if self.rule.name == "last":
            return
        frontier = undominated(
            [r.accuracy for r in history], [r.negative_flip_rate for r in history]
        )
        epoch = len(history) - 1
        if epoch in frontier:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if self.output_dir is None:
                self._candidates[epoch] = weights
            elif self.world.is_main:
                write_weights(weights, self._candidate_path(epoch))
        for old in [k for k in self._candidates if k not in frontier]:
            del self._candidates[old]
        if self.output_dir is not None and self.world.is_main:
            for path in (self.output_dir / "epochs").glob("epoch-*.safetensors"):
                if int(path.stem.split("-")[1]) not in frontier:
                    path.unlink()

    def _candidate_path(self, epoch: int) -> Path:
        return self.output_dir / "epochs" / f"epoch-{epoch}.safetensors"

    def _candidate(self, epoch: int) -> dict[str, torch.Tensor]:
        if self.output_dir is None:
            return self._candidates[epoch]
        distributed.barrier(self.world)
        from safetensors.torch import load_file

        return load_file(str(self._candidate_path(epoch)))

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "settings": asdict(self.settings),
            "model": type(self.model).__name__,
        }
        if self.objective is not None:
            params["objective"] = [
                {
                    "kind": t.kind,
                    "focus": t.focus,
                    "base": t.base,
                    "boost": t.boost,
                    "weight": t.weight,
                    "mix": t.mix,
                    "options": {
                        k: v for k, v in t.options.items() if isinstance(v, (int, float, str, bool))
                    },
                }
                for t in self.objective.terms
            ]
        params["teacher"] = type(self.teacher).__name__ if self.teacher is not None else None
        params["train_size"] = len(self.train_data)
        return params


def _fresh_epoch() -> dict[str, Any]:
    """The running sums of an epoch not yet begun (kept in mid-epoch checkpoints)."""
    return {"batches_done": 0, "loss_sum": 0.0, "parts": {}, "samples": 0, "seconds": 0.0}


def fit(
    model: nn.Module,
    train_data: Dataset,
    validation_data: Dataset | None = None,
    **options: Any,
) -> FitResult:
    """Train ``model`` compatibly; the options are those of :class:`Trainer`."""
    return Trainer(model, train_data, validation_data, **options).fit()
