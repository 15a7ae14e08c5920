import pytest

from segexport.errors import ConfigError, InputError
from segexport.recipe import load_recipe, recipe_from_dict, resolve_recipe


def test_packaged_recipe_loads():
    r = load_recipe("deeplabv3p")
    assert r.arch == "deeplabv3p" and r.input_size == (128, 128) and r.size == "tiny"


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown recipe key"):
        recipe_from_dict({"arch": "fcn8s", "epoch": 3}, "x.toml")


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="must be an integer"):
        recipe_from_dict({"arch": "fcn8s", "epochs": "three"}, "x.toml")
    with pytest.raises(ConfigError, match="two positive integers"):
        recipe_from_dict({"arch": "fcn8s", "input_size": [128]}, "x.toml")


def test_overrides_none_keeps_recipe_value():
    r = load_recipe("fcn8s")
    r2 = resolve_recipe(r, epochs=None, seed=5)
    assert r2.epochs == r.epochs and r2.seed == 5


def test_recipe_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_recipe("fcn8s", tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("arch = [")
    with pytest.raises(InputError, match="not valid TOML"):
        load_recipe("fcn8s", bad)


def test_model_options_reach_the_builder():
    from segexport.models import build_model

    r = recipe_from_dict({"arch": "fcn8s", "upsampling": "fixed"}, "x.toml")
    model = build_model(r.arch, **r.model_args(3))
    assert not any(p.requires_grad for p in model.classifier.upscores.parameters())
    assert not model.classifier.upscore_final.weight.requires_grad


def test_every_training_key_reaches_the_train_config():
    from segexport.train import TrainConfig

    keys = {"epochs": 7, "batch_size": 3, "lr": 0.5, "weight_decay": 0.25, "aux_weight": 0.125, "scale_min": 0.5,
            "scale_max": 2.0, "seed": 9, "se_weight": 0.75, "class_balance": "median_frequency", "warmup_epochs": 2,
            "eval_every": 3}
    cfg = TrainConfig.from_recipe(recipe_from_dict({"arch": "encnet", **keys}, "x.toml"))
    assert {k: getattr(cfg, k) for k in keys} == keys
    with pytest.raises(ConfigError, match="se_weight"):
        recipe_from_dict({"arch": "encnet", "se_weight": -1.0}, "x.toml")
    with pytest.raises(ConfigError, match="warmup_epochs must be an integer from 0"):
        recipe_from_dict({"arch": "encnet", "warmup_epochs": -1}, "x.toml")
    with pytest.raises(ConfigError, match="eval_every"):
        recipe_from_dict({"arch": "encnet", "eval_every": 0}, "x.toml")
    assert [e for e in range(7) if cfg.evaluates(e)] == [2, 5, 6]  # every third epoch and the last


def test_evaluating_less_often_trains_the_same_weights():
    import torch

    from segexport.data import Preprocess, load_arrays, open_dataset
    from segexport.train import TrainConfig, train_model
    from tests.dist_helpers import CLASSES, SIZE, arrays, initial_fcn8s

    preprocess = Preprocess(size=SIZE)
    val = load_arrays(open_dataset("synthetic", "val", size=SIZE, length=4), preprocess)
    runs = []
    for every in (1, 2):
        model = initial_fcn8s()
        cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, bf16=False, eval_every=every)
        result = train_model(model, arrays("train", 8), val, preprocess, cfg, tuple(map(str, range(CLASSES))),
                             progress=False)
        runs.append((model.state_dict(), result))
    (first, every_epoch), (second, sparse) = runs
    assert [("val_miou" in h) for h in every_epoch.history] == [True, True, True]
    assert [("val_miou" in h) for h in sparse.history] == [False, True, True]
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert sparse.metrics == every_epoch.metrics


def test_learning_rate_warms_up_then_decays():
    from segexport.train import lr_factor

    warm = lr_factor(total=100, warmup=4, power=1.0)
    assert [round(warm(i), 4) for i in (0, 1, 3, 4, 50, 99)] == [0.25, 0.495, 0.97, 0.96, 0.5, 0.01]
    assert lr_factor(total=100, warmup=0, power=1.0)(0) == 1.0
