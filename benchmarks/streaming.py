"""Image-file input throughput (images/s) of dsink's two backends against torchvision, and the memory of training.

A folder of ``--n`` generated images (10 class subfolders; width and height uniform in ``--px``, default 48-160;
mostly RGB JPEG q90, 10% grey JPEGs, 10% PNGs) is made once under ``--dir`` (default $DSINK_CACHE/bench-streaming)
and reused.

Throughput: one pass over the folder in a random order, batch ``--batch-size``, each batch on ``--device`` and
through dsink's InputPipeline (random crop + flip, normalise), so device-side work is included. The first batch
(worker start-up) is timed apart and excluded.

* stream      - StreamInputs(ImageFiles(paths, size)): decoded per batch in DataLoader workers;
* memory      - decode_all once (the "decode into memory" column), then MemoryInputs index gathers;
* torchvision - ImageFolder + Resize/CenterCrop/PILToTensor + DataLoader(shuffle=True), same workers.

Memory: one epoch of real training (dsink.train.train_run, method ce) on subsets of the folder (``--mem-sizes``;
sub-folders of symlinks), each in a fresh subprocess, with data.stream true and false, with glibc's default
allocator and with a fixed mmap threshold (see ALLOCATORS), ``--mem-repeats`` times (smallest peak kept). Training
and evaluation batch: the largest <= --batch-size that the smaller size's validation split (10% of each class)
fills, so both sizes run full batches and activation memory does not pass for per-image growth. Reported: the
process's peak RSS, the DataLoader workers' (largest child's) peak RSS, the GPU's peak allocation (CUDA), and the
growth of the peaks per image between the smallest and largest size.

Usage: python benchmarks/streaming.py [--quick] [--n 20000] [--image-size 32] [--workers W] [--device auto]
       [--model small_cnn] [--mem-sizes 5000,20000] [--mem-repeats 2] [--px 48,160] [--dir DIR] [--json FILE]
GPU: python benchmarks/streaming.py --image-size 224 --model resnet50 --px 200,500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
CLASSES = 10


# ---------------------------------------------------------------- the image folder
def _make_image(i: int, seed: int, px: tuple[int, int], path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, i])
    w, h = (int(v) for v in rng.integers(px[0], px[1] + 1, 2))
    low = rng.integers(0, 256, (int(rng.integers(4, 13)), int(rng.integers(4, 13)), 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR)).copy()  # smooth noise: real JPEG work
    k, s = i % CLASSES, int(rng.integers(min(w, h) // 4, min(w, h) // 2 + 1))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    a[y : y + s, x : x + s] = (np.array([k * 25, 255 - k * 25, (k * 97) % 256]) + rng.integers(-20, 21, 3)).clip(0, 255)
    im = Image.fromarray(a)
    if path.suffix == ".png":
        im.save(path)
    else:
        (im.convert("L") if rng.random() < 0.1 else im).save(path, quality=90)


def image_folder(base: Path, n: int, seed: int, px: tuple[int, int], workers: int) -> Path:
    """``base/n{n}-px{lo}-{hi}-seed{seed}/all/c{k}/NNNNNN.{jpg,png}``, made once (image i depends on seed, px, i)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    root = base / f"n{n}-px{px[0]}-{px[1]}-seed{seed}" / "all"
    if (root / ".complete").exists():
        return root
    names = [root / f"c{i % CLASSES}" / f"{i:06d}.{'png' if i % 10 == 7 else 'jpg'}" for i in range(n)]  # 10% PNG
    for k in range(CLASSES):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while encoding
        list(tqdm(pool.map(lambda i: _make_image(i, seed, px, names[i]), range(n)), total=n, desc="images", unit="img"))
    (root / ".complete").touch()
    return root


def subset_folder(full: Path, m: int) -> Path:
    """A sibling folder of symlinks to the first ``m`` images (balanced over the classes)."""
    from dsink.data.images import image_files_under

    sub = full.parent / f"subset-{m}"
    if (sub / ".complete").exists():
        return sub
    paths = sorted(image_files_under(full), key=lambda p: Path(p).name)
    if m > len(paths):
        raise SystemExit(f"--mem-sizes {m} exceeds the {len(paths)} generated images; raise --n")
    for p in paths[:m]:
        link = sub / Path(p).parent.name / Path(p).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(p)
    (sub / ".complete").touch()
    return sub


# ---------------------------------------------------------------- throughput
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(batches, device: torch.device, size: int) -> dict:
    """Push every batch through the on-device pipeline; first batch timed apart."""
    from dsink.train.augment import InputPipeline

    pipe = InputPipeline("image", [0.5] * 3, [0.25] * 3, device, augment=True, hflip=True, channels_last=True)
    gen = torch.Generator().manual_seed(0)
    it = iter(batches)
    t0 = time.perf_counter()
    out = pipe(next(it).to(device, non_blocking=True), gen)
    _sync(device)
    t1 = time.perf_counter()
    n = 0
    for x in it:
        out = pipe(x.to(device, non_blocking=True), gen)
        n += len(x)
    _sync(device)
    t2 = time.perf_counter()
    assert out.shape[1:] == (3, size, size), out.shape
    return {"images": n, "seconds": t2 - t1, "images_per_s": n / (t2 - t1), "first_batch_s": t1 - t0}


