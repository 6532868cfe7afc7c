"""The hyperparameter search on tiny data (two trials, one epoch), its resume, and the trainer reading its result."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")  # imports TF the project way
pytest.importorskip("keras_tuner", reason="the search needs keras-tuner")

from synthetic import write_npz  # noqa: E402
from training.__main__ import main  # noqa: E402
from training.models import build, hyperparameters  # noqa: E402
from training.common.tf_env import keras  # noqa: E402
from training.train import cosine_lr  # noqa: E402
from training.tune import _annealed  # noqa: E402
from training.tuned import TunedConfig  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("tune") / "d.npz", {"train": 140, "val": 70, "test": 70})


def tune(data, out, *extra: str) -> int:
    """The smallest search: edge-cnn at width 4, two trials of one epoch."""
    return main(["tune", "--data", str(data), "--out", str(out), "--fix", "width=4", "--trials", "2", "--epochs", "1",
                 "--batch-size", "64", "--verbose", "0", *extra])


def trials(out) -> list[dict]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def searched(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "s"
    assert tune(data, out, "--activation", "leaky_relu") == 0
    return out


def test_random_search_writes_trials_and_the_best_config(searched):
    rows = trials(searched)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    assert all(r["width"] == "4" and r["activation"] == "leaky_relu" and r["epochs"] == "1" for r in rows)
    best = TunedConfig.read(searched / "best_config.json")
    assert best.arch == "edge-cnn" and best.val_accuracy == max(float(r["val_accuracy"]) for r in rows)
    assert set(best.model) == {"width", "kernel", "dropout", "l2", "activation"} and best.lr in (3e-4, 1e-3, 3e-3)
    assert best.model["width"] == 4 and best.model["activation"] == "leaky_relu"
    search = json.loads((searched / "search.json").read_text())
    assert search["budget"] == {"trials": 2, "epochs": 1, "max_minutes": 45.0, "train_samples": 10000}
    assert search["request"]["fixed"] == {"width": 4, "activation": "leaky_relu"} and search["trials"] == 2


def test_a_search_resumes_and_refuses_to_mix_requests(searched, data, tmp_path, capsys):
    out = tmp_path / "s"
    shutil.copytree(searched, out)
    before = trials(out)
    assert tune(data, out, "--activation", "leaky_relu") == 0  # the budget is spent: nothing is retrained
    assert trials(out) == before
    capsys.readouterr()
    assert tune(data, out, "--activation", "leaky_relu", "--algorithm", "hyperband") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "algorithm changed" in err and "--overwrite" in err and "\n" not in err


def test_hyperband_stops_at_the_time_budget(data, tmp_path):
    """Two trials allowed, but the clock runs out during the first: it finishes its epoch and none follows."""
    out = tmp_path / "hb"
    assert tune(data, out, "--algorithm", "hyperband", "--max-minutes", "0.001") == 0
    rows = trials(out)
    assert len(rows) == 1 and rows[0]["status"] == "COMPLETED" and rows[0]["epochs"] == "1"
    assert not any(k.startswith("tuner/") for k in TunedConfig.read(out / "best_config.json").model)


def test_each_trial_anneals_from_its_own_learning_rate():
    """Short trials are compared at the end of a cosine schedule, each from the rate it drew."""
    annealed, x, y = _annealed(), [[0.0, 1.0]] * 8, [[1.0, 0.0]] * 8
    for lr in (3e-3, 1e-3):  # one callback serves the whole search
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy")
        seen: list[float] = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: seen.append(float(model.optimizer.learning_rate.numpy())))
        model.fit(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y), epochs=4, verbose=0,
                  callbacks=[annealed, record])
        assert seen == pytest.approx([cosine_lr(epoch / 4, lr) for epoch in range(4)], rel=1e-5)
        assert seen[0] == pytest.approx(lr) and seen[-1] < lr / 5


def test_trainer_takes_the_best_config(searched, data, tmp_path):
    run = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--config", str(searched / "best_config.json"), "--out", str(run),
               "--epochs", "1", "--batch-size", "64", "--limit", "70", "--verbose", "0"])
    assert rc == 0
    best = TunedConfig.read(searched / "best_config.json")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "edge-cnn" and metrics["hyperparameters"] == {**best.model, "lr": best.lr}
    model = keras.models.load_model(run / "model.keras")
    assert sum(isinstance(layer, keras.layers.LeakyReLU) for layer in model.layers) == 8


def test_defaults_are_the_hand_picked_designs():
    """The tuner's options leave the architectures' defaults as they were (same parameters, ReLU, no L2)."""
    for name, params in (("edge-cnn", 1176359), ("seed-cnn", 4478727)):
        model = build(name)
        assert model.count_params() == params and not model.losses
        assert not any(isinstance(layer, keras.layers.LeakyReLU) for layer in model.layers)
    assert set(hyperparameters("edge-cnn")) == {"width", "dropout", "kernel", "l2", "activation"}
    assert set(hyperparameters("seed-cnn")) == {"filters", "kernel", "wide_kernel", "dropout", "l2", "activation"}
    leaky = build("seed-cnn", activation="leaky_relu", l2=1e-4, filters=8)
    assert sum(isinstance(layer, keras.layers.LeakyReLU) for layer in leaky.layers) == 6 and leaky.losses


@pytest.fixture
def configs(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"arch": "edge-cnn"}))
    TunedConfig("edge-cnn", {"width": 4}, 1e-3).write(tmp_path / "good.json")
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["tune", "--fix", "depth=3"], "--fix depth=3: expected NAME=VALUE with NAME one of width, kernel"),
    (["tune", "--arch", "mini-xception", "--activation", "leaky_relu"], "mini-xception has no activation option"),
    (["tune", "--trials", "0"], "--trials and --epochs must be at least 1"),
    (["train", "--config", "{tmp}/missing.json"], "config not found"),
    (["train", "--config", "{tmp}/bad.json"], "is not a tuned config"),
    (["train", "--config", "{tmp}/good.json", "--arch", "seed-cnn"], "--arch seed-cnn differs from the edge-cnn"),
    (["train", "--arch", "mini-xception", "--activation", "leaky_relu"], "mini-xception has no hyperparameter "
                                                                         "activation"),
])
def test_user_mistakes_are_one_line_errors(data, configs, capsys, args, fragment):
    args = [a.replace("{tmp}", str(configs)) for a in args]
    rc = main([*args, "--data", str(data), "--out", str(configs / "out"), "--verbose", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and fragment in err, err
