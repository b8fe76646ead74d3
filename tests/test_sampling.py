"""Tests for tfdp.data.sampling: Poisson and shuffle batches and their fixed-shape chunks."""

import math

import numpy as np
import pytest

from tfdp import data
from tfdp.data import sampling
from tfdp.dp import randomness


def _coins(seed):
    return randomness.ReproducibleCoins(seed)


def _real_indices(chunks):
    """The example indices of all unmasked rows, in chunk order."""
    return np.concatenate([chunk.indices[chunk.mask == 1.0] for chunk in chunks])


def _check_chunks(chunks, draw, physical_batch_size):
    assert len(chunks) == max(1, math.ceil(len(draw) / physical_batch_size))
    for chunk in chunks:
        assert chunk.indices.shape == (physical_batch_size,) and chunk.indices.dtype == np.int64
        assert chunk.mask.shape == (physical_batch_size,) and chunk.mask.dtype == np.float32
        assert set(np.unique(chunk.mask)) <= {0.0, 1.0}
        assert np.all(chunk.indices[chunk.mask == 0.0] == sampling.PADDING)  # No real example.
    assert sum(chunk.mask.sum() for chunk in chunks) == len(draw)
    np.testing.assert_array_equal(_real_indices(chunks), draw)  # Nothing lost or reordered.


@pytest.mark.parametrize('coins', [randomness.SecretCoins(), _coins(3)], ids=['secret', 'seeded'])
def test_poisson_inclusion_rate_matches_q(coins):
    n, steps = 1000, 400
    sampler = data.PoissonSampler(n, batch_size=100, physical_batch_size=64, coins=coins)
    q = sampler.sampling_probability
    assert q == 0.1 and sampler.name == 'poisson'
    counts = np.zeros(n)
    sizes = []
    for step in range(steps):
        draw = sampler.sample(step)
        assert np.all(np.diff(draw) > 0)  # Sorted, no repeats within a step.
        counts[draw] += 1
        sizes.append(len(draw))
    # Overall and per-example rates within 5 binomial standard deviations of q.
    assert abs(counts.sum() / (n * steps) - q) < 5 * math.sqrt(q * (1 - q) / (n * steps))
    assert np.abs(counts / steps - q).max() < 5 * math.sqrt(q * (1 - q) / steps)
    # Batch sizes vary like Binomial(n, q) (std 9.5), unlike a fixed-size batch.
    assert 0.75 < np.std(sizes) / math.sqrt(n * q * (1 - q)) < 1.25


def test_poisson_chunks_have_fixed_shape_and_keep_every_index():
    sampler = data.PoissonSampler(500, batch_size=40, physical_batch_size=16, coins=_coins(1))
    for step in range(50):
        _check_chunks(sampler.chunks(step), sampler.sample(step), 16)


def test_poisson_overflow_becomes_several_chunks():
    # batch_size well above the physical batch: every draw needs several chunks of one step.
    sampler = data.PoissonSampler(100, batch_size=60, physical_batch_size=8, coins=_coins(0))
    for step in range(20):
        draw, chunks = sampler.sample(step), sampler.chunks(step)
        assert len(draw) > 8 and len(chunks) > 1
        _check_chunks(chunks, draw, 8)


def test_reproducible_draw_depends_only_on_seed_and_step():
    draw = data.PoissonSampler(1000, 50, 32, _coins(5)).sample(17)
    np.testing.assert_array_equal(data.PoissonSampler(1000, 50, 32, _coins(5)).sample(17), draw)
    assert not np.array_equal(data.PoissonSampler(1000, 50, 32, _coins(5)).sample(18), draw)
    assert not np.array_equal(data.PoissonSampler(1000, 50, 32, _coins(6)).sample(17), draw)


def test_secret_draws_are_fresh_at_every_call():
    # The default coins ignore any seed: the same step drawn twice, or by two samplers, differs.
    first = data.PoissonSampler(1000, 50, 32).sample(17)
    assert not np.array_equal(data.PoissonSampler(1000, 50, 32).sample(17), first)
    sampler = data.PoissonSampler(1000, 50, 32)
    assert not np.array_equal(sampler.sample(3), sampler.sample(3))
    assert isinstance(sampler.coins, randomness.SecretCoins)


def test_secret_shuffle_keeps_one_permutation_per_epoch_but_not_across_samplers():
    one, other = data.ShuffleSampler(100, 10, 4), data.ShuffleSampler(100, 10, 4)
    np.testing.assert_array_equal(one.sample(2), one.sample(2))  # Same epoch, same order.
    assert not np.array_equal(one.sample(2), other.sample(2))


def test_poisson_empty_draw_gives_one_masked_chunk():
    sampler = data.PoissonSampler(1000, batch_size=1, physical_batch_size=4, coins=_coins(0))
    # P(empty) = 0.999^1000 ~ 0.37 per step, so the first 50 steps hold one almost surely.
    step = next(s for s in range(50) if len(sampler.sample(s)) == 0)
    chunks = sampler.chunks(step)
    assert len(chunks) == 1 and not chunks[0].mask.any()
    assert chunks[0].indices.shape == (4,)


@pytest.mark.parametrize('cls', [data.PoissonSampler, data.ShuffleSampler])
def test_samplers_validate_arguments(cls):
    with pytest.raises(ValueError, match='batch_size=11'):
        cls(10, batch_size=11, physical_batch_size=4, coins=_coins(0))
    with pytest.raises(ValueError, match='physical_batch_size=0'):
        cls(10, batch_size=5, physical_batch_size=0, coins=_coins(0))
    with pytest.raises(ValueError, match='step=-2'):
        cls(10, batch_size=5, physical_batch_size=4, coins=_coins(0)).sample(-2)


def test_steps_per_epoch_rounds_up():
    assert data.PoissonSampler(103, 10, 4, coins=_coins(0)).steps_per_epoch == 11
    assert data.ShuffleSampler(100, 10, 4, coins=_coins(0)).steps_per_epoch == 10


def test_shuffle_epochs_cover_every_index_once():
    sampler = data.ShuffleSampler(103, batch_size=10, physical_batch_size=4, coins=_coins(2))
    assert sampler.name == 'shuffle' and sampler.sampling_probability == 10 / 103
    first_batches = []
    for epoch in range(3):
        steps = range(epoch * 11, (epoch + 1) * 11)
        batches = [sampler.sample(step) for step in steps]
        assert [len(b) for b in batches] == [10] * 10 + [3]
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(103))
        for step, batch in zip(steps, batches):
            _check_chunks(sampler.chunks(step), batch, 4)
        first_batches.append(batches[0])
    assert not np.array_equal(first_batches[0], first_batches[1])  # A new permutation per epoch.


def test_make_sampler_by_name():
    assert isinstance(sampling.make_sampler('poisson', 10, 5, 4, _coins(0)), data.PoissonSampler)
    with pytest.raises(ValueError, match=r"'uniform'.*\['poisson', 'shuffle'\]"):
        sampling.make_sampler('uniform', 10, 5, 4, _coins(0))


def test_reproducible_coins_refuse_a_negative_seed():
    with pytest.raises(ValueError, match='seed=-1'):
        randomness.ReproducibleCoins(-1)