def throughput(root: Path, args, device: torch.device) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from dsink.data.images import ImageFiles, scan_folder
    from dsink.data.loader import MemoryInputs, StreamInputs, decode_all

    paths, size, bs, w = scan_folder(root).paths, args.image_size, args.batch_size, args.workers
    chunks = list(torch.randperm(len(paths), generator=torch.Generator().manual_seed(0)).split(bs))
    rows = {"stream": timed_pass(StreamInputs(ImageFiles(paths, size), device, w).iterate(chunks), device, size)}
    t = time.perf_counter()
    x = decode_all(ImageFiles(paths, size), w)
    decode_s = time.perf_counter() - t
    rows["memory"] = timed_pass(MemoryInputs(x, device).iterate(chunks), device, size)
    rows["memory"]["decode_into_memory_s"] = decode_s
    del x
    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    loader = DataLoader(datasets.ImageFolder(str(root), transform=tf), batch_size=bs, shuffle=True, num_workers=w,
                        pin_memory=device.type == "cuda")
    rows["torchvision"] = timed_pass((xb for xb, _ in loader), device, size)
    return rows


# ---------------------------------------------------------------- memory of a training run
def _maxrss_bytes(who) -> int:
    r = resource.getrusage(who).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB, macOS bytes


def child(args) -> None:
    """One epoch of training on ``--child-root``; last stdout line: JSON of the peak memory."""
    from dsink.config import RunConfig
    from dsink.train.api import train_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig()
        d = cfg.data
        d.dataset, d.root, d.image_size = "image_folder", args.child_root, args.image_size
        d.stream = args.stream == "true"
        d.noise_mode, d.imbalance_ratio, d.workers, d.cache_dir = "none", 1.0, args.workers, str(Path(tmp) / "cache")
        cfg.model.name, cfg.method.name = args.model, "ce"
        cfg.optim.epochs, cfg.train.device = 1, args.device
        cfg.optim.batch_size = cfg.train.eval_batch_size = args.batch_size  # full batches at every size (memory())
        before = _maxrss_bytes(resource.RUSAGE_SELF)
        t = time.perf_counter()
        train_run(cfg, Path(tmp) / "run")
        out = {"seconds": time.perf_counter() - t, "rss_before_bytes": before,
               "peak_rss_bytes": _maxrss_bytes(resource.RUSAGE_SELF),
               "children_peak_rss_bytes": _maxrss_bytes(resource.RUSAGE_CHILDREN)}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


