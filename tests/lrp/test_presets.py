"""Rule presets (lrp/presets.py): the registry, the default handling, resolution order."""

import pytest
import torch
from torch import nn

from napari_lrp.lrp import (
    PRESETS,
    Epsilon,
    Flat,
    Gamma,
    PassThrough,
    Propagation,
    ZBox,
    ZPlus,
    register_preset,
)
from napari_lrp.lrp.presets import Preset, default_rule, get_preset, resolve_rule


def test_registry_names_and_menus_list_it():
    assert list(PRESETS) == ["paper", "epsilon-gamma-box", "epsilon-plus-flat", "lrp0", "attnlrp", "cp-lrp"]
    from napari_lrp.cli import main

    with pytest.raises(SystemExit):  # argparse lists the registry's names in its error
        main(["explain", "c", "--model", "m", "--out", "o", "--preset", "nope"])
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of paper, epsilon-gamma-box"):
        get_preset("nope")


def test_presets_hold_the_documented_rules():
    paper = get_preset("paper", (0.0, 1.0))
    assert paper.first == ZBox(0.0, 1.0, 1e-9)
    assert resolve_rule("c", nn.Conv3d(1, 1, 1), {}, paper, first=False) == ZPlus(1e-9)
    assert resolve_rule("n", nn.InstanceNorm3d(2), {}, paper, first=False) == PassThrough()
    egb = get_preset("epsilon-gamma-box")
    assert resolve_rule("c", nn.ConvTranspose3d(1, 1, 2), {}, egb, first=False) == Gamma(0.25, 1e-6)
    assert resolve_rule("l", nn.Linear(2, 2), {}, egb, first=False) == Epsilon(1e-6)
    assert get_preset("epsilon-plus-flat").first == Flat(1e-6)
    lrp0 = get_preset("lrp0")
    assert resolve_rule("c", nn.Conv3d(1, 1, 1), {}, lrp0, first=True) == Epsilon(0.0)
    assert lrp0.attention == "attnlrp" and lrp0.product_epsilon == 0.0
    for name in ("attnlrp", "cp-lrp"):
        p = get_preset(name)
        assert resolve_rule("l", nn.Linear(2, 2), {}, p, first=True) == Epsilon(1e-6) and p.product_epsilon == 1e-6
        assert type(resolve_rule("s", nn.Softmax(-1), {}, p, first=False)).__name__ == "Softmax"
    assert get_preset("attnlrp").attention == "attnlrp" and get_preset("cp-lrp").attention == "cp-lrp"


def test_defaults_for_modules_nobody_names():
    assert default_rule(nn.Conv3d(1, 1, 1)) == Epsilon(0.0)  # LRP-0, only exact zeros stabilised
    assert default_rule(nn.LeakyReLU()) == PassThrough() and default_rule(nn.Dropout3d()) == PassThrough()
    assert type(default_rule(nn.MaxPool3d(2))).__name__ == "WinnerTakesAll"
    assert default_rule(nn.Sequential()) is None
    assert type(default_rule(nn.Softmax(dim=-1))).__name__ == "Softmax"  # attention, not pass-through


def test_resolution_order_name_then_glob_then_type_then_preset():
    conv = nn.Conv3d(1, 1, 1)
    preset = get_preset("paper")
    rules = {"enc.0": Epsilon(0.5), "enc.*": Gamma(0.1), nn.Conv3d: Epsilon(0.2)}
    assert resolve_rule("enc.0", conv, rules, preset, False) == Epsilon(0.5)
    assert resolve_rule("enc.1", conv, rules, preset, False) == Gamma(0.1)
    assert resolve_rule("dec.0", conv, rules, preset, False) == Epsilon(0.2)
    assert resolve_rule("dec.0", conv, {}, preset, True) == preset.first
    # a glob with a weight rule skips modules without weights
    assert resolve_rule("enc.relu", nn.ReLU(), {"enc.*": Gamma(0.1)}, preset, False) == PassThrough()


def test_a_registered_preset_is_used_by_name():
    register_preset("test-gamma", lambda b: Preset("test-gamma", [((nn.Conv3d,), Gamma(1.0))]))
    try:
        net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1)).eval()
        prop = Propagation(net, torch.rand(1, 1, 4, 4, 4), rules="test-gamma")
        assert {e.name: e.rule for e in prop._entries}["2"] == Gamma(1.0)
        assert "test-gamma" in PRESETS
    finally:
        from napari_lrp.lrp import presets

        presets._REGISTRY.pop("test-gamma")


def test_a_glob_assigns_a_rule_only_where_it_can_handle_the_module():
    from napari_lrp.lrp.presets import can_handle

    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.PReLU(), nn.Dropout3d(0.1), nn.GELU(),
                        nn.MaxPool3d(2), nn.Conv3d(2, 1, 1)).eval()
    x = torch.rand(1, 1, 4, 4, 4)
    glob = Propagation(net, x, rules={"*": Epsilon(0.25)})
    typed = Propagation(net, x, rules={nn.Conv3d: Epsilon(0.25)})
    assert {e.name: e.rule for e in glob._entries} == {e.name: e.rule for e in typed._entries}
    rules = {e.name: e.rule for e in glob._entries}
    assert rules["1"] == PassThrough() and rules["3"] == PassThrough() and rules["0"] == Epsilon(0.25)
    torch.testing.assert_close(glob.propagate(glob.output).relevance, typed.propagate(typed.output).relevance)
    assert can_handle(Epsilon(), nn.InstanceNorm3d(2)) and not can_handle(Epsilon(), nn.GELU())
    assert not can_handle(Gamma(0.25), nn.BatchNorm3d(2)) and can_handle(PassThrough(), nn.Conv3d(1, 1, 1))
