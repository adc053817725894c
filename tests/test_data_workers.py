"""Batches and results do not depend on the DataLoader's worker count (0, 1, 2): the order of epoch e
comes from (seed, e) and the randomness of sample i from (seed, e, i), never from a worker's RNG stream
or from how many iterators a loop starts (tqdm starts one and drops it)."""
import json

import pytest
import torch

from data_scripts import cremad, fabricate
from mmbal.cli import main
from mmbal.data import DATASETS, make_loader

WORKERS = (0, 1, 2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad_workers")
    fabricate.fabricate_cremad(root / "raw")            # 6 actors x 6 emotions
    assert cremad.main(cremad.SPEC, ["all", "--raw", str(root / "raw"), "--cache", str(root / "cache"), "--folds",
                                     "from-data", "--frame-size", "24x32", "--workers", "0", "--no-progress"]) == 0
    return root / "cache"


def epoch_batches(split, workers: int, epochs: int = 2) -> list[dict]:
    """The batches a training loop sees, epoch by epoch, with ``workers`` DataLoader workers."""
    loader = make_loader(split, batch_size=8, shuffle=True, seed=109, num_workers=workers)
    out = []
    for epoch in range(epochs):
        split.set_epoch(epoch)
        iter(loader)                                     # started and dropped, as tqdm(loader) does
        out += list(loader)
    return out


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_cremad_batches_are_identical_for_0_1_2_workers(cache):
    train = DATASETS.create("cremad", seed=109, root=str(cache), image_size=16).train
    runs = {n: epoch_batches(train, n) for n in WORKERS}
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])
    per_epoch = len(runs[0]) // 2
    labels = [torch.cat([b["label"] for b in runs[0][e * per_epoch:(e + 1) * per_epoch]]) for e in (0, 1)]
    assert not torch.equal(labels[0], labels[1])         # a new epoch, a new order (of the same clips)
    assert sorted(labels[0].tolist()) == sorted(labels[1].tolist())


def test_cremad_training_loss_is_identical_for_0_1_2_workers(cache, tmp_path):
    losses, accuracy = {}, {}
    for n in WORKERS:
        out = tmp_path / f"run{n}.json"
        assert main(["train", "--dataset", "cremad", "--data-root", str(cache), "--data-opt", "image_size=16",
                     "--encoder", "small_cnn", "--balancer", "mlb", "--epochs", "1", "--batch-size", "4",
                     "--seed", "0", "--num-workers", str(n), "--no-progress", "--out", str(out)]) == 0
        record = json.loads(out.read_text())
        losses[n] = record["history"][0]["train"]["loss/mm"]
        accuracy[n] = record["test"]["mm"]["accuracy"]
    assert losses[0] == losses[1] == losses[2] and 1.0 < losses[0] < 3.0     # ln 6 = 1.79 at chance
    assert accuracy[0] == accuracy[1] == accuracy[2]


def test_digits_av_batches_are_identical_for_0_1_2_workers():
    train = DATASETS.create("digits_av", seed=0, max_train=96).train
    runs = {n: epoch_batches(train, n) for n in WORKERS}
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])
    train.set_epoch(1)                                   # what the workers saw is epoch 1's re-pairing
    order = torch.cat([b["label"] for b in runs[0][len(runs[0]) // 2:]])
    assert torch.equal(torch.sort(order).values, torch.sort(train.labels()).values)
    first = runs[0][len(runs[0]) // 2]
    index = [i for i in range(len(train)) if torch.equal(train[i]["video"], first["video"][0])]
    assert len(index) == 1 and torch.equal(train[index[0]]["audio"], first["audio"][0])


def test_the_order_is_the_one_the_committed_runs_trained_with():
    """Epoch by epoch, the single-process seeded DataLoader inside tqdm (what produced the committed
    results) and the EpochSampler give the same order, also when an epoch is asked for again."""
    from tqdm.auto import tqdm

    split = DATASETS.create("digits_av", seed=19, max_train=200).train
    old = torch.utils.data.DataLoader(split, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(19))
    new = make_loader(split, batch_size=32, shuffle=True, seed=19)
    orders = {"old": [], "new": []}
    for epoch in range(4):
        split.set_epoch(epoch)
        for name, loader in (("old", old), ("new", new)):
            orders[name].append(torch.cat([b["label"] for b in tqdm(loader, disable=True)]))
    assert all(torch.equal(a, b) for a, b in zip(orders["old"], orders["new"]))
    assert not torch.equal(orders["new"][0], orders["new"][1])           # a new order every epoch
    split.set_epoch(2)
    assert torch.equal(torch.cat([b["label"] for b in new]), orders["new"][2])
