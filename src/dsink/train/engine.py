"""The one training loop. Methods plug in through :mod:`dsink.methods`; nobody writes a second loop.

Each split's raw inputs (uint8 images or float features) come from :mod:`dsink.data.loader`: held as one
tensor on the training device and gathered by index (the fast path, no per-sample Python), or streamed
per batch from DataLoader workers (image files larger than memory). Either way batches are augmented on
the device (:mod:`.augment`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import distributed
from ..config import RunConfig
from ..data import DataBundle
from ..data.loader import Inputs, choose_backend, make_inputs
from ..errors import InputError, TrainingError
from ..methods import MethodContext, build_method
from ..models import IMAGENET_MEAN, IMAGENET_STD, build_model, has_backbone
from ..runs import RunDir
from ..runs.checkpoint import restoring
from .augment import InputPipeline
from .optim import get_optimizer
from .schedule import lr_at
from .tensorboard import epoch_logger

log = logging.getLogger(__name__)
# progress where stderr is no terminal (a log file, a pipe): one plain line per epoch instead of progress bars,
# whose carriage-return redraws fill such logs; the CLI shows this logger's INFO lines, library users opt in
progress_log = logging.getLogger("dsink.progress")


def progress_bars() -> bool:
    """Progress bars only on a terminal or in a notebook (tqdm.auto draws a widget there); elsewhere progress is
    one line per epoch on :data:`progress_log`."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


# the metric whose best epoch is kept as checkpoints/best.pt ("top-1 @best val"): the class-balanced accuracy on
# the noisy validation labels, which ranks checkpoints closer to the balanced test accuracy than plain noisy
# accuracy (studies/selection.py)
SELECTION_RULE = "val_bal_acc"

def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"train.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"train.device {name!r} asked for CUDA but none is available; use train.device=cpu")
    return dev


