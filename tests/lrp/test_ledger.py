"""The relevance ledger (lrp/ledger.py): hand values."""

import numpy as np
import pandas as pd
import torch

from napari_lrp.lrp import Ledger


def test_absorbed_balance_and_conservation_hand_values():
    led = Ledger(start=10.0, end=6.0)
    led.record("head", "rule", "ZPlus", torch.tensor(10.0, dtype=torch.float64), torch.tensor(8.0))
    led.record("enc", "filter", "Clamp", 8.0, 6.0)
    led.to_floats()
    assert all(isinstance(e.received, float) and isinstance(e.handed, float) for e in led.entries)
    assert led.absorbed == 4.0
    assert led.balance_error == 0.0  # 10 - 6 - 4
    assert led.conservation_error == 0.4
    leak = Ledger(start=10.0, end=9.0, entries=list(led.entries))  # 9 arrived though 4 were absorbed: 3 appeared
    assert leak.balance_error == (10 - 9 - 4) / 10


def test_table_is_one_row_per_entry():
    led = Ledger(start=1.0, end=1.0)
    led.record("a", "rule", "Epsilon", 1.0, 0.75)
    t = led.table()
    assert t.shape == (1,) and t["absorbed"][0] == 0.25 and t["name"][0] == "a"
    df = pd.DataFrame(t)
    assert list(df.columns) == ["name", "kind", "op", "received", "handed", "absorbed"]
    assert np.isclose(df.received.sum(), 1.0)
