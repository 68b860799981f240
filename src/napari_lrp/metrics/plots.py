"""The paper's charts as matplotlib Figures (no napari): they take the sweep table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["inclusivity_figure", "mean_power_figure", "normalised_ranks", "perturbation_figure", "plot_search",
           "scorecard_figure", "signal_figure"]

#: bar colours that read on napari's dark and light themes alike
INPUT_COLOUR = "#4db8ff"
TRUTH_COLOUR = "#ffa040"


def _cleared(fig: Figure | None, size: tuple[float, float]) -> Figure:
    """``fig`` cleared for a new chart, or a new figure of ``size`` inches."""
    fig = fig or Figure(figsize=size)
    fig.clear()
    return fig


def _settings(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["setting"]))


def inclusivity_figure(table: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """The paper's Fig. 4: mean input and ground-truth inclusivity per filter setting and over channels.

    Parameters
    ----------
    table : pandas.DataFrame
        A sweep's table (``napari_lrp.sweep``).
    fig : matplotlib.figure.Figure, optional
        Drawn into (cleared); default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _cleared(fig, (9, 5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    names = _settings(table)
    mean = table[table.channel == "mean"].set_index("setting").loc[names]
    pos = np.arange(len(names))
    ax1.bar(pos - 0.2, mean["input_inclusivity"], 0.4, label="input", color=INPUT_COLOUR)
    ax1.bar(pos + 0.2, mean["groundtruth_inclusivity"], 0.4, label="ground truth", color=TRUTH_COLOUR)
    ax1.set_ylabel("mean D")
    ax1.legend(fontsize="small")
    ch = table[table.channel != "mean"]
    data = [ch[ch.setting == s]["groundtruth_inclusivity"].dropna().values for s in names]
    ax2.boxplot(data, positions=pos)
    ax2.set_ylabel("GT D per channel")
    ax2.set_xticks(pos, names, rotation=70, fontsize="x-small", ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def signal_figure(table: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """The paper's Fig. 5 D1/D2: mu per filter setting, one point per channel and a box over channels.

    Parameters
    ----------
    table : pandas.DataFrame
        A sweep's table.
    fig : matplotlib.figure.Figure, optional
        Drawn into (cleared).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _cleared(fig, (9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    names = _settings(table)
    ch = table[table.channel != "mean"]
    for c in dict.fromkeys(ch.channel):
        sub = ch[ch.channel == c].set_index("setting").loc[names]
        ax1.scatter(np.arange(len(names)), sub["mu"], s=12, label=c)
    ax1.set_xticks(np.arange(len(names)), names, rotation=60, fontsize="x-small")
    ax1.set_ylabel("mu (mean normalised relevance)")
    ax1.legend(fontsize="x-small")
    ax2.boxplot([ch[ch.setting == s]["mu"].values for s in names])
    ax2.set_xticks(np.arange(1, len(names) + 1), names, rotation=60, fontsize="x-small")
    fig.tight_layout()
    return fig


def mean_power_figure(layers: dict[str, float], fig: Figure | None = None) -> Figure:
    """Mean power per layer as bars.

    Parameters
    ----------
    layers : dict[str, float]
        {layer name: mp} (:func:`napari_lrp.metrics.layer_mean_power`).
    fig : matplotlib.figure.Figure, optional
        The figure to draw into; a new one when None.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ax = _cleared(fig, (8, 3.5)).subplots()
    fig = ax.figure
    names = list(layers)
    ax.bar(np.arange(len(names)), [layers[n] for n in names])
    ax.set_xticks(np.arange(len(names)), names, rotation=60, fontsize="x-small")
    ax.set_ylabel("mean power")
    fig.tight_layout()
    return fig


def perturbation_figure(curves, fig: Figure | None = None) -> Figure:
    """Region-perturbation curves (score / score_0 over the flipped fraction), the AUC in the legend.

    Parameters
    ----------
    curves : list of PerturbationCurve
        MoRF, LeRF, random, ... (``Explanation.faithfulness``).
    fig : matplotlib.figure.Figure, optional
        Where to draw (cleared first); default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ax = _cleared(fig, (5, 4)).subplots()
    fig = ax.figure
    for label, c in (curves.items() if isinstance(curves, dict) else ((c.order, c) for c in curves)):
        ax.plot(c.fractions, c.scores, marker=".", label=f"{label} (AUC {c.auc:.3f})")
    ax.set_xlabel("fraction of blocks flipped")
    ax.set_ylabel("score / score at 0")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_search(table: pd.DataFrame, fig=None, columns=("morf_auc", "lerf_auc", "groundtruth_inclusivity")):
    """Contour plots of a gamma search over its first two gamma columns, the best point marked.

    Parameters
    ----------
    table : DataFrame
        ``SearchResult.table`` (columns gamma_<group>, faithfulness and ``columns``).
    fig : Figure, optional
        Drawn into (cleared); default a new figure.
    columns : sequence of str
        One panel per column (as the thesis' Fig. 4.1/4.2).

    Returns
    -------
    Figure
    """
    gcols = [c for c in table.columns if c.startswith("gamma_")][:2]
    if len(gcols) != 2:
        raise ValueError("plot_search needs a search over two groups")
    fig = _cleared(fig, (4.2 * len(columns), 3.8))
    xs, ys = np.unique(table[gcols[0]]), np.unique(table[gcols[1]])
    best = table.loc[int(table.faithfulness.idxmax())]
    for k, col in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        Z = table.pivot(index=gcols[1], columns=gcols[0], values=col).loc[ys, xs].to_numpy()
        cs = ax.contourf(xs, ys, Z, levels=12, cmap="viridis")
        fig.colorbar(cs, ax=ax)
        ax.plot(best[gcols[0]], best[gcols[1]], "r*", markersize=12)
        ax.set_xlabel(f"gamma, {gcols[0][6:]} blocks")
        ax.set_ylabel(f"gamma, {gcols[1][6:]} blocks")
        ax.set_title(col.replace("_", " "))
    fig.tight_layout()
    return fig


def _wide(table: pd.DataFrame) -> pd.DataFrame:
    """Methods x (family, metric) of a scorecard's values (or a summary's means), in the table's order."""
    column = "value" if "value" in table.columns else "mean"
    pairs = list(dict.fromkeys(zip(table["family"], table["metric"])))
    methods = list(dict.fromkeys(table["method"]))
    wide = table.set_index(["method", "family", "metric"])[column].unstack(["family", "metric"])
    return wide.reindex(index=methods, columns=pd.MultiIndex.from_tuples(pairs, names=["family", "metric"]))


def normalised_ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Each metric's methods ranked from best (0) to worst (1), so that metrics of different scales compare.

    MetaQuantus (Hedström et al. 2023) advises reading metrics as ranks: they disagree in scale and often in
    order. Ties share their mean rank; a method without a value has none.

    Parameters
    ----------
    table : pandas.DataFrame
        A scorecard (``napari_lrp.evaluate``: columns method, family, metric, better, value) or its cohort
        summary (``mean`` instead of ``value``).

    Returns
    -------
    pandas.DataFrame
        Rows method, columns (family, metric), values in [0, 1] (0.5 when all methods tie), NaN where a metric
        was not measured.
    """
    wide = _wide(table)
    better = table.drop_duplicates("metric").set_index("metric")["better"]
    out = pd.DataFrame(index=wide.index, columns=wide.columns, dtype=float)
    for family, metric in wide.columns:
        # equal to 10 significant digits is a tie (a cohort mean differs from its equal twin in the last bits)
        v = wide[(family, metric)].map(lambda t: float(f"{t:.10g}"))
        if better[metric] == "nearer zero":  # e.g. the ledger's unaccounted share, signed
            v = v.abs()
        ranks = v.rank(ascending=better[metric] != "higher", method="average")  # rank 1 = best
        n = int(v.notna().sum())
        out[(family, metric)] = (ranks - 1) / (n - 1) if n > 1 else np.where(v.notna(), 0.5, np.nan)
    return out


def scorecard_figure(table: pd.DataFrame, fig: Figure | None = None, tall: bool = False) -> Figure:
    """The scorecard as two heat maps: mean normalised rank per metric family, and every metric's.

    Parameters
    ----------
    table : pandas.DataFrame
        A scorecard or its cohort summary (see :func:`normalised_ranks`).
    fig : matplotlib.figure.Figure, optional
        Drawn into (cleared); default a new figure.
    tall : bool
        The two maps one above the other with the metrics as rows (a narrow dock), instead of side by side.

    Returns
    -------
    matplotlib.figure.Figure
        Green is best (rank 0), red worst; grey cells were not measured. The metric panel writes each value.
    """
    ranks = normalised_ranks(table)
    raw = _wide(table)
    families = ranks.T.groupby(level=0, sort=False).mean().T
    methods = list(ranks.index)
    panels = [(families, list(families.columns), "{:.2f}", "mean rank per family (0 best)"),
              (raw, [m for _f, m in ranks.columns], "{:.3g}", "every metric: values, coloured by rank")]
    if tall:  # metrics down the page, methods across
        fig = _cleared(fig, (max(5.0, 1.2 * len(methods) + 3), 1.5 + 0.3 * (families.shape[1] + ranks.shape[1])))
        axes = fig.subplots(2, 1, gridspec_kw={"height_ratios": [max(1, families.shape[1]), ranks.shape[1]]})
    else:
        fig = _cleared(fig, (max(8.0, 0.55 * ranks.shape[1] + 3), 1.6 + 0.9 * len(methods)))
        axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(1, families.shape[1]), ranks.shape[1]]})
    from matplotlib import colormaps

    cmap = colormaps["RdYlGn_r"].with_extremes(bad="#888888")
    for k, (ax, (values, labels, fmt, title)) in enumerate(zip(axes, panels)):
        colour = (families if k == 0 else ranks).to_numpy(dtype=float)
        text = values.to_numpy(dtype=float)
        if tall:
            colour, text = colour.T, text.T
        image = ax.imshow(np.ma.masked_invalid(colour), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        rows, cols = (labels, methods) if tall else (methods, labels)
        shown_cols = cols if (not tall or k == 0) else [""] * len(cols)
        ax.set_xticks(np.arange(len(cols)), shown_cols, rotation=0 if tall else 60, ha="center" if tall else "right",
                      rotation_mode="anchor", fontsize="x-small")
        if tall:
            ax.xaxis.tick_top()
        ax.set_yticks(np.arange(len(rows)), rows if (tall or k == 0) else [""] * len(rows), fontsize="x-small")
        for i in range(text.shape[0]):
            for j in range(text.shape[1]):
                ax.text(j, i, "-" if np.isnan(text[i, j]) else fmt.format(text[i, j]), ha="center", va="center",
                        fontsize="x-small" if k == 0 else "xx-small")
        ax.set_title(title, fontsize="small", pad=14 if tall and k == 0 else 6)
    fig.colorbar(image, ax=axes[1], fraction=0.03, label="normalised rank (0 best, 1 worst)")
    fig.tight_layout()
    return fig
