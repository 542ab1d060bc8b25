"""Example-level DP-SGD for one client (cross-silo: a client holds many users' examples).

Each local step (Abadi et al. 2016):

1. Poisson sampling: every example of the client joins the step's batch
   independently with probability ``q = batch_size / n`` (``n`` the client's
   examples), drawn from the secret noise source (amplification assumes
   nobody knows the batch); the batch may be empty, the step is still taken.
2. Per-sample gradients ``g_i`` of the loss over ALL trainable parameters
   (private user tables included), clipped to norm ``C``:
   ``c_i = min(1, C / (|g_i| + 1e-6))``.
3. ``g~ = (sum_i c_i g_i + N(0, (z C)^2 I)) / (q n)``, with dense noise on
   every trained parameter (all rows of every table: noise only on touched
   rows would reveal which rows were touched) drawn from a
   :class:`~fedsecure.dp.noise.NoiseSource` (keyed from the OS, never from
   ``--seed``), then one optimiser step.

Step 2 runs in one of three modes, identical up to float rounding:
``"fast"`` (default, :mod:`fedsecure.dp.clipping`: norms from looked-up rows,
no per-sample table gradients, the model is never wrapped), and Opacus's own
``PrivacyEngine.make_private`` with ``grad_sample_mode="hooks"`` or
``"ghost"`` (for cross-checks and benchmarks; the model is wrapped for the
duration of one ``train`` call). In every mode the noise comes from the
NoiseSource and the accounting from :class:`~fedsecure.dp.accounting.PrivacyAccountant`:
Opacus is asked for the clipped sum with its own noise off.

Each client has its own accountant: the guarantee is per client (a silo),
example-level, add/remove-one adjacency. A client's ``n`` is learnt from the
examples given to its first :meth:`DPSGDTrainer.train` call, or declared up
front with :meth:`DPSGDTrainer.plan` (which validates every client before any
training starts -- the integrator should call it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from weakref import WeakKeyDictionary

import numpy as np
import torch
from torch import nn

from fedsecure.dp.accounting import ACCOUNTANTS, PrivacyAccountant
from fedsecure.dp.clipping import ClippedGradients, PerSampleClipper
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.validation import (
    PrivacyConfigError,
    PrivacyPlan,
    check_clip,
    check_delta,
    check_epsilon,
    check_noise_multiplier,
    resolve_noise_multiplier,
)
from fedsecure.fl.local import Batch, LocalTrainer, batch_size_of, make_optimizer

Mode = Literal["fast", "ghost", "hooks"]
MODES: tuple[str, ...] = ("fast", "ghost", "hooks")


def poisson_batch(examples: Batch, sample_rate: float, source: NoiseSource) -> Batch:
    """Each example independently with probability ``sample_rate``.

    The draws come from the secret ``source``, not the run's seeded generator:
    amplification by subsampling, which the accountant counts on, holds only
    while nobody can tell which examples a step used.
    """
    n = batch_size_of(examples)
    keep = torch.from_numpy(np.flatnonzero(source.uniform_np(n) < sample_rate))
    return {k: v[keep] for k, v in examples.items()}


def fast_clipped_sum(model: nn.Module, batch: Batch, max_grad_norm: float) -> ClippedGradients:
    """``sum_i c_i g_i`` for ``model.loss(batch)`` by the fast path (noise off); see :mod:`fedsecure.dp.clipping`."""
    return PerSampleClipper(model, max_grad_norm).clipped_sum(lambda: model.loss(batch))


class OpacusClipping:
    """Opacus's clipped per-sample gradient sum for a model with a batch-mean ``loss(batch)``.

    Wraps ``model`` with real ``PrivacyEngine.make_private`` (noise multiplier
    0: noise is added by the caller from a NoiseSource), ``grad_sample_mode``
    ``"hooks"`` or ``"ghost"``. Use as a context manager; the wrapping is
    removed on exit. Ghost mode needs per-example losses for its second
    backward; the model only returns a batch mean, so they are recomputed by
    ``torch.func.vmap`` over one-example batches -- exact for losses that are
    per-example means, and refused for models with active dropout (the two
    forwards would draw different masks).
    """

    def __init__(self, model: nn.Module, mode: str, max_grad_norm: float, expected_batch_size: int) -> None:
        if mode not in ("hooks", "ghost"):
            raise ValueError(f"Opacus grad_sample_mode must be 'hooks' or 'ghost', got {mode!r}")
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        if mode == "ghost" and model.training and any(
            isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()
        ):
            raise ValueError("ghost mode cannot be used with active dropout (its two forwards differ); "
                             "use mode='fast' or 'hooks', or model.eval()")
        self.model, self.mode = model, mode
        self.expected_batch_size = int(expected_batch_size)
        # The optimiser's lr is irrelevant: only its clipping (pre_step) is used.
        base = torch.optim.SGD(model.parameters(), lr=0.0)
        loader = DataLoader(TensorDataset(torch.zeros(self.expected_batch_size)), batch_size=self.expected_batch_size)
        kwargs: dict[str, Any] = dict(
            module=model, optimizer=base, data_loader=loader, noise_multiplier=0.0,
            max_grad_norm=float(max_grad_norm), poisson_sampling=False, grad_sample_mode=mode,
        )
        if mode == "ghost":
            kwargs["criterion"] = nn.MSELoss()  # required by the API; the second backward is done here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = PrivacyEngine(accountant="rdp").make_private(**kwargs)
        self.wrapped, self.optimizer = out[0], out[1]
        # Opacus 1.6's ghost embedding norm calls .view on the indices, which fails for
        # expanded (non-contiguous) index tensors such as SASRec's positions.
        self._handles = [
            m.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(), *args[1:]))
            for m in model.modules() if isinstance(m, nn.Embedding)
        ]

    def __enter__(self) -> OpacusClipping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self.wrapped._close()

    def clipped_sum(self, batch: Batch) -> dict[nn.Parameter, torch.Tensor]:
        """``sum_i c_i g_i`` per parameter, as Opacus's optimiser accumulates it (``p.summed_grad``)."""
        with warnings.catch_warnings():
            # Opacus's hooks warn that embedding inputs (indices) need no gradient: expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            return self._clipped_sum(batch)

    def _clipped_sum(self, batch: Batch) -> dict[nn.Parameter, torch.Tensor]:
        opt, model = self.optimizer, self.model
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        if self.mode == "ghost":
            coeff = self.wrapped.get_clipping_coef()
            opt.zero_grad(set_to_none=True)
            self.wrapped.disable_hooks()
            try:
                per_example = _per_example_losses(model, batch)
                (coeff.to(per_example.dtype) * per_example).sum().backward()
            finally:
                self.wrapped.enable_hooks()
        if self.mode == "hooks":
            opt.clip_and_accumulate()
        else:  # the fast-gradient-clipping optimiser accumulates the already clipped p.grad
            opt.accumulate()
        sums = {p: p.summed_grad.detach().clone() for p in opt.params}
        opt.zero_grad(set_to_none=True)
        for p in opt.params:
            p.summed_grad = None
        return sums


