"""The wide pretraining set: the 12 original processes plus extras, every downstream signal kept out."""

import re

import numpy as np
import pytest
from cli_runner import hepfm, one_line_error

from hepfm.physics import processes as catalog
from hepfm.physics import validation as val
from hepfm.physics.processes import DOWNSTREAM, PRETRAINING, PRETRAINING_WIDE, PROCESSES, expand_names

ORIGINAL_12 = ("ggf_h", "vbf_h", "wh", "zh", "tth", "ttbar", "top_tchan", "top_schan", "wjets", "zjets", "diboson",
               "qcd")
EXTRA = ("ww_lvlv", "wz_lvll", "zz_llll", "znunu_jets", "gamma_jets", "ggf_h_tautau", "ggf_h_yy", "zprime3tev_tt",
         "wprime3tev_tb", "gluino_qqchi")
#: The signals of the downstream tasks (Table I): none of them may enter pretraining.
DOWNSTREAM_SIGNALS = ("zprime_tt", "hplus_tb", "x_hh_4b", "stop_t2t1h", "fcnc_thq", "tth_yy")
#: Every heavy particle of the wide set is at least this factor (larger over smaller) away from every downstream one.
MASS_MARGIN = 1.5


def heavy_masses(process) -> dict[int, float]:
    """PDG id -> mass of the heavy particles a process sets: `id:m0` settings and SLHA states that decay."""
    masses = {int(m[1]): float(m[2]) for s in process.settings if (m := re.fullmatch(r"(\d+):m0 = ([\d.]+)", s))}
    if process.slha is not None:
        text = catalog.slha_path(process.slha).read_text()
        block = text.upper().split("BLOCK MASS")[1].split("BLOCK")[0]
        spectrum = {int(a): float(b) for a, b in re.findall(r"^\s+(\d+)\s+(-?[\d.E+-]+)", block, re.M)}
        for pid, width in re.findall(r"^DECAY\s+(\d+)\s+([\d.E+-]+)", text, re.M):
            if float(width) > 0:
                masses[int(pid)] = abs(spectrum[int(pid)])
    return masses


def mass_windows(process) -> list[tuple[float, float]]:
    """(mMin, mMax) of every particle whose line shape a process cuts to a window."""
    values = {m[1] + m[2]: float(m[3]) for s in process.settings
              if (m := re.fullmatch(r"(\d+):(mMin|mMax) = ([\d.]+)", s))}
    return [(values[f"{pid}mMin"], values[f"{pid}mMax"]) for pid in {k[:-4] for k in values}
            if f"{pid}mMin" in values and f"{pid}mMax" in values]


def test_the_original_twelve_stay_as_they_are():
    assert PRETRAINING == ORIGINAL_12
    assert expand_names(["pretrain"]) == list(ORIGINAL_12)
    assert len(expand_names(["all"])) == 18 and not set(EXTRA) & set(expand_names(["all"]))
    assert {PROCESSES[n].role for n in ORIGINAL_12} == {"pretrain"}


def test_the_wide_set_is_the_twelve_plus_the_extras():
    assert PRETRAINING_WIDE == ORIGINAL_12 + EXTRA and len(PRETRAINING_WIDE) >= 20
    assert expand_names(["pretrain-wide"]) == list(PRETRAINING_WIDE)
    assert {PROCESSES[n].role for n in EXTRA} == {"pretrain-extra"}
    assert {p.role for p in PROCESSES.values()} == {"pretrain", "pretrain-extra", "downstream"}


def test_processes_command_lists_the_extras_by_role():
    r = hepfm("processes", "--role", "pretrain-extra", "--no-settings")
    assert r.returncode == 0, r.stderr
    listed = {line.split()[1] for line in r.stdout.splitlines() if len(line.split()) > 1}
    assert set(EXTRA) <= listed and not listed & set(ORIGINAL_12 + DOWNSTREAM)
    one_line_error(hepfm("processes", "--role", "wide"), "--role must be")


def test_a_study_can_pretrain_on_the_wide_set():
    from hepfm.study.config import parse_config

    raw = {"tasks": ["wh_vs_zh"], "sizes": [1000]}
    assert parse_config(raw).pretrain_processes == list(ORIGINAL_12)
    wide = parse_config({**raw, "generation": {"pretrain_processes": ["pretrain-wide", "ttbar"]}})
    assert wide.pretrain_processes == list(PRETRAINING_WIDE)


def test_every_downstream_signal_is_kept_out():
    assert set(DOWNSTREAM_SIGNALS) <= set(DOWNSTREAM)
    assert not set(DOWNSTREAM) & set(PRETRAINING_WIDE)
    for name in PRETRAINING_WIDE:
        mine = PROCESSES[name]
        for other in map(PROCESSES.get, DOWNSTREAM):
            assert (set(mine.settings), mine.slha) != (set(other.settings), other.slha), (name, other.name)


def production_switches(process) -> set[str]:
    """The process switches ('Group:a2b = on') among a process's settings."""
    return {s for s in process.settings if re.fullmatch(r"\w+:\S*2\S* = on", s)}


def test_extras_share_a_downstream_production_only_at_another_mass():
    """An extra may use a downstream signal's production only with the resonance's mass moved by the margin."""
    shared = []
    for name in EXTRA:
        mine = PROCESSES[name]
        for other in map(PROCESSES.get, DOWNSTREAM):
            if production_switches(other) <= production_switches(mine):
                shared.append((name, other.name))
                theirs, ours = heavy_masses(other), heavy_masses(mine)
                assert any(max(ours[p], theirs[p]) / min(ours[p], theirs[p]) >= MASS_MARGIN
                           for p in set(ours) & set(theirs)), (name, other.name)
    assert shared == [("zprime3tev_tt", "zprime_tt")]


