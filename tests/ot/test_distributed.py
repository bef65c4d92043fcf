"""Sharded solves (Sinkhorn and Newton) across 2 gloo processes give the single-process surrogate labels."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dsink import distributed, surrogate_labels


def _problem():
    rng = np.random.default_rng(42)
    n, c = 501, 6  # odd N: unequal shards
    return rng.dirichlet(np.ones(c) * 0.4, n), rng.dirichlet(np.ones(c), n), rng.dirichlet(np.ones(c) * 0.4, n)


def _worker(rank, world, init_file, out_dir, class_totals, solver):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pn, pl, pf = _problem()
        shard = np.array_split(np.arange(len(pn)), world)[rank]
        q, res = surrogate_labels(pn[shard], pl[shard], pf[shard], tol=1e-10, max_iter=5000,
                                  class_totals=class_totals, return_result=True, solver=solver)
        np.save(f"{out_dir}/q{rank}.npy", q)
        np.save(f"{out_dir}/it{rank}.npy", np.array([res.iterations, res.marginal_error]))
        top = distributed.all_reduce(torch.tensor([float(rank), 1.0]), "max")  # the solver's collectives
        total = distributed.all_reduce(torch.tensor([float(rank), 1.0]))
        np.save(f"{out_dir}/coll{rank}.npy", np.array([distributed.world_size(), *top.tolist(), *total.tolist()]))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("solver", ["sinkhorn", "newton"])
def test_two_gloo_processes_match_one_process(tmp_path, solver):
    pn, pl, pf = _problem()
    for totals in ("soft", "argmax"):
        out = tmp_path / totals
        out.mkdir()
        ref, res = surrogate_labels(pn, pl, pf, tol=1e-10, max_iter=5000, class_totals=totals, return_result=True,
                                    solver=solver)
        mp.spawn(_worker, args=(2, str(tmp_path / f"init-{totals}"), str(out), totals, solver), nprocs=2, join=True)
        q = np.concatenate([np.load(out / "q0.npy"), np.load(out / "q1.npy")])
        assert q.shape == ref.shape
        assert np.abs(q - ref).max() < 1e-9
        it0, it1 = np.load(out / "it0.npy"), np.load(out / "it1.npy")
        assert it0[0] == it1[0] == res.iterations  # the processes stop together, like one process
        assert abs(it0[1] - res.marginal_error) < 1e-12
        for r in range(2):
            assert np.load(out / f"coll{r}.npy").tolist() == [2, 1, 1, 1, 2]  # world; max of (rank, 1); sum
    assert not dist.is_initialized() and torch.get_num_threads() >= 1
