"""The docks' tables: one number format (three significant digits), one name per coefficient (the paper's
symbol, its meaning in the header's tooltip), columns sized to their content, long row names elided with the
full name in a tooltip."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Table
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate, QTableWidgetItem

#: every coefficient by the name the tables show: (the paper's symbol, what it means); the CSV and the
#: Python tables keep the long column names (the keys)
COEFFICIENTS = {
    "input_inclusivity": ("D_x", "input inclusivity: the share of the strongly relevant voxels (|R| >= tau_R of "
                                 "the maximum) that lie where the image itself is bright (> tau_x of its maximum)"),
    "groundtruth_inclusivity": ("D_GT", "ground-truth inclusivity: the share of the strongly relevant voxels that "
                                        "lie inside the ground truth"),
    "mu": ("μ", "signal distribution: the mean of the relevance divided by its maximum |R| (positive: mostly "
                "evidence for the class)"),
    "mean_power": ("MP", "mean power: how much the strongest 20 % of the relevance stand out from the rest "
                         "(1 = not at all)"),
    "seconds": ("time [s]", "wall-clock seconds the method took"),
    "morf_auc": ("MoRF AUC", "area under the target score as the most relevant blocks are flipped first "
                             "(lower: more faithful)"),
    "lerf_auc": ("LeRF AUC", "area under the target score as the least relevant blocks are flipped first "
                             "(higher: more faithful)"),
    "abs_share": ("share of |R|", "the channel's share of the |relevance| arriving at its layer"),
    "relevance": ("R at layer [logit]", "the relevance the channel receives at its layer"),
    "rank": ("rank", "1: the case where the channel receives the most relevance"),
    "case": ("case", "the case's name in the cohort"),
    "location_z_mm": ("z [mm]", "where the channel's relevance peaks: napari's world z"),
    "location_y_mm": ("y [mm]", "where the channel's relevance peaks: napari's world y"),
    "location_x_mm": ("x [mm]", "where the channel's relevance peaks: napari's world x"),
}
#: the longest row name shown in full (characters); longer ones are elided in the middle
ROW_NAME_CHARS = 26


def format_number(value) -> str:
    """A number as the tables show it: three significant digits ('0.800', '0.0120', '1.23e+03'), 'n/a' when
    missing or not finite; text stays as it is.

    Parameters
    ----------
    value : float, int, str or None
        The value.

    Returns
    -------
    str
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{float(value):#.3g}".rstrip(".")


def format_spread(mean, sd) -> str:
    """Mean ± sd in the tables' number format.

    Parameters
    ----------
    mean, sd : float
        The mean and the standard deviation.

    Returns
    -------
    str
    """
    return "n/a" if format_number(mean) == "n/a" else f"{format_number(mean)} ± {format_number(sd)}"


def elide(name: str, chars: int = ROW_NAME_CHARS) -> str:
    """A long name shortened in the middle ('decoders.3.conv…block.0').

    Parameters
    ----------
    name : str
        The name.
    chars : int
        The longest name kept whole.

    Returns
    -------
    str
    """
    if len(name) <= chars:
        return name
    keep = chars - 1
    return f"{name[:keep - keep // 2]}…{name[-(keep // 2):]}"


class NumberTable(Table):
    """A read-only table of numbers in one format: :meth:`show` takes the values, the docks' names of the
    columns (a coefficient's symbol in the header, its meaning in the header's tooltip) and the row names.

    Parameters
    ----------
    label : str
        The table's label in the dock.
    tooltip : str
        What the table shows.
    """

    def __new__(cls, *_args, **_kwargs):  # magicgui's Table.__new__ takes only its own signature
        return super().__new__(cls)

    def __init__(self, label: str, tooltip: str = ""):
        super().__init__(value={"data": [], "index": [], "columns": []}, label=label)
        # magicgui's delegate re-formats numeric text with four decimals: show the text as written
        self.native.setItemDelegate(QStyledItemDelegate(self.native))
        self.native.setEditTriggers(self.native.EditTrigger.NoEditTriggers)
        self.tooltip = tooltip

    def show(self, rows: list[list], index: list[str], columns: list[str]) -> None:
        """Fill the table.

        Parameters
        ----------
        rows : list of list
            One list per row: numbers (formatted here) or text (kept).
        index : list of str
            The row names (elided when long; the full name in the header's tooltip).
        columns : list of str
            Column keys: a coefficient's long name (shown as its symbol) or any header text.
        """
        data = [[format_number(v) for v in row] for row in rows]
        headers = [COEFFICIENTS[c][0] if c in COEFFICIENTS else c for c in columns]
        self.value = {"data": data, "index": [elide(str(i)) for i in index], "columns": headers}
        table = self.native
        for j, c in enumerate(columns):
            item = table.horizontalHeaderItem(j) or QTableWidgetItem(headers[j])
            item.setToolTip(f"{headers[j]}: {COEFFICIENTS[c][1]}" if c in COEFFICIENTS else headers[j])
            table.setHorizontalHeaderItem(j, item)
        for i, name in enumerate(index):
            item = table.verticalHeaderItem(i) or QTableWidgetItem(elide(str(name)))
            item.setToolTip(str(name))
            table.setVerticalHeaderItem(i, item)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.verticalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def clear_rows(self) -> None:
        """Empty the table (a new case is on screen)."""
        self.value = {"data": [], "index": [], "columns": []}