def test_resonance_masses_are_far_from_the_downstream_ones():
    downstream = {m for n in DOWNSTREAM for m in heavy_masses(PROCESSES[n]).values()}
    assert {400.0, 500.0, 582.0, 1500.0} <= downstream
    windows = [w for n in DOWNSTREAM for w in mass_windows(PROCESSES[n])]
    assert (1000.0, 2000.0) in windows
    extra_masses = {n: heavy_masses(PROCESSES[n]) for n in EXTRA}
    assert extra_masses["zprime3tev_tt"] == {32: 3000.0} and extra_masses["wprime3tev_tb"] == {34: 3000.0}
    assert extra_masses["gluino_qqchi"] == {1000021: 900.0}
    for name, masses in extra_masses.items():
        for m in masses.values():
            for d in downstream:
                assert max(m, d) / min(m, d) >= MASS_MARGIN, (name, m, d)
            assert not any(lo <= m <= hi for lo, hi in windows), (name, m)
        for lo, hi in mass_windows(PROCESSES[name]):
            assert not any(lo <= d <= hi for d in downstream), (name, lo, hi)


# --- generation: one small sample per extra process, shared by the checks below -----------------------

N_EVENTS = 40


@pytest.fixture(scope="module")
def wide_sample(tmp_path_factory):
    """Per extra process: (objects, truth by label name) of a 40-event sample."""
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate
    from hepfm.io.store import EventStore
    from hepfm.physics.truth import LABEL_NAMES

    out = tmp_path_factory.mktemp("wide") / "store"
    generate([catalog_source(n) for n in EXTRA], out, events=N_EVENTS, seed=5, workers=2, progress=False)
    store = EventStore(out)
    sample = {}
    for name in EXTRA:
        data = store.arrays(processes=[name])
        sample[name] = (data["objects"], dict(zip(LABEL_NAMES, data["truth"].T, strict=True)))
    return sample


# (n_higgs, n_tops, n_W, n_Z) every event must have
EXPECTED_TRUTH = {
    "ww_lvlv": (0, 0, 2, 0), "wz_lvll": (0, 0, 1, 1), "zz_llll": (0, 0, 0, 2), "znunu_jets": (0, 0, 0, 1),
    "gamma_jets": (0, 0, 0, 0), "ggf_h_tautau": (1, 0, 0, 0), "ggf_h_yy": (1, 0, 0, 0),
    "zprime3tev_tt": (0, 2, 2, 0), "wprime3tev_tb": (0, 1, 1, 0), "gluino_qqchi": (0, 0, 0, 0),
}


@pytest.mark.pythia
@pytest.mark.parametrize("name", EXTRA)
def test_extra_process_generates_its_heavy_particles(wide_sample, name):
    objects, truth = wide_sample[name]
    assert len(objects) == N_EVENTS
    for label, n in zip(("n_higgs", "n_tops", "n_W", "n_Z"), EXPECTED_TRUTH[name], strict=True):
        assert np.all(truth[label] == n), (label, np.unique(truth[label]))


@pytest.mark.pythia
def test_higgs_to_photons_peaks_at_125(wide_sample):
    masses = val.diphoton_mass(wide_sample["ggf_h_yy"][0])
    masses = masses[np.isfinite(masses)]
    assert len(masses) >= N_EVENTS // 3
    assert abs(np.median(masses) - 125.0) < 3.0


@pytest.mark.pythia
def test_z_to_neutrinos_has_large_met_and_no_leptons(wide_sample):
    objects = wide_sample["znunu_jets"][0]
    assert np.median(val.met(objects)) > 50.0
    assert val.n_leptons(objects).sum() <= 2
    assert np.median(val.met(objects)) > 5 * np.median(val.met(wide_sample["gamma_jets"][0]))


@pytest.mark.pythia
def test_prompt_photon_has_a_hard_leading_photon(wide_sample):
    rows, present = val.nth_object(wide_sample["gamma_jets"][0], "photon")
    assert present.mean() > 0.4 and np.median(rows[present, 0]) > 40.0  # feature 0: pT


@pytest.mark.pythia
def test_diboson_lepton_multiplicities_follow_the_forced_decays(wide_sample):
    """Prompt e/mu: at most 2 in WW, 3 in WZ, 4 in ZZ (tau -> l decays included), each maximum reached."""
    most = {n: val.n_leptons(wide_sample[n][0]).max() for n in ("ww_lvlv", "wz_lvll", "zz_llll")}
    assert most == {"ww_lvlv": 2, "wz_lvll": 3, "zz_llll": 4}
    pairs = {n: np.isfinite(val.dilepton_mass(wide_sample[n][0])).sum() for n in ("ww_lvlv", "zz_llll")}
    assert pairs["zz_llll"] > 2 * pairs["ww_lvlv"]  # same-flavour opposite-charge pairs


@pytest.mark.pythia
def test_heavy_resonances_give_boosted_tops(wide_sample):
    for name in ("zprime3tev_tt", "wprime3tev_tb"):
        assert wide_sample[name][1]["top1_pt_300_inf"].mean() > 0.8, name


@pytest.mark.pythia
def test_gluinos_give_many_jets_and_large_met(wide_sample):
    objects = wide_sample["gluino_qqchi"][0]
    assert np.median(val.multiplicity(objects, "jet")) >= 4 and np.median(val.met(objects)) > 150.0