def _numpy(a) -> np.ndarray:
    """A tensor (any device) or array as a NumPy array."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _tensor(a: np.ndarray | None, device, dtype=None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device)


SPLITS = ("train", "val", "test")


# metrics-row fields that measure time: they differ between otherwise identical runs
TIMING_KEYS = ("time_s", "images_per_s", "epoch_start_s")

class Trainer:
    """Trains a method's networks on a :class:`~dsink.data.DataBundle` and writes a run directory.

    Parameters
    ----------
    cfg : RunConfig
    data : DataBundle
    run_dir : path or RunDir
        The run directory its metrics rows and checkpoints are written to.
    progress : bool
        Show a progress bar per epoch (the CLI turns it on).
    inputs : dict, optional
        The inputs the method declares (:class:`MethodContext` fields, resolved by
        :func:`dsink.train.inputs.method_inputs`).
    """

    def __init__(self, cfg: RunConfig, data: DataBundle, run_dir: str | Path | RunDir, *, progress: bool = False,
                 inputs: dict[str, Any] | None = None):
        self.cfg, self.data, self.run = cfg, data, RunDir(run_dir)
        self.run_dir = self.run.path
        self.eval_batch_size = cfg.train.eval_batch_size
        self.dist = distributed.current()
        self.progress = progress and self.dist.is_main
        self.bars = self.progress and progress_bars()  # else one progress_log line per epoch
        self.device = resolve_device(cfg.train.device)
        if self.dist.active and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
        if len(data.train_y) == 0:
            raise InputError("the training split is empty; lower data.val_fraction or check the data")
        ctx = MethodContext(
            num_classes=data.num_classes, class_counts=np.bincount(data.train_y, minlength=data.num_classes),
            num_train=len(data.train_y), epochs=cfg.optim.epochs, device=self.device, noise_rate=cfg.data.noise_rate,
            fingerprint=data.fingerprint, seed=cfg.train.seed, labels=data.train_y, **(inputs or {}),
        )
        self.method = build_method(cfg.method, ctx)
        self.models = self._build_models()
        mean, std = data.mean, data.std
        pretrained = cfg.model.pretrained is not None and any(has_backbone(m) for m in self.models.values())
        if pretrained and data.kind == "image":  # a pretrained backbone expects ImageNet's normalisation
            c = data.input_shape[0]
            mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if c == 3 else ([0.449] * c, [0.226] * c)
        self.pipeline = InputPipeline(
            data.kind, mean, std, self.device, augment=cfg.train.augment,
            hflip=cfg.train.hflip, channels_last=cfg.train.channels_last,
        )
        # the raw inputs of each split (dsink.data.loader): in device memory or streamed from files
        self.backend = choose_backend([data.train_x, data.val_x, data.test_x], cfg.data.stream)
        self.inputs: dict[str, Inputs] = {s: make_inputs(getattr(data, f"{s}_x"), self.device, self.backend,
                                                         cfg.data.workers) for s in SPLITS}
        log.info("inputs: %s backend", self.backend)
        self.train_y = _tensor(data.train_y, self.device, torch.long)
        self.train_y_cpu = torch.as_tensor(data.train_y, dtype=torch.long)
        # each training sample's predicted class in its latest training step (-1: not yet seen), for the
        # share of predictions that change from one epoch to the next (``train_pred_changes``, as Label Wave)
        self.last_pred = torch.full((len(self.train_y),), -1, dtype=torch.long, device=self.device)
        self.val_y = _tensor(data.val_y, self.device, torch.long)
        self.test_y = _tensor(data.test_y, self.device, torch.long)
        self.train_models = self._wrap_ddp()
        self.optimizer = self._build_optimizer()
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.epoch = 0  # completed epochs
        # the selected checkpoint (best.pt): best class-balanced accuracy on the noisy validation labels
        # (SELECTION_RULE; docs/research/measurements.md, selection)
        self.best: dict[str, Any] = {SELECTION_RULE: -1.0, "epoch": 0}

    # ------------------------------------------------------------------ construction
    def _build_models(self) -> dict[str, nn.Module]:
        cfg = self.cfg

        def make():
            m = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes, cfg.model.width,
                            pretrained=cfg.model.pretrained, freeze_backbone=cfg.model.freeze_backbone)
            m = m.to(self.device)
            if cfg.train.channels_last and self.data.kind == "image":
                m = m.to(memory_format=torch.channels_last)
            return m

        # Seeded initialisation without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            return self.method.build_models(make)

    def _wrap_ddp(self) -> dict[str, nn.Module]:
        """DistributedDataParallel replicas for training under torchrun; the bare networks otherwise."""
        if not self.dist.active:
            return self.models
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return {k: DDP(m, device_ids=ids) if any(p.requires_grad for p in m.parameters()) else m
                for k, m in self.models.items()}

    def parameters(self):
        """All trainable parameters of all the method's networks."""
        return [p for m in self.models.values() for p in m.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: a pretrained backbone's parameters learn at ``optim.lr *
        model.backbone_lr_scale`` (group key ``lr_scale``), everything else at ``optim.lr``; both times the
        method's ``lr_scale`` (1 unless it starts from trained weights and asks for less)."""
        scale = self.cfg.model.backbone_lr_scale if self.cfg.model.pretrained is not None else 1.0
        slow = {id(p) for m in self.models.values() if has_backbone(m) for p in m.backbone.parameters()}
        params = self.parameters()
        method = self.method.lr_scale  # a method started from trained weights (D-SINK's init_lr)
        groups = [{"params": [p for p in params if id(p) not in slow], "lr_scale": method},
                  {"params": [p for p in params if id(p) in slow], "lr_scale": scale * method}]
        return [g for g in groups if g["params"]]

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        factory = get_optimizer(o.optimizer)  # the optimiser registry (dsink.train.optim)
        return factory(self.param_groups(), o)  # values were checked by the resolver (dsink.resolve.check_values)

    def autocast(self):
        """bfloat16 autocast on CUDA when ``train.amp``; a no-op elsewhere."""
        if self.cfg.train.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ prediction
    def batches(self, split: str, rows: torch.Tensor | None = None,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(row indices, raw inputs)`` on the device, ``batch_size`` (default ``train.eval_batch_size``) rows at a
        time, of a split's ``rows`` (default: all, in order), read from the split's backend."""
        inputs = self.inputs[split]
        if rows is None:
            rows = torch.arange(len(inputs), device=self.device)
        chunks = [c for c in rows.to(self.device).split(batch_size or self.eval_batch_size) if len(c)]
        for idx, raw in zip(chunks, inputs.iterate(chunks)):
            yield idx, raw

    @torch.inference_mode()
    def predict_logits(self, split: str = "test", rows: torch.Tensor | None = None, *,
                       progress: str | None = None) -> torch.Tensor:
        """Logits (float32, on the training device) of the method's prediction for a split (or its ``rows``),
        without augmentation; ``progress``: the label of a progress bar (none by default)."""
        for m in self.models.values():
            m.eval()
        out = []
        n = len(self.inputs[split]) if rows is None else len(rows)
        bar = tqdm(total=n, desc=progress, unit="img", disable=progress is None or not progress_bars(), leave=False,
                   dynamic_ncols=True)
        try:
            with self.autocast():
                for idx, raw in self.batches(split, rows):
                    bar.update(len(idx))
                    out.append(self.method.predict_logits(self.models, self.pipeline(raw)).float())
        finally:
            bar.close()
            for m in self.models.values():
                m.train()
        if not out:
            return torch.zeros(0, self.data.num_classes, device=self.device)
        return torch.cat(out)

    def predict_probs(self, split: str = "test") -> torch.Tensor:
        """Softmax of :meth:`predict_logits`."""
        return self.predict_logits(split).softmax(1)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (CPU) from the end of ``self.epoch``."""
        return {
            "epoch": self.epoch,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "method": self.method.state_dict(),
            "best": dict(self.best),
            "last_pred": self.last_pred,
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.data.fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (checks it belongs to the same data)."""
        if state.get("data_fingerprint") != self.data.fingerprint:
            raise InputError(
                "the checkpoint was made on different data (other subsample, noise or seed); "
                "use the run's own config or retrain with --force"
            )
        for k, m in self.models.items():
            m.load_state_dict(state["models"][k])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.method.load_state_dict(state.get("method", {}))
            self.best = dict(state.get("best", self.best))
            if state.get("last_pred") is not None and len(state["last_pred"]) == len(self.last_pred):
                self.last_pred = state["last_pred"].to(self.device)
        self.epoch = int(state["epoch"])

    def load_weights(self, which: str = "last") -> int:
        """Load only the network weights of the run's ``last`` or ``best`` checkpoint; returns its epoch."""
        state = self.run.load_checkpoint(which, map_location=self.device)
        if state.get("data_fingerprint") != self.data.fingerprint:
            raise InputError(f"checkpoint {str(self.run.checkpoint_path(which))!r} was made on different data; "
                             "re-run training for this config")
        with restoring(self.run.checkpoint_path(which)):
            for k, m in self.models.items():
                m.load_state_dict(state["models"][k])
        return int(state["epoch"])

    # ------------------------------------------------------------------ training
    def _run_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg.optim
        n = len(self.train_y)
        bs = min(cfg.batch_size, n)
        order = self.method.sample_indices(epoch, self.train_y_cpu, self.gen)
        perm = (torch.randperm(n, generator=self.gen) if order is None else order).to(self.device)
        if self.dist.active:  # every process draws the same order and takes its shard of it
            w = self.dist.world
            perm = perm[: (n // w) * w][self.dist.rank :: w]
            n, bs = len(perm), max(1, bs // w)
        views = self.method.views
        iters = n // bs if n % bs == 1 else math.ceil(n / bs)  # never a batch of one (BatchNorm)
        chunks = [perm[it * bs : (it + 1) * bs] for it in range(iters)]
        raws = self.inputs["train"].iterate(chunks)
        sums: dict[str, torch.Tensor] = {}
        acc_keys: tuple[str, ...] = ()  # the step's scalars, summed (times the batch size) into acc
        acc: torch.Tensor | None = None
        correct = torch.zeros((), device=self.device)
        fresh = torch.zeros_like(self.last_pred)  # this epoch's predictions + 1 (0: not seen by this process)
        bar = tqdm(range(iters), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not self.bars,
                   unit="batch", dynamic_ncols=True)
        t0 = time.perf_counter()
        for it in bar:
            lr = lr_at(cfg, epoch + it / iters)
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            idx, raw = chunks[it], next(raws)
            x = self.pipeline(raw, self.gen) if views == 1 else [self.pipeline(raw, self.gen) for _ in range(views)]
            y = self.train_y[idx]
            with self.autocast():
                out = self.method.training_step(self.train_models, x, y, idx, epoch)
            loss = out["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # a method's scalars are summed as one vector: one stack, multiply and add per step whatever their
            # number, where a multiply and an add per scalar per step cost a distillation (3 scalars) ~25 us more
            # than CE (1) on the CPU. Elementwise the same operations in the same order: bit-identical sums.
            step_keys = tuple(k for k, v in out.items() if k != "logits" and torch.is_tensor(v) and v.dim() == 0)
            if step_keys:
                vals = (out[step_keys[0]].detach().float() if len(step_keys) == 1
                        else torch.stack([out[k].detach().float() for k in step_keys])) * len(idx)
                if step_keys != acc_keys:  # the first step (or a method whose scalars change): restart the vector
                    for k, v in zip(acc_keys, acc.reshape(-1) if acc is not None else ()):
                        sums[k] = sums.get(k, 0) + v
                    acc_keys, acc = step_keys, vals
                else:
                    acc += vals
            if "logits" in out:
                pred = out["logits"].detach().argmax(1)
                correct += (pred == y).sum()
                fresh[idx] = pred + 1
        for k, v in zip(acc_keys, acc.reshape(-1) if acc is not None else ()):
            sums[k] = sums.get(k, 0) + v
        seen = min(iters * bs, n)
        if self.dist.active:  # metrics over all processes' samples
            keys = sorted(sums)
            t = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32, device=self.device) for k in keys]
                            + [correct.float(), torch.tensor(float(seen), device=self.device)])
            distributed.all_reduce_sum(t)
            sums, correct, seen = dict(zip(keys, t[: len(keys)])), t[len(keys)], int(t[-1])
            distributed.all_reduce_sum(fresh)  # each sample was trained on by one process at most
        compared = (fresh > 0) & (self.last_pred >= 0)  # seen now and in an earlier epoch
        changed = int((compared & (fresh - 1 != self.last_pred)).sum())
        compared = int(compared.sum())
        self.last_pred = torch.where(fresh > 0, fresh - 1, self.last_pred)
        row = {k: float(v) / seen for k, v in sums.items()}
        if not all(math.isfinite(v) for v in row.values()):
            bad = {k: v for k, v in row.items() if not math.isfinite(v)}
            raise TrainingError(
                f"non-finite training values {bad} in epoch {epoch + 1}; the run stopped and its last "
                f"checkpoint (epoch {self.epoch}) is intact. Lower optim.lr or check the inputs."
            )
        row["train_acc_noisy"] = float(correct) / seen
        if compared:
            row["train_pred_changes"] = changed / compared
        row["lr"] = lr_at(cfg, epoch)
        row["images_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
        return row

    def _val_metrics(self) -> dict[str, float]:
        if len(self.val_y) == 0:
            return {}
        pred = self.predict_logits("val").argmax(1)
        out = {"val_acc": float((pred == self.val_y).float().mean())}
        # class-balanced accuracy on the noisy validation labels (mean recall over the labels present)
        c = self.data.num_classes
        hit = torch.bincount(self.val_y[pred == self.val_y], minlength=c).float()
        n = torch.bincount(self.val_y, minlength=c).float()
        out["val_bal_acc"] = float((hit[n > 0] / n[n > 0]).mean())
        if self.data.val_true is not None:
            true = torch.as_tensor(self.data.val_true, device=self.device)
            out["val_acc_true"] = float((pred == true).float().mean())
        return out

    def training_label_predictions(self, log_scores) -> np.ndarray:
        """The method's predicted labels for the training samples from its logits or log-probabilities (numpy
        or torch): the argmax after adding the method's :meth:`~dsink.methods.Method.label_log_prior`."""
        s = torch.as_tensor(log_scores, device=self.device).float()
        prior = self.method.label_log_prior()
        if prior is not None:
            s = s + prior.to(s.device)
        return s.argmax(1).cpu().numpy()

    def _correction_metrics(self) -> dict[str, float]:
        """Share of noisy-labelled training samples predicted as their true label, and training accuracy on the true labels."""
        pred = self.training_label_predictions(self.predict_logits("train"))
        true, given = self.data.train_true, self.data.train_y
        noisy = given != true
        return {"train_correction": float((pred[noisy] == true[noisy]).mean()) if noisy.any() else None,
                "train_acc_true": float((pred == true).mean())}

    def _epoch_line(self, row: dict[str, Any]) -> str:
        """One plain progress line: the run, the epoch, its loss and validation accuracy, its time."""
        parts = [f"{k} {row[k]:.4f}" for k in ("loss", "train_acc_noisy", "val_acc") if isinstance(row.get(k), float)]
        return (f"{self.run.name}: epoch {self.epoch}/{self.cfg.optim.epochs}: " + ", ".join(parts)
                + f", {row['time_s']:.1f} s")

    def fit(self, *, resume: bool = False, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train to ``optim.epochs`` (or stop after ``stop_after`` epochs in total); returns the metrics rows.

        With ``resume``, continue from the run's last checkpoint and drop metrics rows written after it.
        """
        run = self.run
        if self.dist.is_main:  # a process killed while writing leaves a temporary file: drop it
            for p in run.remove_stale_temporaries():
                log.info("removed %s left by an interrupted write", p)
        if resume and run.has_checkpoint("last"):
            state = run.load_checkpoint("last", map_location=self.device)
            with restoring(run.checkpoint_path("last")):
                self.load_state_dict(state)
            log.info("resuming %s after epoch %d", run, self.epoch)
        main = self.dist.is_main
        rows = run.read_metrics(upto=self.epoch)
        if main:
            run.write_metrics(rows)
        end = self.cfg.optim.epochs if stop_after is None else min(stop_after, self.cfg.optim.epochs)
        board = epoch_logger(self.cfg.train.tensorboard, run.name, self.epoch + 1) if main else None
        for epoch in range(self.epoch, end):
            t0 = time.perf_counter()
            extra = self.method.on_epoch_start(epoch, self)
            start_s = time.perf_counter() - t0  # the method's epoch-start work (D-SINK: the refresh of Q)
            train_row = self._run_epoch(epoch)
            self.method.on_epoch_end(epoch, self)
            row = {"epoch": epoch + 1, **train_row, **extra, **self._val_metrics()}
            every = self.cfg.train.eval_test_every
            if every and (epoch + 1) % every == 0 and len(self.test_y):
                row["test_acc"] = float((self.predict_logits("test").argmax(1) == self.test_y).float().mean())
            if self.cfg.train.track_correction and self.data.train_true is not None:
                row.update(self._correction_metrics())
            row["time_s"] = time.perf_counter() - t0
            row["epoch_start_s"] = start_s
            self.epoch = epoch + 1
            improved = SELECTION_RULE in row and row[SELECTION_RULE] > self.best.get(SELECTION_RULE, -1.0)
            if improved:
                self.best = {SELECTION_RULE: row[SELECTION_RULE], "epoch": self.epoch}
            rows.append(row)
            if main:
                run.append_metrics(row)
                if board is not None:
                    board.log(row)
                state = self.state_dict()
                if improved:
                    run.save_checkpoint({k: state[k] for k in ("epoch", "models", "config", "data_fingerprint")}, "best")
                run.save_checkpoint(state, "last")
                selection = self.method.sample_selection()
                if selection is not None:
                    run.write_selection({k: _numpy(v) for k, v in selection.items()})
            distributed.barrier()
            log.info("epoch %d: %s", self.epoch, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
            if self.progress and not self.bars:
                progress_log.info("%s", self._epoch_line(row))
        if board is not None:
            board.close()
        return rows

