"""Event simulation: Pythia 8 events (a catalog process, or an LHE file showered by Pythia) -> detector ->
truth labels, batch by batch.

This is where hepfm simulates collisions: it builds and checks Pythia instances, draws generator events
(one instance, or two mixed event by event for a process with two decay configurations), and turns each
batch into detector-level objects (:mod:`hepfm.physics.detector`) with their truth labels
(:mod:`hepfm.physics.truth`). It writes nothing: the generation job that plans shards, seeds them and
writes them into an event store is :mod:`hepfm.io.generate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from hepfm.errors import HepfmError
from hepfm.physics.detector import DetectorConfig, reconstruct
from hepfm.physics.record import FlatRecord
from hepfm.physics.truth import heavy_kinematics, jet_flavours, object_origins, truth_labels


def _new_pythia():
    try:
        import pythia8mc
    except ImportError:
        raise HepfmError("event generation needs Pythia 8: pip install 'hepfm[gen]'") from None
    return pythia8mc.Pythia("", False)


_FLAG_VALUES = {"on", "off", "true", "false", "yes", "no", "1", "0"}
# Pythia reads a line that does not start with a letter or digit as a comment and ignores it.
_SETTING = re.compile(r"^\s*[A-Za-z0-9][^=]*=\s*\S")


def _read_settings(pythia, settings: Sequence[str], where: str) -> None:
    for s in settings:
        if not _SETTING.match(s):
            raise HepfmError(f"{where}: {s!r} is not a Pythia setting of the form 'Key = value'")
        key, _, value = s.partition("=")
        # Pythia silently reads an unrecognised flag value as "off"; treat it as the error it is.
        if value and pythia.settings.isFlag(key.strip()) and value.strip().lower() not in _FLAG_VALUES:
            raise HepfmError(f"{where}: Pythia rejected the setting {s!r} (a flag takes on/off)")
        if not pythia.readString(s):
            raise HepfmError(f"{where}: Pythia rejected the setting {s!r}")


def check_settings(settings: Sequence[str], where: str) -> None:
    """Check that Pythia accepts every one of ``settings`` (cheap: no initialisation)."""
    _read_settings(_new_pythia(), settings, where)


def make_pythia(settings: Sequence[str], where: str):
    """An initialised Pythia instance; a rejected setting or failed init raises HepfmError."""
    pythia = _new_pythia()
    _read_settings(pythia, settings, where)
    if not pythia.init():
        raise HepfmError(f"{where}: Pythia initialisation failed (check the settings or the input file)")
    return pythia


class EventSource:
    """Batches of generator events: one Pythia instance, or two mixed event by event.

    ``settings`` holds one settings list, or two for a mixture (each event then comes from either
    instance with probability 1/2, drawn from a stream seeded by ``seed``, independent of Pythia's and the
    detector's). ``lhe``: the events come from an LHE file, which may run out.
    """

    def __init__(self, settings: Sequence[Sequence[str]], seed: int, where: str, lhe: bool = False):
        self.where = where
        self.lhe = lhe
        if len(settings) == 2:
            self.instances = [make_pythia(s, f"{where} (instance {k})") for k, s in enumerate(settings)]
        else:
            self.instances = [make_pythia(settings[0], where)]
        self.choice_rng = np.random.default_rng([seed, 2])

    def next_batch(self, n: int):
        """Up to ``n`` events as (record, weights); a mixture draws each event's instance at random."""
        import awkward as ak

        if len(self.instances) == 1:
            parts, order = [self.instances[0].nextBatch(n)], None
        else:
            from_second = self.choice_rng.random(n) < 0.5
            parts, slots = [], []
            for pythia, chosen in zip(self.instances, (~from_second, from_second), strict=True):
                if chosen.any():  # nextBatch(0) returns records without field names: never ask for none
                    parts.append(pythia.nextBatch(int(chosen.sum())))
                    # Put each instance's events back at the positions drawn for it (fewer if Pythia fell short).
                    slots.append(np.flatnonzero(chosen)[:len(parts[-1])])
            order = np.argsort(np.concatenate(slots), kind="stable")
        prt = ak.concatenate([b.prt for b in parts]) if len(parts) > 1 else parts[0].prt
        weights = np.concatenate([ak.to_numpy(ak.fill_none(ak.firsts(b.info.weights), 1.0)) for b in parts])
        if order is not None:
            prt, weights = prt[order], weights[order]
        if len(weights) == 0 and not self.lhe:
            raise HepfmError(f"{self.where}: Pythia produced no events (too many errors?)")
        return FlatRecord.from_batch(prt), weights.astype(np.float32)

    def cross_section(self) -> tuple[float, float, list[float]]:
        """Cross section of the whole sample in pb (the sum over instances), its error and each instance's."""
        infos = [p.infoPython() for p in self.instances]
        parts = [i.sigmaGen() * 1e9 for i in infos]
        err = float(np.sqrt(sum((i.sigmaErr() * 1e9) ** 2 for i in infos)))
        return float(sum(parts)), err, parts

    def generator_version(self) -> str:
        """The Pythia version number, e.g. ``"8.317"``."""
        return f"{self.instances[0].settings.parm('Pythia:versionNumber'):.3f}"


def simulate(events: EventSource, n_events: int, first_event: int, detector: DetectorConfig,
             rng: np.random.Generator, constituents: int = 0, batch_events: int = 250,
             progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Up to ``n_events`` events of ``events`` through the detector, in batches of ``batch_events``: the store's
    per-event arrays (objects, counts, truth, object origins, heavy-particle kinematics, weights, event ids from
    ``first_event``; with ``constituents`` K > 0 also the jets' constituents and flavours). Fewer events when an
    LHE file runs out; none: {}.

    ``rng`` drives the detector response; ``progress`` is called with each batch's event count.
    """
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    while done < n_events:
        record, weights = events.next_batch(min(batch_events, n_events - done))
        n = record.n_events
        if n == 0:
            break  # end of the LHE file
        reco = reconstruct(record, detector, rng, constituents=constituents)
        parts.append({
            "objects": reco.objects,
            "n_objects": reco.n_objects,
            "n_dropped": reco.n_dropped,
            "truth": truth_labels(record),
            "origin": object_origins(record, reco.objects, reco.record_rows, detector.jet_radius),
            "heavy": heavy_kinematics(record),
            "weight": weights,
            "event_id": np.arange(first_event + done, first_event + done + n, dtype=np.int64),
        })
        if constituents:
            parts[-1].update(constituents=reco.constituents, n_constituents=reco.n_constituents,
                             jet_flavour=jet_flavours(record, reco.objects, detector.jet_radius))
        done += n
        if progress is not None:
            progress(n)
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
