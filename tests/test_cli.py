"""The command line as a user meets it: listings, a small run, and clear errors on bad input."""

import subprocess
import sys

import pytest
from cli_runner import hepfm, one_line_error

from hepfm.physics.processes import DOWNSTREAM, PRETRAINING, PROCESSES


def test_processes_lists_the_catalog():
    assert len(PRETRAINING) == 12 and len(DOWNSTREAM) == 6
    assert set(PRETRAINING) == {"ggf_h", "vbf_h", "wh", "zh", "tth", "ttbar", "top_tchan", "top_schan", "wjets",
                                "zjets", "diboson", "qcd"}
    assert set(DOWNSTREAM) == {"tth_yy", "stop_t2t1h", "fcnc_thq", "hplus_tb", "zprime_tt", "x_hh_4b"}
    r = hepfm("processes")
    assert r.returncode == 0, r.stderr
    for name in PROCESSES:
        assert name in r.stdout
    assert "HiggsSM:gg2Httbar = on" in r.stdout


def test_process_groups_expand():
    from hepfm.errors import HepfmError
    from hepfm.physics.processes import expand_names

    assert expand_names(["pretrain"]) == list(PRETRAINING)
    assert expand_names(["tth", "all"])[:2] == ["tth", "ggf_h"] and len(expand_names(["all"])) == 18
    with pytest.raises(HepfmError, match="unknown process 'nope'"):
        expand_names(["downstream", "nope"])


def test_shipped_slha_spectrum_is_installed():
    from hepfm.physics.processes import slha_path

    text = slha_path("stop_t2t1h.slha").read_text()
    assert "2000006" in text and "BLOCK MASS" in text.upper()




@pytest.mark.parametrize("args, fragments", [
    (["generate", "tth", "hbb_magic", "-n", "10"], ["unknown process 'hbb_magic'"]),
    (["generate", "tth", "-n", "0"], ["number of events must be positive"]),
    (["generate", "tth", "-n", "-5"], ["number of events must be positive"]),
    (["generate", "tth", "-n", "10", "--set", "HiggsSM:gg2Hbanana = on"], ["Pythia rejected the setting",
                                                                           "gg2Hbanana"]),
    (["generate", "tth", "-n", "10", "--set", "[foo] = 1"], ["'[foo] = 1' is not a Pythia setting"]),
    (["generate", "tth", "-n", "10", "--set", "HiggsSM:gg2H = maybe"], ["HiggsSM:gg2H = maybe", "on/off"]),
    (["generate", "--lhe", "/nonexistent/file.lhe", "--label", "x"], ["/nonexistent/file.lhe", "no such LHE file"]),
])
def test_bad_input_gives_one_line_and_no_output(tmp_path, args, fragments):
    out = tmp_path / "out"
    one_line_error(hepfm(*args, "--out", out), *fragments)
    assert not out.exists()


def test_truncated_and_non_lhe_files(tmp_path, shared_data):
    text = (shared_data / "pylhe-testfile-pythia-6.413-ttbar.lhe").read_text()
    truncated = tmp_path / "cut.lhe"
    truncated.write_text(text[: len(text) // 2])
    out = tmp_path / "out"
    one_line_error(hepfm("generate", "--lhe", truncated, "--label", "x", "--out", out), "cut.lhe", "truncated")
    notlhe = tmp_path / "notes.lhe"
    notlhe.write_text("hello\nworld\n")
    one_line_error(hepfm("generate", "--lhe", notlhe, "--label", "x", "--out", out), "notes.lhe",
                   "not a Les Houches Event file")
    assert not out.exists()


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(hepfm("generate", "ttbar", "-n", "5", "--out", blocker), "exists and is not a folder")
    one_line_error(hepfm("generate", "ttbar", "-n", "5", "--out", blocker / "sub"), "cannot create output folder")
    assert blocker.read_text() == "x"


@pytest.mark.pythia
def test_generate_and_inspect_end_to_end(tmp_path):
    pytest.importorskip("pythia8mc")
    out = tmp_path / "store"
    r = hepfm("generate", "ttbar", "zjets", "-n", "40", "--out", out, "--seed", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.json").exists() and (out / "ttbar" / "shard-00000.h5").exists()
    r = hepfm("inspect", out, "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    assert "ttbar" in r.stdout and "zjets" in r.stdout
    for name in ("n_jet", "n_btag", "leading_jet_pt", "leading_electron_eta", "dilepton_mass", "diphoton_mass",
                 "met"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    r = hepfm("generate", "ttbar", "-n", "40", "--out", out, "--seed", "3", "--no-progress")
    assert r.returncode == 0 and "skipped 1 complete shard" in r.stdout
    one_line_error(hepfm("inspect", tmp_path / "nothing"), "no such event store")


@pytest.mark.pythia
@pytest.mark.parametrize("workers", [1, 2])
def test_terminated_run_leaves_no_shard_and_no_workers(tmp_path, workers):
    """A batch system's SIGTERM mid-run: non-zero exit, no shard that looks complete, no temp files."""
    import signal
    import time

    pytest.importorskip("pythia8mc")
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "hepfm", "generate", "ttbar", "zjets", "-n", "5000", "--out",
                             str(out), "-j", str(workers), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Signal once the run has started writing (its handler is installed by then), not after a fixed wait:
    # on a loaded machine the imports alone can take longer than any fixed wait.
    deadline = time.monotonic() + 180
    while proc.poll() is None and not (out.exists() and any(out.rglob("*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert not list(out.rglob("shard-*.h5")) and not list(out.rglob("*.tmp"))


def test_detector_config_roundtrip(tmp_path):
    """The printed default configuration, edited, is accepted by --detector-config."""
    import json

    from hepfm.physics.detector import DetectorConfig

    r = hepfm("detector-config")
    assert r.returncode == 0, r.stderr
    values = json.loads(r.stdout)
    assert values == DetectorConfig().to_dict()
    values["jet_pt_min"] = 30.0
    path = tmp_path / "det.json"
    path.write_text(json.dumps(values))
    assert DetectorConfig.from_file(path).jet_pt_min == 30.0


def test_a_bug_keeps_its_traceback_and_bad_settings_are_one_line_errors(monkeypatch, tmp_path):
    """Only HepfmError (bad input) becomes exit code 2; a ValueError from a bug propagates."""
    from hepfm import cli
    from hepfm.errors import ConfigurationError, HepfmError
    from hepfm.models.registry import create_model

    with pytest.raises(ConfigurationError) as info:
        create_model("graphnet", 2, aggregation="max")
    assert isinstance(info.value, ValueError) and isinstance(info.value, HepfmError)

    def buggy(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr("hepfm.train.workflows.pretrain", buggy)
    with pytest.raises(ValueError, match="an internal bug"):  # the previous CLI turned it into exit code 2
        cli.main(["pretrain", "--data", str(tmp_path / "no-store"), "--out", str(tmp_path / "never-written")])
