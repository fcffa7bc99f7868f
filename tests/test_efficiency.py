import math

import pytest

from hepfm.study import efficiency as eff


def _history(accs, epoch_s=10.0, best=None):
    rows = [{"epoch": i, "wall_time_s": epoch_s * (i + 1), "val_accuracy": a} for i, a in enumerate(accs)]
    if best is not None:
        for row, flag in zip(rows, best, strict=True):
            row["best"] = flag
    return rows


def test_time_to_reach_first_epoch_no_interpolation():
    h = _history([0.60, 0.70, 0.80, 0.79, 0.81])
    assert eff.time_to_reach(h, 0.75) == 30.0
    assert eff.time_to_reach(h, 0.80) == 30.0  # >= target
    assert eff.time_to_reach(h, 0.55) == 10.0
    assert eff.time_to_reach(h, 0.90) is None
    assert eff.time_to_reach(list(reversed(h)), 0.75) == 30.0  # rows are ordered by epoch


def test_final_accuracy_best_flag_or_max():
    assert eff.final_accuracy(_history([0.6, 0.8, 0.7])) == 0.8
    # The restored checkpoint (last flagged) need not be the most accurate epoch.
    flagged = _history([0.6, 0.8, 0.78, 0.7], best=[1, 1, 1, 0])
    assert eff.final_accuracy(flagged) == 0.78
    assert eff.final_accuracy(_history([0.6, 0.8], best=["True", "False"])) == 0.6
    assert eff.final_accuracy(_history([0.6, 0.8], best=[0, 0])) == 0.8  # nothing flagged: max
    assert eff.final_accuracy(flagged, best_epoch=1) == 0.8  # explicit best epoch wins
    with pytest.raises(ValueError, match="best_epoch"):
        eff.final_accuracy(flagged, best_epoch=9)


def test_break_even_tasks():
    assert eff.break_even_tasks(10.0, [3.0, 5.0], [1.0, 2.0]) == 4  # saving 2.5 per task -> 4 tasks
    assert eff.break_even_tasks(10.0, [3.0], [1.0]) == 5  # exactly even after 5
    assert eff.break_even_tasks(10.0, [3.0], [3.0]) == math.inf
    assert eff.break_even_tasks(10.0, [2.0], [3.0]) == math.inf
    # The paper's averages: 45.5 GPU h pretraining, 2.94 GPU h baseline, fine-tuning at 38% of it.
    assert eff.break_even_tasks(45.5, [2.94], [0.38 * 2.94]) == 25
    with pytest.raises(ValueError):
        eff.break_even_tasks(-1.0, [1.0], [0.5])
    with pytest.raises(ValueError):
        eff.break_even_tasks(1.0, [], [0.5])


def test_read_history_csv(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,wall_time_s,train_loss,val_loss,val_accuracy,lr,best\n"
        "0,12.5,0.69,0.68,0.55,1e-4,1\n"
        "1,25.0,0.60,0.61,0.66,9.9e-5,1\n"
        "2,37.5,0.55,0.62,0.67,9.8e-5,0\n"
        "3,50.0,0.50,,0.65,9.7e-5,0\n"
    )
    h = eff.read_history(path)
    assert len(h) == 4 and h[0]["epoch"] == 0 and h[1]["wall_time_s"] == 25.0 and h[3]["val_loss"] is None
    assert eff.final_accuracy(h) == 0.66
    assert eff.total_time(h) == 50.0
    assert eff.time_to_reach(h, 0.6) == 25.0