def _per_example_losses(model: nn.Module, batch: Batch) -> torch.Tensor:
    """``[loss({x_i}) for i]``: vectorised by ``vmap`` where the graph allows, else one forward per example.

    (Opacus's full backward hooks on layers whose inputs need gradients are
    autograd Functions that ``vmap`` refuses; then the loop runs.)
    """
    try:
        return torch.func.vmap(lambda ex: model.loss({k: v.unsqueeze(0) for k, v in ex.items()}), randomness="same")(
            batch
        )
    except RuntimeError:
        n = batch_size_of(batch)
        return torch.stack([model.loss({k: v[i : i + 1] for k, v in batch.items()}) for i in range(n)])


@dataclass
class _Client:
    n_examples: int
    plan: PrivacyPlan
    accountant: PrivacyAccountant


class DPSGDTrainer(LocalTrainer):
    """Example-level DP-SGD for each client, with one accountant per client.

    Give either ``noise_multiplier`` (``z``) or ``target_epsilon``; with a
    target, each client's ``z`` is calibrated from its sampling rate
    ``q = batch_size / n`` so that its planned steps land at or under the
    target. Planned steps per client are ``planned_steps`` if given, else
    ``planned_rounds * epochs * ceil(n / batch_size)`` (every round that
    client could join; a client sampled in fewer rounds spends less). A
    client asked to train past its plan raises rather than overspend.

    ``noise`` defaults to a fresh OS-keyed :class:`NoiseSource`. ``mode`` is
    ``"fast"`` (default), ``"ghost"`` or ``"hooks"`` (Opacus). ``optimizer``
    is ``"sgd"`` or ``"adam"`` (post-processing of the noisy gradient).
    """

    name = "dpsgd"

    def __init__(
        self,
        noise_multiplier: float | None = None,
        max_grad_norm: float = 1.0,
        target_epsilon: float | None = None,
        delta: float = 1e-5,
        mode: Mode = "fast",
        noise: NoiseSource | None = None,
        planned_steps: int | None = None,
        *,
        planned_rounds: int | None = None,
        accountant: str = "rdp",
        optimizer: str = "sgd",
    ) -> None:
        if mode not in MODES:
            raise PrivacyConfigError(f"unknown DP-SGD mode {mode!r}; choose one of {', '.join(MODES)}")
        if accountant not in ACCOUNTANTS:
            raise PrivacyConfigError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
        if (noise_multiplier is None) == (target_epsilon is None):
            raise PrivacyConfigError("DP-SGD needs exactly one of noise_multiplier and target_epsilon")
        if target_epsilon is not None and planned_steps is None and planned_rounds is None:
            raise PrivacyConfigError("a target epsilon needs planned_steps or planned_rounds to calibrate the noise")
        for name, v in (("planned_steps", planned_steps), ("planned_rounds", planned_rounds)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise PrivacyConfigError(f"{name} must be a positive integer, got {v!r}")
        self.max_grad_norm = check_clip(max_grad_norm, "max grad norm")
        self.delta = check_delta(delta)
        # z / target checked now; delta < 1/n is checked per client, when n is known.
        if noise_multiplier is not None:
            check_noise_multiplier(noise_multiplier)
        if target_epsilon is not None:
            check_epsilon(target_epsilon)
        make_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], 0.1)  # validates the name
        self.noise_multiplier = noise_multiplier
        self.target_epsilon = target_epsilon
        self.mode: str = mode
        self.noise = noise if noise is not None else NoiseSource()
        self.planned_steps = planned_steps
        self.planned_rounds = planned_rounds
        self.accountant_name = accountant
        self.optimizer = optimizer
        self.clients: dict[int, _Client] = {}
        self._plans: dict[tuple[float, int], PrivacyPlan] = {}
        self._clippers: WeakKeyDictionary[nn.Module, PerSampleClipper] = WeakKeyDictionary()

    # -- planning ------------------------------------------------------------------------------

    @staticmethod
    def steps_per_call(n_examples: int, batch_size: int, epochs: int) -> int:
        """Steps one ``train`` call takes: ``epochs * ceil(n / batch_size)`` (one epoch = 1/q steps)."""
        return max(1, epochs * math.ceil(n_examples / batch_size))

    def plan(self, client_sizes: Mapping[int, int], *, batch_size: int, epochs: int = 1) -> dict[int, PrivacyPlan]:
        """Register and validate every client before training (delta < 1/n, reachable target).

        Raises :class:`PrivacyConfigError` naming the client on the first bad
        setting; returns each client's plan (its ``z``, ``q``, steps, epsilon).
        """
        return {c: self._register(c, int(n), batch_size, epochs).plan for c, n in client_sizes.items()}

    def _register(self, client_id: int, n: int, batch_size: int, epochs: int) -> _Client:
        if client_id in self.clients:
            return self.clients[client_id]
        if n < 1:
            raise PrivacyConfigError(f"client {client_id}: has no examples")
        if batch_size < 1:
            raise PrivacyConfigError(f"batch size must be >= 1, got {batch_size}")
        q = min(1.0, batch_size / n)
        if self.planned_steps is not None:
            steps = self.planned_steps
        elif self.planned_rounds is not None:
            steps = self.planned_rounds * self.steps_per_call(n, batch_size, epochs)
        else:  # a fixed noise multiplier with no plan: the plan's epsilon covers one call
            steps = self.steps_per_call(n, batch_size, epochs)
        key = (q, steps)
        cached = self._plans.get(key)
        try:
            check_delta(self.delta, n)
            # Calibration is a bisection over the accountant; clients of equal q and steps share it.
            plan = cached or resolve_noise_multiplier(
                delta=self.delta, population=n, sample_rate=q, steps=steps, clip=self.max_grad_norm,
                noise_multiplier=self.noise_multiplier, target_epsilon=self.target_epsilon,
                accountant=self.accountant_name,
            )
        except PrivacyConfigError as e:
            raise PrivacyConfigError(f"client {client_id} ({n} examples): {e}") from None
        self._plans[key] = plan
        client = _Client(n, plan, PrivacyAccountant(self.accountant_name))  # type: ignore[arg-type]
        self.clients[client_id] = client
        return client

    # -- training ------------------------------------------------------------------------------

    def train(
        self,
        model: nn.Module,
        examples: Batch,
        *,
        client_id: int,
        epochs: int,
        batch_size: int,
        lr: float,
        rng: np.random.Generator,
        work_fraction: float = 1.0,
    ) -> int:
        n = batch_size_of(examples)
        client = self._register(client_id, n, batch_size, epochs)
        if n != client.n_examples:
            raise PrivacyConfigError(
                f"client {client_id}: planned with {client.n_examples} examples, now has {n}; "
                "the sampling rate and accounting assume a fixed dataset"
            )
        plan = client.plan
        steps = self.steps_per_call(n, batch_size, epochs)
        if work_fraction < 1.0:
            steps = max(1, int(steps * work_fraction))
        if self.planned_steps is not None or self.planned_rounds is not None:
            if client.accountant.steps + steps > plan.steps:
                raise PrivacyConfigError(
                    f"client {client_id}: {steps} more steps would exceed the {plan.steps} planned "
                    f"(already {client.accountant.steps}); the privacy target would be overspent"
                )
        expected = plan.sample_rate * n  # Opacus's expected batch size for a mean loss
        std = plan.noise_multiplier * self.max_grad_norm
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(self.optimizer, params, lr)
        model.train()
        opacus = (
            OpacusClipping(model, self.mode, self.max_grad_norm, max(1, round(expected)))
            if self.mode != "fast" else None
        )
        try:
            for step in range(steps):
                batch = poisson_batch(examples, plan.sample_rate, self.noise)
                noisy = {p: self.noise.gaussian(p.shape, std, dtype=p.dtype) for p in params}
                if batch_size_of(batch) > 0:
                    if opacus is None:
                        clipper = self._clipper(model)
                        clipper.clipped_sum(lambda: model.loss(batch), out=noisy, check=step == 0)
                    else:
                        for p, s in opacus.clipped_sum(batch).items():
                            noisy[p].add_(s)
                for p in params:
                    p.grad = noisy[p].div_(expected)
                opt.step()
                opt.zero_grad(set_to_none=True)
                # Account the step only once it is taken.
                client.accountant.step(plan.noise_multiplier, plan.sample_rate)
        finally:
            if opacus is not None:
                opacus.close()
        return steps

    def _clipper(self, model: nn.Module) -> PerSampleClipper:
        clipper = self._clippers.get(model)
        if clipper is None:
            clipper = self._clippers[model] = PerSampleClipper(model, self.max_grad_norm)
        return clipper

    # -- reporting -----------------------------------------------------------------------------

    def privacy_report(self) -> dict[str, Any]:
        """Every client's (epsilon, delta), the worst case, the accountant and the noise source."""
        per_client = {
            c: {
                "epsilon": cl.accountant.epsilon(self.delta), "delta": self.delta, "steps": cl.accountant.steps,
                "noise_multiplier": cl.plan.noise_multiplier, "sample_rate": cl.plan.sample_rate,
                "n_examples": cl.n_examples, "planned_steps": cl.plan.steps, "planned_epsilon": cl.plan.epsilon,
            }
            for c, cl in sorted(self.clients.items())
        }
        worst = max((v["epsilon"] for v in per_client.values()), default=0.0)
        return {
            "mechanism": "example-level DP-SGD (per client, Poisson sampling, Gaussian noise)",
            "clients": per_client,
            "epsilon": worst,
            "delta": self.delta,
            "accountant": self.accountant_name,
            "noise_source": self.noise.describe(),
            "max_grad_norm": self.max_grad_norm,
            "target_epsilon": self.target_epsilon,
            "privacy_claim_void": not self.noise.secure,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "mode": self.mode, "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon, "max_grad_norm": self.max_grad_norm, "delta": self.delta,
            "accountant": self.accountant_name, "optimizer": self.optimizer, "noise_source": self.noise.describe(),
        }


def make_private(
    model: nn.Module,
    *,
    noise_multiplier: float | None = None,
    max_grad_norm: float = 1.0,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    mode: Mode = "fast",
    noise: NoiseSource | None = None,
    planned_steps: int | None = None,
    planned_rounds: int | None = None,
    accountant: str = "rdp",
    optimizer: str = "sgd",
) -> DPSGDTrainer:
    """The ``make_private``-style entry point: check ``model`` is supported, return its DP-SGD trainer.

    The fast mode supports models whose trainable parameters all live in
    ``nn.Embedding`` / ``nn.Linear`` / ``nn.LayerNorm`` layers (checked here;
    parameters used outside those layers' forward are caught at the first step).
    """
    trainer = DPSGDTrainer(
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, target_epsilon=target_epsilon,
        delta=delta, mode=mode, noise=noise, planned_steps=planned_steps, planned_rounds=planned_rounds,
        accountant=accountant, optimizer=optimizer,
    )
    if mode == "fast":
        trainer._clipper(model)
    return trainer
