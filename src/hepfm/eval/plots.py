"""All plotting lives here (the only matplotlib importer). Figures use mplhep's HEP style (ROOT-like fonts, ticks
on all sides, inward ticks), sized and labelled for slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepfm.io.atomic import atomic_write
from hepfm.physics import validation as val

_PT, _ETA = 0, 1


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    mplhep.style.use("ROOT")  # experiment-neutral HEP style: these are simulation studies, not CMS/ATLAS results
    plt.rcParams.update({"figure.figsize": (6.4, 4.8), "font.size": 12, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, path: Path) -> None:
    """Save atomically so an interrupted run never leaves a half-written image."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight"), suffix=".tmp.png")


def _overlay(plt, samples: dict[str, np.ndarray], bins, xlabel: str, title: str, path: Path,
             logy: bool = False, integer: bool = False) -> None:
    fig, ax = plt.subplots()
    drawn = 0
    for name, values in samples.items():
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        ax.hist(values, bins=bins, histtype="step", density=True, linewidth=1.6, label=f"{name} ({len(values)})")
        drawn += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel("normalised events")
    ax.set_title(title)
    if integer:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if drawn:
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=9, ncol=2, title="process (events)", title_fontsize=9)
    else:
        ax.set_xlim(bins[0], bins[-1])
        ax.text(0.5, 0.5, "no events with these objects", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)
    plt.close(fig)


def validation_plots(objects_by_process: dict[str, np.ndarray], out: str | Path) -> list[Path]:
    """Write the inspection plots (multiplicities, leading pT/eta, dilepton/diphoton mass, MET) to ``out``."""
    plt = _pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def plot(name, samples, bins, xlabel, title, **kw):
        path = out / f"{name}.png"
        _overlay(plt, samples, bins, xlabel, title, path, **kw)
        written.append(path)

    ints = np.arange(-0.5, 15.5, 1.0)
    for kind in val.MULTIPLICITY_KINDS:
        plot(f"n_{kind}", {p: val.multiplicity(o, kind).astype(float) for p, o in objects_by_process.items()},
             ints, f"number of {kind}s", f"{kind} multiplicity", integer=True)
    plot("n_btag", {p: val.n_btags(o).astype(float) for p, o in objects_by_process.items()},
         np.arange(-0.5, 8.5, 1.0), "number of b-tagged jets", "b-tag multiplicity", integer=True)
    for kind, pt_max in (("jet", 500.0), ("electron", 300.0), ("muon", 300.0), ("photon", 300.0)):
        lead = {p: val.nth_object(o, kind) for p, o in objects_by_process.items()}
        plot(f"leading_{kind}_pt", {p: np.where(h, r[:, _PT], np.nan) for p, (r, h) in lead.items()},
             np.linspace(0, pt_max, 51), f"leading {kind} $p_T$ [GeV]", f"leading {kind} $p_T$", logy=True)
        plot(f"leading_{kind}_eta", {p: np.where(h, r[:, _ETA], np.nan) for p, (r, h) in lead.items()},
             np.linspace(-3, 3, 49), f"leading {kind} $\\eta$", f"leading {kind} $\\eta$")
    plot("met", {p: val.met(o) for p, o in objects_by_process.items()}, np.linspace(0, 400, 51),
         "$E_T^{miss}$ [GeV]", "missing transverse energy", logy=True)
    plot("dilepton_mass", {p: val.dilepton_mass(o) for p, o in objects_by_process.items()},
         np.linspace(20, 200, 61), "$m_{\\ell\\ell}$ [GeV] (leading OS same-flavour pair)", "dilepton mass")
    plot("diphoton_mass", {p: val.diphoton_mass(o) for p, o in objects_by_process.items()},
         np.linspace(50, 200, 61), "$m_{\\gamma\\gamma}$ [GeV] (two leading photons)", "diphoton mass")
    return written


def cka_heatmap(mean: np.ndarray, std: np.ndarray, names: list[str], path: str | Path,
                title: str = "CKA of the latent representation") -> Path:
    """Heatmap of a cross-model CKA matrix (e.g. from ``cka.cross_model_cka``), cells labelled mean ± std."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    size = max(4.0, 1.3 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(np.ma.masked_invalid(mean), vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.grid(False)
    for i in range(len(names)):
        for j in range(len(names)):
            text = "n/a" if np.isnan(mean[i, j]) else f"{mean[i, j]:.2f}\n± {std[i, j]:.2f}"
            colour = "black" if np.isfinite(mean[i, j]) and mean[i, j] > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color=colour)
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
    return path


def roc_plot(curves: dict[str, tuple], path: str | Path, title: str) -> Path:
    """ROC curves, one per entry ``name -> (fpr, tpr, auc)``, with the AUC in the legend."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{name} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1.0, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("background efficiency (false positive rate)")
    ax.set_ylabel("signal efficiency (true positive rate)")
    ax.set_title(title)
    ax.legend(fontsize=9, loc="lower right")
    _save(fig, path)
    plt.close(fig)
    return path


def _log_x_errorbars(series: dict[str, list[tuple]], path: str | Path, xlabel: str, ylabel: str, title: str,
                     scale: float = 1.0, zero_line: bool = False) -> Path:
    """One line with error bars per ``name -> [(x, y, err), ...]`` (sorted by x), log x axis."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots()
    for name, points in series.items():
        x, y, err = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
        ax.errorbar(x, scale * y, yerr=scale * err, marker="o", capsize=3, linewidth=1.6, label=name)
    if zero_line:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=9)
    _save(fig, path)
    plt.close(fig)
    return path


def metric_vs_size(series: dict[str, list[tuple]], path: str | Path, metric: str, task: str) -> Path:
    """A metric against training size (log x), one line per strategy: ``name -> [(size, mean, std), ...]``."""
    return _log_x_errorbars(series, path, "training events per class",
                            {"accuracy": "test accuracy", "auc": "test ROC AUC"}.get(metric, metric),
                            f"{task}: {metric} vs training size (mean ± std over seeds)")


def gain_vs_pretraining_size(series: dict[str, list[tuple]], path: str | Path, metric: str, title: str) -> Path:
    """Gain over the scratch baseline against pretraining events (log x): ``strategy -> [(n, gain, err), ...]``."""
    return _log_x_errorbars(series, path, "pretraining events",
                            f"{'accuracy' if metric == 'accuracy' else 'ROC AUC'} gain over scratch (points)",
                            f"{title}: gain vs pretraining size (± seed and test error)", scale=100.0,
                            zero_line=True)
