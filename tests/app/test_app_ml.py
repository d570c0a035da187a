"""Datasets, network building and the training loop, without the web app."""

from __future__ import annotations

import pytest
import torch

from app.ml.datasets import DATASETS, MAX_NOISE, generate
from app.ml.inference import LoadedModel, boundary, predict
from app.ml.network import (
    LayerSpec,
    SeededDropout,
    build_network,
    layer_specs,
    load_state_dict_bytes,
    parameter_count,
    state_dict_to_bytes,
)
from app.ml.training import CheckpointError, EpochResult, TrainingDivergedError, TrainingParams, TrainState, train

CPU = torch.device("cpu")


def test_the_required_datasets_exist() -> None:
    classification = {name for name, spec in DATASETS.items() if spec.task == "classification"}
    regression = {name for name, spec in DATASETS.items() if spec.task == "regression"}
    assert {"xor", "circles", "moons", "spirals", "blobs"} <= classification
    assert regression, "at least one regression set"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datasets_are_deterministic_shaped_and_bounded(name: str) -> None:
    a = generate(name, 300, 0.1, seed=7)
    b = generate(name, 300, 0.1, seed=7)
    c = generate(name, 300, 0.1, seed=8)
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (300, 2)
    assert a.x.dtype == torch.float32
    assert float(a.x.abs().max()) < 3.0
    if a.spec.task == "classification":
        assert a.y.shape == (300,)
        counts = torch.bincount(a.y, minlength=a.spec.num_classes)
        assert len(counts) == a.spec.num_classes
        assert int(counts.min()) >= 300 // a.spec.num_classes - 1  # balanced
    else:
        assert a.y.shape == (300, 1)


def test_noise_changes_the_points() -> None:
    clean = generate("circles", 200, 0.0, seed=1)
    noisy = generate("circles", 200, MAX_NOISE, seed=1)
    radii = clean.x.norm(dim=1)
    assert torch.allclose(radii[clean.y == 0], torch.ones(100), atol=1e-5)
    assert not torch.allclose(noisy.x.norm(dim=1)[noisy.y == 0], torch.ones(100), atol=0.05)


def test_parameter_count_matches_torch() -> None:
    layers = [LayerSpec(16, "relu"), LayerSpec(8, "tanh", dropout=0.2), LayerSpec(4, "sigmoid")]
    net = build_network(2, 3, layers, seed=0)
    assert parameter_count(2, 3, layers) == sum(p.numel() for p in net.parameters())
    assert any(isinstance(m, SeededDropout) for m in net)


