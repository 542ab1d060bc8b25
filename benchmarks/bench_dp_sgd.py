"""DP-SGD step cost on recommenders, side by side in one process run.

For MF and NCF at 1k, 10k and 100k items (batch 256, dim 32, 1000 users) it
times one training step of:

* ``nonprivate``   -- loss, backward, SGD step;
* ``opacus_hooks`` -- real Opacus ``make_private(grad_sample_mode="hooks")``,
  its own step (clip, torch-generator noise, step); skipped where its dense
  ``B x vocab x dim`` per-sample gradients would exceed ``--hooks-limit-gb``;
* ``opacus_ghost`` -- real Opacus ghost clipping, used natively (criterion
  with per-example losses, two backward passes, its own noise, step);
* ``fedsecure_fast`` -- :class:`fedsecure.dp.clipping.PerSampleClipper`, dense
  noise on every parameter from the OS-keyed :class:`NoiseSource`, SGD step;
* ``fedsecure_fast_clip_only`` and ``noise_source_draw`` -- the two parts of
  the fedsecure step, so the clipping cost can be compared without the noise.

Models use ``l2=0`` so that the models' batch-mean loss equals the mean of
the criterion's per-example losses that Opacus ghost mode needs. Peak memory
is the peak RSS increase over the RSS before the mode ran (sampled every ms).
Usage: ``python benchmarks/bench_dp_sgd.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cryptography
import numpy as np
import opacus
import torch
from torch import nn

from fedsecure.dp.clipping import PerSampleClipper
from fedsecure.dp.noise import NoiseSource
from fedsecure.recsys.models import MatrixFactorization, NeuralCF

BATCH, DIM, USERS = 256, 32, 1000
Z, CLIP, LR = 1.0, 1.0, 0.05


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the starting point while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def build(kind: str, items: int, seed: int = 0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, USERS, (BATCH,), generator=gen)
    its = torch.randint(0, items, (BATCH,), generator=gen)
    if kind == "mf":
        model = MatrixFactorization(USERS, items, dim=DIM, l2=0.0)
        batch = {"users": users, "items": its, "ratings": 5 * torch.rand(BATCH, generator=gen)}
        return model, batch, nn.MSELoss(), lambda m, b: m(b["users"], b["items"])[0], "ratings"
    model = NeuralCF(USERS, items, dim=DIM, l2=0.0)
    batch = {"users": users, "items": its, "labels": torch.randint(0, 2, (BATCH,), generator=gen).float()}
    return model, batch, nn.BCEWithLogitsLoss(), lambda m, b: m.logits(b["users"], b["items"])[0], "labels"


def time_steps(step: Callable[[], None], reps: int) -> tuple[list[float], float]:
    times = []
    with PeakRSS() as mem:  # the warm-up step included: it allocates what later steps reuse
        step()
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return times, mem.mib


def modes(kind: str, items: int, hooks_limit_gb: float, noise: NoiseSource):
    """(name, make_step) pairs; make_step builds a fresh model and returns its step, or a skip reason."""

    def nonprivate():
        model, batch, *_ = build(kind, items)
        opt = torch.optim.SGD(model.parameters(), lr=LR)

        def step():
            opt.zero_grad(set_to_none=True)
            model.loss(batch).backward()
            opt.step()
        return step

    def opacus_mode(mode: str):
        def make():
            from opacus import PrivacyEngine
            from torch.utils.data import DataLoader, TensorDataset

            model, batch, criterion, forward, target = build(kind, items)
            n_params = sum(p.numel() for p in model.parameters())
            need_gb = BATCH * n_params * 4 / 1e9
            if mode == "hooks" and need_gb > hooks_limit_gb:
                return f"skipped: dense per-sample gradients need {need_gb:.1f} GB (> {hooks_limit_gb} GB limit)"
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            loader = DataLoader(TensorDataset(torch.zeros(BATCH)), batch_size=BATCH)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = PrivacyEngine(accountant="rdp").make_private(
                    module=model, optimizer=opt, data_loader=loader, noise_multiplier=Z, max_grad_norm=CLIP,
                    poisson_sampling=False, grad_sample_mode=mode, criterion=criterion,
                )
            wrapped, dp_opt = out[0], out[1]
            crit = out[2] if mode == "ghost" else criterion

            def step():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dp_opt.zero_grad(set_to_none=True)
                    loss = crit(forward(wrapped._module, batch), batch[target])
                    loss.backward()
                    dp_opt.step()
            return step
        return make

    def fast(with_noise: bool):
        def make():
            model, batch, *_ = build(kind, items)
            params = [p for p in model.parameters() if p.requires_grad]
            clipper = PerSampleClipper(model, CLIP)
            opt = torch.optim.SGD(params, lr=LR)

            def step():
                if with_noise:
                    out = {p: noise.gaussian(p.shape, Z * CLIP) for p in params}
                else:
                    out = {p: torch.zeros_like(p) for p in params}
                clipper.clipped_sum(lambda: model.loss(batch), out=out, check=False)
                for p in params:
                    p.grad = out[p].div_(BATCH)
                opt.step()
                opt.zero_grad(set_to_none=True)
            return step
        return make

    def noise_only():
        model, *_ = build(kind, items)
        shapes = [p.shape for p in model.parameters()]

        def step():
            for s in shapes:
                noise.gaussian(s, Z * CLIP)
        return step

    return [
        ("nonprivate", nonprivate),
        ("opacus_hooks", opacus_mode("hooks")),
        ("opacus_ghost", opacus_mode("ghost")),
        ("fedsecure_fast", fast(True)),
        ("fedsecure_fast_clip_only", fast(False)),
        ("noise_source_draw", noise_only),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--items", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--models", nargs="*", default=["mf", "ncf"])
    ap.add_argument("--hooks-limit-gb", type=float, default=3.0,
                    help="skip Opacus hooks mode above this estimated per-sample gradient size (shared machine)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dp_sgd.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    noise = NoiseSource()
    results = []
    for kind in args.models:
        for items in args.items:
            reps = (5 if args.quick else 15) if items >= 100_000 else (10 if args.quick else 30)
            row: dict = {"model": kind, "items": items, "batch": BATCH, "dim": DIM, "users": USERS, "modes": {}}
            for name, make in modes(kind, items, args.hooks_limit_gb, noise):
                step = make()
                if isinstance(step, str):
                    row["modes"][name] = {"skipped": step}
                    print(f"{kind:4s} {items:>7d} {name:26s} {step}", flush=True)
                    continue
                times, mib = time_steps(step, reps)
                med = statistics.median(times)
                row["modes"][name] = {"median_ms": med * 1e3, "times_s": times, "peak_rss_increase_mib": mib}
                print(f"{kind:4s} {items:>7d} {name:26s} {med * 1e3:9.2f} ms  +{mib:8.1f} MiB", flush=True)
                del step
            m = row["modes"]
            ratio = lambda a, b: (m[a]["median_ms"] / m[b]["median_ms"]) if "median_ms" in m[a] and "median_ms" in m[b] else None  # noqa: E731
            row["ratios"] = {
                "opacus_ghost / fedsecure_fast": ratio("opacus_ghost", "fedsecure_fast"),
                "opacus_hooks / fedsecure_fast": ratio("opacus_hooks", "fedsecure_fast"),
                "opacus_ghost / fedsecure_fast_clip_only": ratio("opacus_ghost", "fedsecure_fast_clip_only"),
                "fedsecure_fast / nonprivate": ratio("fedsecure_fast", "nonprivate"),
                "noise_source_draw / fedsecure_fast": ratio("noise_source_draw", "fedsecure_fast"),
            }
            print("      ratios:", {k: None if v is None else round(v, 2) for k, v in row["ratios"].items()}, flush=True)
            results.append(row)
    doc = {
        "benchmark": "dp_sgd step: non-private vs Opacus hooks vs Opacus ghost vs fedsecure fast",
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "opacus": opacus.__version__,
                     "numpy": np.__version__, "cryptography": cryptography.__version__},
        "notes": [
            "Opacus modes draw noise from torch's default generator (their own step); fedsecure_fast draws it "
            "from the AES-256-CTR NoiseSource keyed from os.urandom. fedsecure_fast_clip_only and "
            "noise_source_draw split the fedsecure step into its clipping and noise parts.",
            "Peak memory: peak RSS increase over the RSS before each mode's timed steps (1 ms sampling).",
        ],
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