# glibc's default mmap threshold adapts (up to 32 MiB) once large blocks are freed, after which batch-sized
# buffers come from the heap and the peak RSS creeps up with the number of batches (~10-30 MiB per extra
# thousands of batches), which would pass for per-image growth; a fixed threshold returns them to the OS.
ALLOCATORS = {"default": {}, "fixed-mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def _train_child(root: Path, stream: bool, alloc: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--child-root", str(root), "--stream", str(stream).lower(),
           "--model", args.model, "--image-size", str(args.image_size), "--workers", str(args.workers),
           "--batch-size", str(args.mem_batch_size), "--device", args.device]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ALLOCATORS[alloc]})
    if p.returncode:
        raise SystemExit(f"training child failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def memory(full: Path, args) -> dict:
    """Training children for each allocator setting, backend and size, ``--mem-repeats`` times (interleaved);
    each peak is the smallest of its repeats (a one-off outlier is always upwards)."""
    val = CLASSES * (args.mem_sizes[0] // CLASSES // 10)  # validation images of the smaller size
    args.mem_batch_size = max(2, min(args.batch_size, val))
    cases = [(a, b, m) for a in ALLOCATORS for b in ("stream", "memory") for m in args.mem_sizes]
    res = {c: [] for c in cases}
    for _ in range(args.mem_repeats):
        for a, b, m in cases:
            res[a, b, m].append(_train_child(subset_folder(full, m), b == "stream", a, args))
    rows = []
    for (a, b, m), rs in res.items():
        row = {"malloc": a, "backend": b, "images": m, "seconds": float(np.median([r["seconds"] for r in rs])),
               "repeats": rs}
        for k in ("peak_rss_bytes", "children_peak_rss_bytes", "gpu_peak_bytes"):
            row[k] = min(r[k] for r in rs) if k in rs[0] else None
        rows.append(row)
    growth = []
    lo_m, hi_m = min(args.mem_sizes), max(args.mem_sizes)
    for a in ALLOCATORS:
        for b in ("stream", "memory"):
            dn = hi_m - lo_m
            if dn <= 0:
                continue
            lo, hi = (next(r for r in rows if (r["malloc"], r["backend"], r["images"]) == (a, b, m))
                      for m in (lo_m, hi_m))
            d, dc = (hi[k] - lo[k] for k in ("peak_rss_bytes", "children_peak_rss_bytes"))
            g = {"malloc": a, "backend": b, "from": lo_m, "to": hi_m, "growth_mb": d / 2**20, "bytes_per_image": d / dn,
                 "children_growth_mb": dc / 2**20, "children_bytes_per_image": dc / dn}
            if lo["gpu_peak_bytes"] is not None:
                g["gpu_bytes_per_image"] = (hi["gpu_peak_bytes"] - lo["gpu_peak_bytes"]) / dn
            growth.append(g)
    return {"batch_size": args.mem_batch_size, "allocators": ALLOCATORS, "runs": rows, "growth": growth}


# ---------------------------------------------------------------- report
def _mb(b) -> str:
    return "-" if b is None else f"{b / 2**20:.0f}"


def print_tables(tp: dict, mem: dict, args, n: int) -> None:
    print(f"\nThroughput: {n} images, {args.image_size} px, batch {args.batch_size}, {args.workers} workers, "
          f"device {args.device}\n")
    print("| backend | images/s | first batch, s | decode into memory, s |\n|---|---:|---:|---:|")
    for k, r in tp.items():
        dec = r.get("decode_into_memory_s")
        print(f"| {k} | {r['images_per_s']:.0f} | {r['first_batch_s']:.2f} | {'-' if dec is None else f'{dec:.2f}'} |")
    if not mem["runs"]:
        return
    print(f"\nTraining memory: one epoch, model {args.model}, {args.image_size} px, batch {args.mem_batch_size} "
          "(peaks, MiB)\n")
    print("| malloc | backend | images | peak RSS | workers' peak RSS | GPU peak | epoch + eval, s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in mem["runs"]:
        print(f"| {r['malloc']} | {r['backend']} | {r['images']} | {_mb(r['peak_rss_bytes'])} | "
              f"{_mb(r['children_peak_rss_bytes'])} | {_mb(r['gpu_peak_bytes'])} | {r['seconds']:.1f} |")
    print("\n| malloc | backend | images | peak RSS growth, MiB | bytes/image | workers' bytes/image "
          "| GPU bytes/image |")
    print("|---|---|---|---:|---:|---:|---:|")
    for g in mem["growth"]:
        gpu = g.get("gpu_bytes_per_image")
        print(f"| {g['malloc']} | {g['backend']} | {g['from']} -> {g['to']} | {g['growth_mb']:.1f} | "
              f"{g['bytes_per_image']:.0f} | {g['children_bytes_per_image']:.0f} | "
              f"{'-' if gpu is None else f'{gpu:.0f}'} |")
    print(f"\n(decoded uint8 image: 3*{args.image_size}^2 = {3 * args.image_size**2} bytes; fixed-mmap: "
          f"MALLOC_MMAP_THRESHOLD_={ALLOCATORS['fixed-mmap']['MALLOC_MMAP_THRESHOLD_']}, no allocator creep)")


def main():
    from dsink.data.images import default_workers
    from dsink.data.sources import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 600 images, memory at 200 and 600")
    ap.add_argument("--n", type=int, default=20000, help="images in the generated folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--px", default="48,160", help="generated width/height range (200,500 at 224)")
    ap.add_argument("--dir", default=None, help="where the folder is generated (default $DSINK_CACHE/bench-streaming)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default min(8, CPUs))")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    ap.add_argument("--model", default="small_cnn", help="model of the training-memory runs")
    ap.add_argument("--mem-sizes", default="5000,20000", help="dataset sizes of the training-memory runs")
    ap.add_argument("--mem-repeats", type=int, default=2, help="training runs per backend and size (min peak kept)")
    ap.add_argument("--skip-memory", action="store_true", help="throughput only")
    ap.add_argument("--json", default=None, help="default benchmarks/results/streaming[_quick].json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-root", help=argparse.SUPPRESS)
    ap.add_argument("--stream", choices=("true", "false"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.n, args.mem_sizes, args.mem_repeats = min(args.n, 600), "200,600", 1
    args.workers = default_workers(args.workers)
    args.px = tuple(int(v) for v in args.px.split(","))
    args.mem_sizes = sorted(int(s) for s in args.mem_sizes.split(","))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    base = Path(args.dir).expanduser().resolve() if args.dir else default_cache_dir() / "bench-streaming"
    full = image_folder(base, args.n, args.seed, args.px, args.workers)
    tp = throughput(full, args, device)
    mem = {"runs": [], "growth": []} if args.skip_memory else memory(full, args)
    print_tables(tp, mem, args, args.n)
    import torchvision

    meta = {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
            "folder": str(full)}
    settings = {k: v for k, v in vars(args).items() if not k.startswith("child") and k not in ("stream", "json")}
    out = Path(args.json) if args.json else RESULTS / ("streaming_quick.json" if args.quick else "streaming.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "settings": settings, "throughput": tp, "memory": mem}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
