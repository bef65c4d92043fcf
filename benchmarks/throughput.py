"""Training throughput (images/s) of dsink's engine against the bare loop and a conventional loop.

For each model/input pair three loops train the same network with SGD, batch 128:

* ceiling      - forward/backward/step on pre-staged, pre-normalised tensors (no augmentation);
* engine       - dsink's Trainer epoch: on-device uint8 gather, random crop + flip, normalise;
* conventional - torchvision Dataset + DataLoader + PIL transforms (RandomCrop(pad 4), flip,
                 ToTensor, Normalize), default memory layout, the better of 0 and 2 workers.

Ceiling and engine are measured alternately ``--repeats`` times and the medians are reported.
Usage: python benchmarks/throughput.py [--quick] [--repeats 3] [--out benchmarks/results/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dsink.config import RunConfig
from dsink.data import DataBundle
from dsink.models import build_model
from dsink.train import Trainer


def _bundle(x: np.ndarray, y: np.ndarray, name: str) -> DataBundle:
    c = x.shape[1]
    return DataBundle(name, "image", 10, [str(i) for i in range(10)], x, y, y, np.arange(len(y)),
                      x[:0], y[:0], None, x[:256], y[:256], mean=[0.5] * c, std=[0.25] * c, fingerprint="bench")


def _cfg(model: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = model
    cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.schedule = 128, 1, "constant"
    cfg.train.device = "cpu"
    return cfg


def ceiling(model_name, x, y, n_img, channels_last=True):
    torch.manual_seed(0)
    m = build_model(model_name, x.shape[1:], 10)
    xs = (torch.as_tensor(x[:n_img]).float() / 255 - 0.5) / 0.25
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    ys = torch.as_tensor(y[:n_img])
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(i):
        out = m(xs[i : i + 128])
        loss = F.cross_entropy(out, ys[i : i + 128])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(0, 256, 128):  # warm-up
        step(i)
    t0 = time.perf_counter()
    for i in range(0, n_img, 128):
        step(i)
    return n_img / (time.perf_counter() - t0)


def engine(model_name, x, y, n_img, tmp):
    Trainer(_cfg(model_name), _bundle(x[:256], y[:256], model_name), tmp)._run_epoch(0)  # warm-up
    tr = Trainer(_cfg(model_name), _bundle(x[:n_img], y[:n_img], model_name), tmp)
    return tr._run_epoch(0)["images_per_s"]


def conventional(model_name, x, y, n_img, workers):
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    c = x.shape[1]
    tf = transforms.Compose([
        transforms.RandomCrop(x.shape[2], padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.5] * c, [0.25] * c),
    ])
    imgs = x[:n_img].transpose(0, 2, 3, 1)
    imgs = imgs[..., 0] if c == 1 else imgs

    class DS(Dataset):
        def __len__(self):
            return len(imgs)

        def __getitem__(self, i):
            return tf(Image.fromarray(imgs[i])), int(y[i])

    torch.manual_seed(0)
    m = build_model(model_name, x.shape[1:], 10)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(DS(), batch_size=128, shuffle=True, num_workers=workers, persistent_workers=workers > 0)

    def epoch():
        for xb, yb in loader:
            loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t0 = time.perf_counter()
    epoch()
    return n_img / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of ceiling and engine (median kept)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = ap.parse_args()
    import tempfile

    from dsink.data import load_fashion_mnist

    fm = load_fashion_mnist()
    rng = np.random.default_rng(0)
    cifar_x = rng.integers(0, 256, size=(4096, 3, 32, 32), dtype=np.uint8)
    cases = [("small_cnn", "fashion_mnist 1x28x28", fm.train_x, fm.train_labels, 2048 if args.quick else 6144),
             ("resnet32", "cifar-shaped 3x32x32", cifar_x, rng.integers(0, 10, 4096), 512 if args.quick else 1536)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, data_name, x, y, n in cases:
            # The machine is noisy: interleave repeats of the two fast loops and keep the medians.
            ceils, engs = [], []
            for _ in range(args.repeats):
                ceils.append(ceiling(model, x, y, n))
                engs.append(engine(model, x, y, n, tmp))
            ceil, eng = float(np.median(ceils)), float(np.median(engs))
            conv = {w: conventional(model, x, y, n, w) for w in (0, 2)}
            best_w = max(conv, key=conv.get)
            rows.append({"model": model, "data": data_name, "images": n, "ceiling": ceil, "engine": eng,
                         "conventional": conv[best_w], "conventional_workers": best_w,
                         "engine_vs_ceiling": eng / ceil, "engine_vs_conventional": eng / conv[best_w]})
    print(f"{'model':<11}{'data':<24}{'ceiling':>9}{'engine':>9}{'conv.':>9}{'eng/ceil':>10}{'eng/conv':>10}")
    for r in rows:
        print(f"{r['model']:<11}{r['data']:<24}{r['ceiling']:>9.0f}{r['engine']:>9.0f}{r['conventional']:>9.0f}"
              f"{r['engine_vs_ceiling']:>10.2f}{r['engine_vs_conventional']:>10.2f}")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(), "command": "python benchmarks/throughput.py" + (" --quick" if args.quick else "")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
