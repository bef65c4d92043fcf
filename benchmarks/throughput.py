"""Training throughput (images/s) of dsink's engine against the bare loop and a conventional loop.

For each model/input pair three loops train the same network with SGD, batch 128:

* ceiling      - forward/backward/step on pre-staged, pre-normalised tensors (no augmentation);
* engine       - dsink's Trainer epoch: on-device uint8 gather, random crop + flip, normalise;
* conventional - torchvision Dataset + DataLoader + PIL transforms (RandomCrop(pad 4), flip,
                 ToTensor, Normalize), default memory layout, the better of 0 and 2 workers.

Ceiling and engine are measured alternately ``--repeats`` times and the medians are reported.
On ``--device cuda`` every loop trains on the GPU (``--amp``: bfloat16 autocast in all three, as the engine's
``train.amp``), times are taken after a device synchronisation, and ``--images`` sets the images per measurement
(GPUs need more than the CPU defaults to leave warm-up behind); ``--cases`` adds ``resnet50-224`` (3x224x224).
Usage: python benchmarks/throughput.py [--quick] [--repeats 3] [--device cpu] [--amp] [--images N]
       [--cases small_cnn,resnet32] [--workers 0,2] [--out benchmarks/results/throughput.json]
GPU:   python benchmarks/throughput.py --device cuda --amp --images 20000 --cases small_cnn,resnet32,resnet50-224
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


DEVICE, AMP = torch.device("cpu"), False  # set by main() from --device / --amp


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=AMP and DEVICE.type == "cuda")


def _cfg(model: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = model
    cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.schedule = 128, 1, "constant"
    cfg.train.device, cfg.train.amp = str(DEVICE), AMP
    return cfg


def ceiling(model_name, x, y, n_img, channels_last=True):
    torch.manual_seed(0)
    m = build_model(model_name, x.shape[1:], 10).to(DEVICE)
    xs = (torch.as_tensor(x[:n_img]).to(DEVICE).float() / 255 - 0.5) / 0.25
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    ys = torch.as_tensor(y[:n_img]).to(DEVICE)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(i):
        with _autocast():
            out = m(xs[i : i + 128])
            loss = F.cross_entropy(out.float(), ys[i : i + 128])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(0, 256 if DEVICE.type == "cpu" else 1280, 128):  # warm-up (cuDNN picks its kernels)
        step(i % max(128, n_img - 128))
    _sync()
    t0 = time.perf_counter()
    for i in range(0, n_img, 128):
        step(i)
    _sync()
    return n_img / (time.perf_counter() - t0)


def engine(model_name, x, y, n_img, tmp):
    w = 256 if DEVICE.type == "cpu" else 1280
    Trainer(_cfg(model_name), _bundle(x[:w], y[:w], model_name), tmp)._run_epoch(0)  # warm-up
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
    m = build_model(model_name, x.shape[1:], 10).to(DEVICE)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(DS(), batch_size=128, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=DEVICE.type == "cuda")

    def epoch():
        for xb, yb in loader:
            xb, yb = xb.to(DEVICE, non_blocking=True), yb.to(DEVICE, non_blocking=True)
            with _autocast():
                loss = F.cross_entropy(m(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    _sync()
    t0 = time.perf_counter()
    epoch()
    _sync()
    return n_img / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of ceiling and engine (median kept)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (all three loops train there)")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA in all three loops")
    ap.add_argument("--images", type=int, help="images per measurement (default 6144 / 1536 / 512 by model)")
    ap.add_argument("--cases", default="small_cnn,resnet32", help="of small_cnn, resnet32, resnet50-224")
    ap.add_argument("--workers", default="0,2", help="DataLoader workers tried for the conventional loop (best kept)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = ap.parse_args()
    import tempfile

    from dsink.data import load_fashion_mnist

    global DEVICE, AMP
    DEVICE, AMP = torch.device(args.device), args.amp
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    wanted = args.cases.split(",")
    unknown = set(wanted) - {"small_cnn", "resnet32", "resnet50-224"}
    if unknown:
        raise SystemExit(f"unknown --cases {sorted(unknown)}; choose from small_cnn, resnet32, resnet50-224")
    cases = []
    if "small_cnn" in wanted:
        fm = load_fashion_mnist()
        cases.append(("small_cnn", "fashion_mnist 1x28x28", fm.train_x, fm.train_labels,
                      args.images or (2048 if args.quick else 6144)))
    if "resnet32" in wanted:
        n = args.images or (512 if args.quick else 1536)
        cases.append(("resnet32", "cifar-shaped 3x32x32", rng.integers(0, 256, size=(max(n, 4096), 3, 32, 32),
                      dtype=np.uint8), rng.integers(0, 10, max(n, 4096)), n))
    if "resnet50-224" in wanted:
        n = min(args.images or 512, 4096)  # 4096 images of 3x224x224 uint8: 0.6 GB
        cases.append(("resnet50", "imagenet-shaped 3x224x224", rng.integers(0, 256, size=(max(n, 1280), 3, 224, 224),
                      dtype=np.uint8), rng.integers(0, 10, max(n, 1280)), n))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, data_name, x, y, n in cases:
            # The machine is noisy: interleave repeats of the two fast loops and keep the medians.
            ceils, engs = [], []
            for _ in range(args.repeats):
                ceils.append(ceiling(model, x, y, n))
                engs.append(engine(model, x, y, n, tmp))
            ceil, eng = float(np.median(ceils)), float(np.median(engs))
            conv = {w: conventional(model, x, y, n, w) for w in map(int, args.workers.split(","))}
            best_w = max(conv, key=conv.get)
            rows.append({"model": model, "data": data_name, "images": n, "ceiling": ceil, "engine": eng,
                         "conventional": conv[best_w], "conventional_workers": best_w,
                         "engine_vs_ceiling": eng / ceil, "engine_vs_conventional": eng / conv[best_w]})
            print(json.dumps(rows[-1]), flush=True)
    print(f"{'model':<11}{'data':<24}{'ceiling':>9}{'engine':>9}{'conv.':>9}{'eng/ceil':>10}{'eng/conv':>10}")
    for r in rows:
        print(f"{r['model']:<11}{r['data']:<24}{r['ceiling']:>9.0f}{r['engine']:>9.0f}{r['conventional']:>9.0f}"
              f"{r['engine_vs_ceiling']:>10.2f}{r['engine_vs_conventional']:>10.2f}")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(), "device": str(DEVICE), "amp": AMP,
            "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
            "command": "python benchmarks/throughput.py " + " ".join(__import__("sys").argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
