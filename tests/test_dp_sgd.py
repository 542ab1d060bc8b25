"""Example-level DP-SGD: the fast clipping path against real Opacus, the clipping bound, the noise, the accounting."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from fedsecure.dp.clipping import PerSampleClipper, UnsupportedModelError, clip_factors
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.sgd import DPSGDTrainer, OpacusClipping, fast_clipped_sum, make_private
from fedsecure.dp.validation import PrivacyConfigError
from fedsecure.recsys.models import ImplicitMatrixFactorization, MatrixFactorization, NeuralCF, SASRec

B = 9


class TiedSASRec(SASRec):
    """SASRec with its output tied to ``item_emb.weight`` through a direct matmul: a parameter read
    outside its layer, which no per-sample machinery sees (see test_tied_output_is_refused)."""

    def loss(self, batch):
        logits = self.encode(batch["inputs"]) @ self.item_emb.weight[1:].T
        targets = batch["targets"] - 1
        return F.cross_entropy(logits.reshape(-1, self.n_items), targets.reshape(-1), ignore_index=-1)


def _pairs(gen: torch.Generator, n: int, users: int, items: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, users, (n,), generator=gen), torch.randint(0, items, (n,), generator=gen)


def make_case(kind: str, seed: int = 0, n: int = B):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if kind == "mf":
        u, i = _pairs(gen, n, 6, 15)
        return MatrixFactorization(6, 15, dim=8), {"users": u, "items": i, "ratings": 5 * torch.rand(n, generator=gen)}
    if kind in ("mf-implicit", "ncf"):
        u, i = _pairs(gen, n, 6, 15)
        labels = torch.randint(0, 2, (n,), generator=gen).float()
        model = ImplicitMatrixFactorization(6, 15, dim=8) if kind == "mf-implicit" else NeuralCF(6, 15, dim=8, layers=(16, 8, 4))
        return model, {"users": u, "items": i, "labels": labels}
    if kind == "sasrec":
        # Items 1..12 over length-6 sequences: repeated items within a sequence are common.
        # No padding, so ghost mode's per-example losses match the batch decomposition.
        seqs = torch.randint(1, 13, (n, 7), generator=gen)
        model = SASRec(5, 12, dim=16, blocks=1, heads=2, max_len=6, dropout=0.0, n_sampled=4)
        # sampled-softmax (the default loss): 4 negatives per sequence, looked up per example
        negatives = torch.randint(1, 13, (n, 4), generator=gen)
        return model, {"inputs": seqs[:, :-1].contiguous(), "targets": seqs[:, 1:].contiguous(),
                       "negatives": negatives, "log_expected": torch.full((n, 4), math.log(4 / 12))}
    if kind == "sasrec-bce":
        seqs = torch.randint(1, 13, (n, 7), generator=gen)
        model = SASRec(5, 12, dim=16, blocks=1, heads=2, max_len=6, dropout=0.0, loss="bce", n_sampled=2)
        return model, {"inputs": seqs[:, :-1].contiguous(), "targets": seqs[:, 1:].contiguous(),
                       "negatives": torch.randint(1, 13, (n, 6, 2), generator=gen)}
    raise KeyError(kind)


KINDS = ("mf", "mf-implicit", "ncf", "sasrec", "sasrec-bce")


def _opacus_per_sample(model: nn.Module, batch: dict) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients materialised by Opacus's GradSampleModule (the reference)."""
    from opacus import GradSampleModule

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.loss(batch).backward()
        return {p: p.grad_sample.detach().clone() for p in model.parameters()}
    finally:
        gsm._close()
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_fast_clipped_sum_equals_opacus(kind: str, mode: str) -> None:
    if mode == "ghost" and kind.startswith("sasrec"):
        pytest.skip("Opacus's ghost clipping refuses a layer used more than once, as SASRec's tied item table is "
                    "(NotImplementedError: parameter tying); hooks mode checks the fast path on it")
    model, batch = make_case(kind)
    ref = fast_clipped_sum(model, batch, 1.0)
    # A clip norm at the median per-sample norm: about half the samples are clipped.
    clip = float(ref.norms.median())
    fast = fast_clipped_sum(model, batch, clip)
    assert (fast.factors < 1).any() and (fast.factors == 1).any()
    with OpacusClipping(model, mode, clip, expected_batch_size=B) as opacus:
        theirs = opacus.clipped_sum(batch)
    assert set(theirs) == set(fast.grads) == {p for p in model.parameters()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(fast.grads[p], theirs[p], atol=1e-6, rtol=0, msg=f"{kind}/{mode}: {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_norms_equal_materialised(kind: str) -> None:
    model, batch = make_case(kind, seed=3)
    psg = _opacus_per_sample(model, batch)
    expected = torch.stack([g.reshape(B, -1).norm(dim=1) for g in psg.values()], 1).norm(dim=1)
    got = fast_clipped_sum(model, batch, 1.0).norms
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 12),
    clip=st.floats(1e-3, 10.0),
    kind=st.sampled_from(("mf", "sasrec")),
)
def test_each_contribution_is_clipped_to_c(seed: int, n: int, clip: float, kind: str) -> None:
    """|c_i g_i| <= C for every sample, and the clipped sum is exactly sum_i c_i g_i."""
    model, batch = make_case(kind, seed=seed, n=n)
    out = fast_clipped_sum(model, batch, clip)
    psg = _opacus_per_sample(model, batch)
    flat = torch.cat([g.reshape(n, -1) for g in psg.values()], 1)
    contrib = out.factors[:, None] * flat
    assert (contrib.norm(dim=1) <= clip * (1 + 1e-5)).all()
    torch.testing.assert_close(out.factors, clip_factors(flat.norm(dim=1), clip), atol=1e-5, rtol=1e-4)
    for p, g in psg.items():
        torch.testing.assert_close(out.grads[p], torch.einsum("i,i...->...", out.factors, g), atol=1e-6, rtol=1e-5)