def test_seeded_initialisation_is_reproducible_and_weights_round_trip() -> None:
    layers = layer_specs([{"width": 5, "activation": "tanh"}])
    a = build_network(2, 2, layers, seed=3)
    b = build_network(2, 2, layers, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = build_network(2, 2, layers)
    load_state_dict_bytes(c, state_dict_to_bytes(a))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def run(name: str, epochs: int, lr: float = 0.03, optimizer: str = "adam") -> tuple[torch.nn.Module, list[EpochResult]]:
    data = generate(name, 400, 0.05, seed=0)
    net = build_network(2, data.spec.output_dim, [LayerSpec(8, "tanh"), LayerSpec(8, "tanh")], seed=0)
    seen: list[EpochResult] = []
    params = TrainingParams(epochs=epochs, learning_rate=lr, batch_size=32, optimizer=optimizer, seed=0)
    done = train(TrainState(net, params, CPU), data, lambda r: seen.append(r) is None, lambda: False)
    assert done == len(seen)
    return net, seen


def test_training_learns_xor() -> None:
    _, seen = run("xor", 60)
    assert [r.epoch for r in seen] == list(range(1, 61))
    assert seen[-1].accuracy is not None
    assert seen[-1].accuracy >= 0.95
    assert seen[-1].loss < seen[0].loss


def test_training_regression_reports_no_accuracy_and_lowers_the_loss() -> None:
    net, seen = run("plane", 30, optimizer="sgd", lr=0.05)
    assert all(r.accuracy is None for r in seen)
    assert seen[-1].loss < 0.01
    model = LoadedModel(net.eval(), "regression", 2, 1, version=1)
    result = predict(model, torch.tensor([[0.5, -0.5]]))
    assert result.probabilities is None
    assert result.outputs[0] == pytest.approx(0.6 * 0.5 + 0.4 * 0.5, abs=0.1)


def test_on_epoch_false_stops_and_should_stop_interrupts() -> None:
    data = generate("xor", 100, 0.0, seed=0)
    net = build_network(2, 2, [LayerSpec(4, "relu")], seed=0)
    params = TrainingParams(epochs=50, learning_rate=0.01, batch_size=10, optimizer="sgd", seed=0)
    state = TrainState(net, params, CPU)
    assert train(state, data, lambda r: r.epoch < 3, lambda: False) == 3
    assert train(state, data, lambda r: True, lambda: True) == 3  # stopped before a batch of epoch 4


def test_divergence_is_reported() -> None:
    data = generate("sine", 200, 0.0, seed=0)
    net = build_network(2, 1, [LayerSpec(64, "relu"), LayerSpec(64, "relu")], seed=0)
    params = TrainingParams(epochs=20, learning_rate=10.0, batch_size=1, optimizer="sgd", seed=0)
    with pytest.raises(TrainingDivergedError, match=r"lower the learning rate"):
        train(TrainState(net, params, CPU), data, lambda r: True, lambda: False)


def test_boundary_grid_is_row_major_and_classification_confidence_is_a_probability() -> None:
    net, _ = run("xor", 40)
    model = LoadedModel(net.eval(), "classification", 2, 2, version=1)
    xs = [-1.0, -0.5, 0.5, 1.0]
    ys = [-1.0, 1.0]
    values, confidence = boundary(model, xs, ys)
    assert len(values) == 2
    assert len(values[0]) == 4
    assert confidence is not None
    assert all(0.5 <= p <= 1.0 for row in confidence for p in row)
    # xor: same-sign quadrants are class 1
    assert values[0][0] == 1  # (-1, -1)
    assert values[0][3] == 0  # (1, -1)
    assert values[1][3] == 1  # (1, 1)


# Dropout and both optimizers: every piece of state a checkpoint must carry.
RESUME_LAYERS = [LayerSpec(16, "relu", dropout=0.2), LayerSpec(8, "tanh")]


def resumable_run(optimizer: str, stop_at: list[int]) -> tuple[TrainState, list[EpochResult]]:
    """Train 30 epochs of moons; after each epoch in `stop_at` the state is checkpointed, thrown away,
    and a fresh network, optimizer and generators are restored from the bytes (as a new worker would)."""
    data = generate("moons", 300, 0.2, seed=4)
    params = TrainingParams(epochs=30, learning_rate=0.02, batch_size=16, optimizer=optimizer, seed=11)
    fresh = lambda: TrainState(build_network(2, 2, RESUME_LAYERS, seed=params.seed), params, CPU)  # noqa: E731
    state, seen, pending = fresh(), [], sorted(stop_at)
    while True:
        stop = pending.pop(0) if pending else None
        train(state, data, lambda r, stop=stop: seen.append(r) is None and r.epoch != stop, lambda: False)
        if stop is None:
            return state, seen
        blob = state.checkpoint()
        state = fresh()
        state.restore(blob)
        assert state.epoch == stop


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("stop_at", [[7], [3, 20], [1, 2, 9, 15, 29]], ids=["1-resume", "2-resumes", "5-resumes"])
def test_resumed_training_is_bit_identical_to_an_uninterrupted_one(optimizer: str, stop_at: list[int]) -> None:
    reference, reference_epochs = resumable_run(optimizer, [])
    resumed, resumed_epochs = resumable_run(optimizer, stop_at)
    assert resumed.epoch == reference.epoch == 30
    for (name, a), (_, b) in zip(reference.net.state_dict().items(), resumed.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [(r.epoch, r.loss, r.accuracy) for r in resumed_epochs] == [
        (r.epoch, r.loss, r.accuracy) for r in reference_epochs
    ]


def test_resume_would_be_detected() -> None:
    """Not vacuous: restoring weights but not the generators (data order, dropout) changes the result."""
    data = generate("moons", 300, 0.2, seed=4)
    params = TrainingParams(epochs=6, learning_rate=0.02, batch_size=16, optimizer="adam", seed=11)
    reference = TrainState(build_network(2, 2, RESUME_LAYERS, seed=11), params, CPU)
    train(reference, data, lambda r: True, lambda: False)
    partial = TrainState(build_network(2, 2, RESUME_LAYERS, seed=11), params, CPU)
    train(partial, data, lambda r: r.epoch < 3, lambda: False)
    careless = TrainState(build_network(2, 2, RESUME_LAYERS, seed=11), params, CPU)
    careless.net.load_state_dict(partial.net.state_dict())
    careless.optimizer.load_state_dict(partial.optimizer.state_dict())
    careless.epoch = 3  # generators start over
    train(careless, data, lambda r: True, lambda: False)
    assert not all(
        torch.equal(a, b) for a, b in zip(reference.net.parameters(), careless.net.parameters(), strict=True)
    )


def test_a_checkpoint_of_another_network_is_refused() -> None:
    params = TrainingParams(epochs=2, learning_rate=0.01, batch_size=8, optimizer="adam", seed=0)
    blob = TrainState(build_network(2, 2, [LayerSpec(4, "relu")], seed=0), params, CPU).checkpoint()
    other = TrainState(build_network(2, 2, [LayerSpec(5, "relu")], seed=0), params, CPU)
    with pytest.raises(CheckpointError, match="does not fit"):
        other.restore(blob)
    with pytest.raises(CheckpointError, match="format"):
        other.restore(_saved({"format": 99}))


def _saved(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
