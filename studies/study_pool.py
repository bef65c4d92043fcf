"""Run ``studies/dsink_study.py`` over many (setting, seed) cells at once, one single-threaded process per cell,
and merge what finished into one results file (the format ``dsink_study.py --report`` reads).

Made for a machine with many cores (each cell is one setting and one seed, trained with OMP_NUM_THREADS=1 in its
own work folder), and for a time limit: no cell starts after ``--start-by`` seconds, cells still running at
``--stop-at`` seconds are stopped, and the merged file is rewritten after every finished cell, so that whatever
finished survives. Run again with the same ``--work``, it skips the cells that already hold every one of
``--variants`` (``--fresh`` reruns them). A setting is in the merged file with the seeds that finished (``seeds``
beside its rows).

Usage: python studies/study_pool.py --group random10 --variants default "f_L selected" "kd, f_L selected"
       --jobs 16 --work runs/pool --out studies/results/dsink_study_mlp_random.json [--first N] [--skip N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dsink_study import GROUP_SEEDS, GROUPS  # noqa: E402


def cells(names: list[str], seeds: list[int] | None) -> list[tuple[str, int]]:
    """(setting, seed) in the order they should run: setting by setting, so that whole settings finish first."""
    return [(n, s) for n in names for s in (seeds or GROUP_SEEDS.get(n) or [])]


def pending(todo: list[tuple[str, int]], parts: Path, variants: list[str]) -> list[tuple[str, int]]:
    """The cells of ``todo`` whose part file in ``parts`` is missing or lacks one of ``variants`` (a rerun resumes
    where the last one stopped, and a pass that adds variants to finished cells runs them)."""
    def done(name: str, seed: int) -> bool:
        part = parts / f"{name}-s{seed}.json"
        if not part.exists():
            return False
        rows = json.loads(part.read_text()).get("results", {})
        return bool(rows) and all(set(variants) <= set(r) for r in rows.values())
    return [(n, s) for n, s in todo if not done(n, s)]


def merge(parts: list[Path]) -> tuple[dict, dict]:
    """One results dict from per-cell files (``<setting>-s<seed>.json``; each row's per-seed records in seed order),
    and the seeds each setting holds."""
    out: dict = {}
    seeds: dict = {}
    for part in sorted(parts, key=lambda p: (p.stem.rsplit("-s", 1)[0], int(p.stem.rsplit("-s", 1)[1]))):
        seed = int(part.stem.rsplit("-s", 1)[1])
        for key, rows in json.loads(part.read_text())["results"].items():
            seeds.setdefault(key, []).append(seed)
            for label, recs in rows.items():
                out.setdefault(key, {}).setdefault(label, []).extend(recs)
    return out, seeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", default="random10", help=f"a settings group ({', '.join(GROUPS)}) or one setting name")
    ap.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="default: the group's own seeds (random10, random11)")
    ap.add_argument("--first", type=int, default=None, help="only the first N settings of the group")
    ap.add_argument("--skip", type=int, default=0, help="leave out the group's first N settings")
    ap.add_argument("--variants", nargs="+", default=["default"])
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to dsink_study.py (an override appended to the recipe's); repeatable")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", default="runs/pool")
    ap.add_argument("--out", required=True)
    ap.add_argument("--start-by", type=float, default=float("inf"), help="seconds after which no cell starts")
    ap.add_argument("--stop-at", type=float, default=float("inf"), help="seconds after which running cells stop")
    ap.add_argument("--fresh", action="store_true",
                    help="rerun the cells that already hold every one of --variants in --work (skipped by default)")
    args = ap.parse_args()
    names = GROUPS.get(args.group, [args.group])[args.skip:]
    todo = cells(names[: args.first] if args.first else names, args.seeds)
    if not todo:
        raise SystemExit(f"no cells: group {args.group!r} has no seeds of its own; pass --seeds")
    work, parts = Path(args.work), Path(args.work) / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    if not args.fresh:
        kept = len(todo)
        todo = pending(todo, parts, args.variants)
        if kept > len(todo):
            print(f"{kept - len(todo)} cells already hold {', '.join(args.variants)} in {parts}: skipped "
                  "(--fresh reruns them)", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0, running, done, failed, stopped, skipped = time.time(), {}, [], [], [], []
    out = Path(args.out)

    def write():
        out.parent.mkdir(parents=True, exist_ok=True)
        results, seeds = merge(list(parts.glob("*.json")))
        meta = {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(), "jobs": args.jobs,
                "finished": len(done), "failed": [f"{n} seed {s}" for n, s in failed],
                "stopped": [f"{n} seed {s}" for n, s in stopped], "not_started": [f"{n} seed {s}" for n, s in skipped],
                "seeds": seeds, "seconds": round(time.time() - t0)}
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))

    while todo or running:
        now = time.time() - t0
        while todo and len(running) < args.jobs and now < args.start_by:
            name, seed = todo.pop(0)
            tag = f"{name}-s{seed}"
            cmd = [sys.executable, str(HERE / "dsink_study.py"), "--settings", name, "--seeds", str(seed),
                   "--variants", *args.variants, *(x for e in args.extra for x in ("--set", e)), "--work", str(work / tag), "--out", str(parts / f"{tag}.json")]
            log = open(work / f"{tag}.log", "w")
            running[subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)] = (name, seed, log)
        if now >= args.start_by and todo:
            skipped.extend(todo)
            todo.clear()
        for proc in list(running):
            if proc.poll() is not None or now >= args.stop_at:
                killed = proc.poll() is None
                if killed:
                    proc.kill()
                    proc.wait()
                name, seed, log = running.pop(proc)
                log.close()
                (stopped if killed else done if proc.returncode == 0 else failed).append((name, seed))
                state = "stopped" if killed else "done" if proc.returncode == 0 else "FAILED"
                print(f"{now:6.0f} s  {name} seed {seed}: {state} "
                      f"({len(done)} done, {len(running)} running, {len(todo)} waiting)", flush=True)
                write()
        time.sleep(1.0)
    write()
    print(f"total {time.time() - t0:.0f} s; {len(done)} cells done, {len(failed)} failed, {len(stopped)} stopped, "
          f"{len(skipped)} not started; {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
