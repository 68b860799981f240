"""The docks' one number format and one name per coefficient."""

import numpy as np

from napari_lrp.widgets._tables import COEFFICIENTS, NumberTable, elide, format_number, format_spread


def test_three_significant_digits_everywhere():
    assert [format_number(v) for v in (0.8, 0.012, 0.80301, 1234.5, -0.5, 12.0, 1e-7, 0.0)] == \
        ["0.800", "0.0120", "0.803", "1.23e+03", "-0.500", "12.0", "1.00e-07", "0.00"]
    assert format_number(np.int64(7)) == "7" and format_number(float("nan")) == "n/a" and format_number(None) == "n/a"
    assert format_number("text") == "text"
    assert format_spread(0.80301, 0.012) == "0.803 ± 0.0120" and format_spread(float("nan"), 1.0) == "n/a"


def test_long_names_are_elided_in_the_middle():
    name = "decoders.3.conv.block.0.adn.N"
    short = elide(name, 16)
    assert len(short) == 16 and short.startswith("decoders") and short.endswith(".adn.N") and "…" in short
    assert elide("encoders.0", 16) == "encoders.0"


def test_the_table_shows_the_text_as_written_with_symbols_and_tooltips(qtbot):
    table = NumberTable("coefficients", "what it shows")
    long = "decoders.3.conv.block.0.adn.N.with.a.long.tail"
    table.show([[0.8, 0.012], [1234.5, "n/a"]], ["ADC", long], ["input_inclusivity", "mu"])
    native = table.native
    shown = [[native.itemDelegate().displayText(native.item(i, j).text(), native.locale()) for j in range(2)]
             for i in range(2)]
    assert shown == [["0.800", "0.0120"], ["1.23e+03", "n/a"]]  # magicgui would show 0.8000 and 1.200e-02
    assert table.column_headers == ("D_x", "μ")
    assert native.horizontalHeaderItem(0).toolTip() == "D_x: " + COEFFICIENTS["input_inclusivity"][1]
    assert native.verticalHeaderItem(1).toolTip() == long and "…" in native.verticalHeaderItem(1).text()
    table.clear_rows()
    assert table.data.to_list() == []