def test_bad_histories(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n")
    with pytest.raises(ValueError, match="wall_time_s"):
        eff.read_history(path)
    with pytest.raises(ValueError, match="empty"):
        eff.time_to_reach([], 0.5)
    with pytest.raises(ValueError, match="cumulative"):
        eff.total_time([{"epoch": 0, "wall_time_s": 10.0, "val_accuracy": 0.5},
                        {"epoch": 1, "wall_time_s": 5.0, "val_accuracy": 0.6}])
    with pytest.raises(ValueError, match="val_accuracy"):
        eff.final_accuracy([{"epoch": 0, "wall_time_s": 1.0}])


def _run(accs, steps_per_epoch=10, n_train=1000, best_epoch=None, n_val=500):
    rows = [{"epoch": i + 1, "wall_time_s": 2.0 * (i + 1), "val_accuracy": a} for i, a in enumerate(accs)]
    best = best_epoch or 1 + max(range(len(accs)), key=lambda i: accs[i])
    return {"history": rows, "best_epoch": best, "steps_per_epoch": steps_per_epoch, "n_train": n_train,
            "n_val": n_val}


def test_fair_efficiency_counts_steps_to_the_baselines_first_arrival_not_its_patience_epochs():
    # The baseline first reaches its final 0.80 at epoch 4, then runs 5 patience epochs (9 in all).
    base = _run([0.6, 0.7, 0.75, 0.80, 0.79, 0.78, 0.80, 0.77, 0.76], best_epoch=4)
    ft = _run([0.78, 0.795, 0.81], steps_per_epoch=10, n_train=1000)  # 0.99 x 0.80 = 0.792: epoch 2
    r = eff.fair_efficiency(base, ft)
    assert r["baseline_epoch"] == 4 and r["baseline_steps"] == 40 and r["baseline_events"] == 4000
    assert r["steps"] == 20 and r["step_fraction"] == pytest.approx(0.5)  # not 20 / 90 (total training)
    assert r["time_fraction"] == pytest.approx(4.0 / 8.0)
    assert r["reached"] and not r["meaningless"]
    # Different batch sizes: steps differ from epochs.
    r = eff.fair_efficiency(base, _run([0.78, 0.795], steps_per_epoch=40))
    assert r["step_fraction"] == pytest.approx(2.0)


def test_fair_efficiency_not_reached_and_chance_level():
    base = _run([0.6, 0.8, 0.79], best_epoch=2)
    r = eff.fair_efficiency(base, _run([0.5, 0.6, 0.7]))
    assert not r["reached"] and r["step_fraction"] is None
    chance = _run([0.50, 0.51, 0.505], best_epoch=2, n_val=500)  # 0.51 is within 2 errors (0.045) of 0.5
    assert eff.fair_efficiency(chance, _run([0.6]))["meaningless"]
    assert not eff.fair_efficiency(_run([0.56], n_val=5000), _run([0.6]))["meaningless"]


def test_baseline_events_are_read_off_the_curve_in_log_size():
    from hepfm.study.efficiency import baseline_events_for

    sizes, curve = [100, 1000, 10000], [0.60, 0.70, 0.80]
    kind, n = baseline_events_for(sizes, curve, 0.75)
    assert kind == "=" and math.isclose(n, math.sqrt(1000 * 10000))  # halfway in accuracy = geometric mean
    assert baseline_events_for(sizes, curve, 0.70) == ("=", pytest.approx(1000))
    assert baseline_events_for(sizes, curve, 0.55) == ("<=", 100)
    assert baseline_events_for(sizes, curve, 0.81) == (">", 10000)
    # a dip (seed noise) does not make the baseline need fewer events for a higher accuracy
    assert baseline_events_for([100, 1000, 10000], [0.6, 0.75, 0.70], 0.72)[1] < 1000
    assert baseline_events_for([100, 1000, 10000], [0.6, 0.75, 0.70], 0.76) == (">", 10000)


def test_data_efficiency_gives_the_fewer_events_ratio_with_its_range():
    from hepfm.study.config import parse_config
    from hepfm.study.report import data_efficiency

    cfg = parse_config({"tasks": ["hplus_vs_ttbar"], "sizes": [100, 1000, 10000], "seeds": 2, "test_size": 1000,
                        "strategies": ["scratch", "finetune_multiclass"], "pretrain": {"lr": 1e-4},
                        "generation": {"downstream_events": 40000}})
    acc = {("scratch", 100): 0.60, ("scratch", 1000): 0.70, ("scratch", 10000): 0.80,
           ("finetune_multiclass", 100): 0.70, ("finetune_multiclass", 1000): 0.75,
           ("finetune_multiclass", 10000): 0.90}
    rows = [{"task": "hplus_vs_ttbar", "size": n, "strategy": s, "seed": k, "accuracy": a + (0.01 if k else -0.01),
             "n_test": 2000} for (s, n), a in acc.items() for k in (0, 1)]
    table = {(r["size"]): r for r in data_efficiency(cfg, rows)}
    assert set(table) == {100, 1000, 10000}  # the baseline itself is not listed
    assert table[100]["ratio"] == pytest.approx(10.0)  # 0.70 at 100 events: the baseline needs 1000
    assert table[100]["ratio_low"] < 10.0 < table[100]["ratio_high"]
    assert table[1000]["ratio"] == pytest.approx(math.sqrt(10))
    assert table[10000]["bound"] == ">" and table[10000]["ratio"] == 1.0  # beyond the curve: a lower bound