def test_padding_positions_get_no_gradient() -> None:
    model, batch = make_case("sasrec", seed=5)
    batch["inputs"][:, :3] = 0  # left padding
    out = fast_clipped_sum(model, batch, 1e3)  # no clipping: the plain batch gradient, times B
    model.zero_grad()
    model.loss(batch).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(out.grads[p], p.grad * B, atol=1e-5, rtol=1e-5, msg=name)
    assert torch.all(out.grads[model.item_emb.weight][0] == 0)


def test_tied_output_is_refused() -> None:
    model = TiedSASRec(5, 12, dim=16, blocks=1, heads=2, max_len=6, dropout=0.0)
    seqs = torch.randint(1, 13, (4, 7))
    batch = {"inputs": seqs[:, :-1], "targets": seqs[:, 1:]}
    with pytest.raises(UnsupportedModelError, match=r"item_emb\.weight"):
        fast_clipped_sum(model, batch, 1.0)


def test_bare_parameter_is_refused() -> None:
    class WithBias(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(4, 2)
            self.bias = nn.Parameter(torch.zeros(1))

    with pytest.raises(UnsupportedModelError, match="<root>"):
        PerSampleClipper(WithBias(), 1.0)


# -- the trainer -------------------------------------------------------------------------------


def _mf_client(n: int = 200, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    u, i = _pairs(gen, n, 20, 400)
    return {"users": u, "items": i, "ratings": 5 * torch.rand(n, generator=gen)}


def test_modes_train_identically_without_noise() -> None:
    """Same Poisson batches, noise multiplier 0: fast, ghost and hooks give the same parameters."""
    examples = _mf_client()
    finals = {}
    for mode in ("fast", "ghost", "hooks"):
        torch.manual_seed(1)
        model = MatrixFactorization(20, 400, dim=8)
        # the Poisson batches come from the noise source: the same seeded one in every mode
        trainer = DPSGDTrainer(noise_multiplier=0.0, max_grad_norm=0.5, delta=1e-3, mode=mode,
                               noise=NoiseSource.insecure_seeded(7))
        steps = trainer.train(model, examples, client_id=0, epochs=1, batch_size=40, lr=0.5,
                              rng=np.random.default_rng(7))
        assert steps == 5
        finals[mode] = [p.detach().clone() for p in model.parameters()]
    for mode in ("ghost", "hooks"):
        for a, b in zip(finals["fast"], finals[mode]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_poisson_batches_come_from_the_secret_source_not_the_seed() -> None:
    """Same --seed generator, noise off, two OS-keyed sources: different batches, so different models."""
    examples = _mf_client()
    finals = []
    for _ in range(2):
        torch.manual_seed(1)
        model = MatrixFactorization(20, 400, dim=8)
        trainer = DPSGDTrainer(noise_multiplier=0.0, max_grad_norm=0.5, delta=1e-3, noise=NoiseSource())
        trainer.train(model, examples, client_id=0, epochs=1, batch_size=40, lr=0.5, rng=np.random.default_rng(7))
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.equal(finals[0], finals[1])


def test_noise_has_the_right_std_on_every_coordinate() -> None:
    """One full-batch step (q = 1) with lr 1: update * n + clipped sum is the noise, N(0, (zC)^2)."""
    torch.manual_seed(2)
    examples = _mf_client(n=50)
    model = MatrixFactorization(20, 400, dim=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clipped = fast_clipped_sum(model, examples, 0.7).grads
    z, clip = 1.3, 0.7
    trainer = DPSGDTrainer(noise_multiplier=z, max_grad_norm=clip, delta=1e-3, noise=NoiseSource())
    trainer.train(model, examples, client_id=0, epochs=1, batch_size=50, lr=1.0, rng=np.random.default_rng(0))
    noise = torch.cat([
        ((before[n] - p.detach()) * 50 - clipped[p]).reshape(-1) for n, p in model.named_parameters()
    ]).double()
    m = noise.numel()  # 20*8 + 20 + 400*8 + 400 + 1 coordinates: every row of every table
    assert m == 20 * 9 + 400 * 9 + 1
    assert (noise != 0).all()  # untouched rows are noised too
    std = z * clip
    assert abs(noise.mean().item()) < 5 * std / math.sqrt(m)
    # sample std of m Gaussians: relative standard error ~ 1/sqrt(2m) ~ 1.1%
    assert abs(noise.std().item() / std - 1) < 5 / math.sqrt(2 * m)
    kurtosis = ((noise / noise.std()) ** 4).mean().item()
    assert abs(kurtosis - 3) < 0.5


def test_accounting_matches_opacus_and_dp_accounting() -> None:
    from dp_accounting import dp_event, rdp
    from opacus.accountants import RDPAccountant

    examples = _mf_client(n=200)
    trainer = DPSGDTrainer(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-4)
    model = MatrixFactorization(20, 400, dim=8)
    steps = sum(
        trainer.train(model, examples, client_id=3, epochs=2, batch_size=25, lr=0.1, rng=np.random.default_rng(r))
        for r in range(3)
    )
    assert steps == 48
    report = trainer.privacy_report()
    ours = report["clients"][3]["epsilon"]
    opacus = RDPAccountant()
    opacus.history = [(1.1, 25 / 200, steps)]
    theirs = opacus.get_epsilon(delta=1e-4)
    google = rdp.RdpAccountant().compose(
        dp_event.PoissonSampledDpEvent(25 / 200, dp_event.GaussianDpEvent(1.1)), steps
    ).get_epsilon(1e-4)
    assert ours == pytest.approx(theirs, rel=0.01)
    assert ours == pytest.approx(google, rel=0.01)
    assert report["epsilon"] == ours and report["accountant"] == "rdp"
    assert "os.urandom" in report["noise_source"]


def test_calibration_lands_at_or_under_target_per_client() -> None:
    trainer = DPSGDTrainer(target_epsilon=3.0, max_grad_norm=1.0, delta=1e-4, planned_rounds=2)
    # (Each calibration bisects over the accountant: two clients of one size keep this test fast.)
    plans = trainer.plan({0: 200, 1: 200}, batch_size=25, epochs=1)
    assert plans[0].steps == plans[1].steps == 16 and plans[0].sample_rate == 0.125
    model = MatrixFactorization(20, 400, dim=8)
    for client, n in ((0, 200), (1, 200)):
        for r in range(2):
            trainer.train(model, _mf_client(n, seed=client), client_id=client, epochs=1, batch_size=25, lr=0.1,
                          rng=np.random.default_rng(r))
    report = trainer.privacy_report()
    for c in (0, 1):
        assert report["clients"][c]["epsilon"] <= 3.0
        assert report["clients"][c]["epsilon"] > 2.9  # not wastefully noisy
    with pytest.raises(PrivacyConfigError, match="exceed the 16 planned"):
        trainer.train(model, _mf_client(200, seed=0), client_id=0, epochs=1, batch_size=25, lr=0.1,
                      rng=np.random.default_rng(9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(noise_multiplier=-0.1), "noise multiplier"),
        (dict(noise_multiplier=1.0, max_grad_norm=0.0), "max grad norm"),
        (dict(target_epsilon=0.0, planned_steps=10), "target epsilon"),
        (dict(target_epsilon=-1.0, planned_steps=10), "target epsilon"),
        (dict(noise_multiplier=1.0, delta=0.0), "delta"),
        (dict(noise_multiplier=1.0, target_epsilon=1.0, planned_steps=3), "exactly one"),
        (dict(), "exactly one"),
        (dict(target_epsilon=1.0), "planned_steps or planned_rounds"),
        (dict(noise_multiplier=1.0, mode="vectorised"), "unknown DP-SGD mode"),
        (dict(noise_multiplier=1.0, accountant="moments"), "unknown accountant"),
        (dict(noise_multiplier=1.0, planned_steps=0), "planned_steps"),
    ],
)
def test_invalid_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(PrivacyConfigError, match=match):
        DPSGDTrainer(**kwargs)


def test_per_client_checks_name_the_client_before_training() -> None:
    trainer = DPSGDTrainer(noise_multiplier=1.0, delta=1e-3)
    with pytest.raises(PrivacyConfigError, match=r"client 7 \(5000 examples\).*1/n"):
        trainer.plan({1: 50, 7: 5000}, batch_size=10)
    trainer = DPSGDTrainer(noise_multiplier=1.0, delta=1e-4)
    model = MatrixFactorization(20, 400, dim=8)
    trainer.train(model, _mf_client(200), client_id=0, epochs=1, batch_size=50, lr=0.1, rng=np.random.default_rng(0))
    with pytest.raises(PrivacyConfigError, match="planned with 200 examples, now has 100"):
        trainer.train(model, _mf_client(100), client_id=0, epochs=1, batch_size=50, lr=0.1,
                      rng=np.random.default_rng(0))


def test_make_private_checks_the_model() -> None:
    class Conv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 2)

    with pytest.raises(UnsupportedModelError, match="Conv1d"):
        make_private(Conv(), noise_multiplier=1.0)
    trainer = make_private(MatrixFactorization(3, 4), noise_multiplier=1.0)
    assert trainer.describe()["mode"] == "fast"
