"""The batch sampler PPO, DPO and the reward model share."""

from __future__ import annotations

from training.batching import batches


def test_batches_walk_seeded_epochs_that_hold_every_row_once() -> None:
    drawn = list(batches(n_rows=10, batch_size=4, steps=5, seed=7))
    assert [len(b) for b in drawn] == [4] * 5
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert drawn == list(batches(10, 4, 5, seed=7))  # every process draws the same rows
    assert drawn != list(batches(10, 4, 5, seed=8))


def test_a_batch_larger_than_the_data_spans_epochs() -> None:
    (batch,) = batches(n_rows=3, batch_size=7, steps=1, seed=0)
    assert len(batch) == 7 and set(batch) == {0, 1, 2}
