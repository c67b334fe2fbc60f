"""Read studies back from MLflow (the single source of truth) into one pandas table of finished trials.

``load_runs`` resolves study and experiment names (with "did you mean" errors), collects every study's
parent run and its nested trial runs, and keeps the trials Optuna finished (``optuna.trial_state=COMPLETE``).
Metric histories and artifacts are fetched lazily through ``ReportData`` so a large study stays cheap.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from benchmark.core import tracking
from benchmark.core.errors import UserError
from benchmark.core.registry import suggest
from benchmark.core.tracking import (
    EXPERIMENT_PREFIX,
    KIND_STUDY,
    KIND_TRIAL,
    METRICS,
    REPORTS_EXPERIMENT,
    TAG_KIND,
    TAG_PARENT,
    TAG_PRESET,
    TAG_STATE,
    TAG_STUDY,
    TAG_SWEEP_MODEL,
    TAG_TRIAL,
    client,
)
from studies.choice.candidates import unit_scores, unit_source
from studies.trials.presets import BASELINE

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from benchmark.core.config import BenchConfig

log = logging.getLogger(__name__)

PERF = (
    tracking.PERF_INFER_GFLOPS,
    tracking.PERF_INFER_MS,
    tracking.PERF_FUSED_DIM,
    tracking.PERF_FEATURE_BYTES,
    tracking.PERF_EXTRACT_MS_PER_SAMPLE,
    tracking.PERF_HEAD_MS_PER_SAMPLE,
)  # Sec. 5.4
COMPLETE, PRUNED = "COMPLETE", "PRUNED"


@dataclass
class ReportData:
    """Finished trials of the selected studies plus lazy access to their histories and artifacts.

    Attributes:
        trials: One row per COMPLETE trial run of the neural presets (columns: see ``_trial_row``).
        baselines: The same rows for the lexical baseline (``tfidf-baseline`` preset; extra columns
            ``classifier`` and ``C``); reports compare every table against them.
        pruned: The same rows for PRUNED trials that reported validation accuracy before they were cut
            (``val/acc`` is the last value reported, nothing else is scored). Never selected: only shown, so a
            grid's pruned cells read "pruned" with the score they were cut at rather than nothing.
        parents: One row per study parent run (``run_id``, ``study``, ``preset``, ``dataset``, ``experiment``).
        counts: Trial states per study, e.g. ``{"s": {"COMPLETE": 3, "PRUNED": 1}}``.
        mlc: The MLflow client the data came from.
        rule: ``selection.rule`` of the report (``argmax`` or ``one-se``): how each ranking chooses.
        refits: Trial run id -> its latest FINISHED refit on all training rows (``studies.choice.refit``): ``run_id``,
            ``test_acc`` (mean over seeds) and ``start_time``. A study refits its chosen trial when it finishes.
    """

    trials: pd.DataFrame
    parents: pd.DataFrame
    counts: dict[str, dict[str, int]]
    mlc: MlflowClient
    baselines: pd.DataFrame | None = None
    pruned: pd.DataFrame | None = None
    rule: str = "argmax"
    refits: dict[str, dict[str, Any]] = field(default_factory=dict)
    _histories: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict, repr=False)

    def history(self, run_id: str, key: str) -> dict[int, float]:
        """``{step: value}`` of metric ``key`` in run ``run_id`` (empty when never logged)."""
        if (run_id, key) not in self._histories:
            points = self.mlc.get_metric_history(run_id, key)
            self._histories[run_id, key] = {int(m.step): float(m.value) for m in points}
        return self._histories[run_id, key]

    def units(self, run_id: str, value: float) -> list[float]:
        """Per-unit validation accuracies of a run (``cv/val_acc``, else ``seed/val_acc``, else ``[value]``)."""
        return unit_scores(lambda key: self.history(run_id, key), value)

    def unit_source(self, run_id: str) -> str:
        """Which history ``units`` read for a run (``cv/val_acc``, ``seed/val_acc``, or ``val/acc``)."""
        return unit_source(lambda key: self.history(run_id, key))

    def artifact(self, run_id: str, artifact: str) -> bytes | None:
        """The bytes of one artifact file of a run, or None when the run does not have it.

        Local (``file:``) artifact stores are read in place; others are downloaded to a temporary folder.
        """
        from mlflow.exceptions import MlflowException

        root = self.mlc.get_run(run_id).info.artifact_uri
        if root.startswith("file:") or "://" not in root:
            local = Path(url2pathname(urlparse(root).path)) / artifact
            return local.read_bytes() if local.is_file() else None
        folder = str(Path(artifact).parent)
        try:
            names = {a.path for a in self.mlc.list_artifacts(run_id, None if folder == "." else folder)}
            if artifact not in names:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                return Path(self.mlc.download_artifacts(run_id, artifact, tmp)).read_bytes()
        except (MlflowException, OSError):
            return None

    def array(self, run_id: str, artifact: str) -> np.ndarray | None:
        """An ``.npy`` artifact of a run (e.g. predictions), or None when absent."""
        import numpy as np

        blob = self.artifact(run_id, artifact)
        return None if blob is None else np.load(io.BytesIO(blob))


def _search(mlc: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """Every run matching ``filter_string`` (all result pages)."""
    runs: list[Run] = []
    token = None
    while True:
        page = mlc.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _count(text: str | None) -> int:
    """The ``seeds`` param (a count) as an int; 1 when absent or unreadable."""
    try:
        return max(1, int(float(text or 1)))
    except ValueError:
        return 1


def _trial_row(run: Run, dataset: str, preset: str) -> dict[str, Any]:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    models = tuple(m.strip() for m in params.get("models", "").split(",") if m.strip())
    trial = tags.get(TAG_TRIAL, "")
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "parent_id": tags.get(TAG_PARENT, ""),
        "study": tags.get(TAG_STUDY, ""),
        "dataset": params.get("dataset") or dataset,
        "preset": params.get("preset") or tags.get(TAG_PRESET) or preset,
        "trial": int(trial) if trial.lstrip("-").isdigit() else 1_000_000,
        "models": models,
        "n_models": int(params.get("n_models", len(models)) or len(models)),
        "fusion": params.get("fusion", ""),
        "layers": {m: params[f"layer.{m}"] for m in models if f"layer.{m}" in params},
        "seeds": _count(params.get("seeds")),
        "sweep_model": tags.get(TAG_SWEEP_MODEL, ""),
        "params": dict(params),
        "classifier": params.get("baseline.classifier", ""),
        "C": float(params.get("baseline.C", math.nan)),
    }
    for key in (*METRICS, *PERF):
        row[key] = float(metrics.get(key, math.nan))
    return row


def _experiments(mlc: MlflowClient) -> dict[str, str]:
    """``{experiment name: id}`` of every layerfuse experiment of a dataset (not the one of cross-dataset reports)."""
    found = mlc.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")
    return {e.name: str(e.experiment_id) for e in found if e.name != REPORTS_EXPERIMENT}


def _parents_table(mlc: MlflowClient, experiments: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    names = {v: k for k, v in experiments.items()}
    rows = []
    if experiments:
        for run in _search(mlc, list(experiments.values()), f"tags.`{TAG_KIND}` = '{KIND_STUDY}'"):
            exp = names[str(run.info.experiment_id)]
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "study": run.data.tags.get(TAG_STUDY, run.info.run_name or ""),
                    "preset": run.data.tags.get(TAG_PRESET, ""),
                    "experiment": exp,
                    "experiment_id": str(run.info.experiment_id),
                    "dataset": exp.removeprefix(EXPERIMENT_PREFIX),
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "study", "preset", "experiment", "experiment_id", "dataset"])


def _known(kind: str, plural: str, name: str, choices: list[str], uri: str) -> UserError:
    listing = ", ".join(choices) if choices else "none yet: run `layerfuse study --preset ... --dataset ...` first"
    return UserError(f"unknown {kind} '{name}' in {uri}.{suggest(name, choices)} Known {plural}: {listing}")


def _select_parents(
    parents: pd.DataFrame, experiments: dict[str, str], studies: list[str], wanted_experiments: list[str], uri: str
) -> pd.DataFrame:
    known_studies = sorted(set(parents["study"]))
    for name in studies:
        if name not in known_studies:
            raise _known("study", "studies", name, known_studies, uri)
    exp_names: list[str] = []
    for name in wanted_experiments:
        full = name if name in experiments else f"{EXPERIMENT_PREFIX}{name}"
        if full not in experiments:
            raise _known("experiment", "experiments", name, sorted(experiments), uri)
        if not (parents["experiment"] == full).any():
            raise UserError(
                f"experiment '{full}' holds no studies: run `layerfuse study --dataset "
                f"{full.removeprefix(EXPERIMENT_PREFIX)} ...` first"
            )
        exp_names.append(full)
    keep = parents["study"].isin(studies) | parents["experiment"].isin(exp_names)
    return parents[keep].reset_index(drop=True)


def _no_trials_message(study: str, parents: pd.DataFrame, states: Counter[str]) -> str:
    first = parents[parents["study"] == study].iloc[0]
    seen = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials at all"
    return (
        f"study '{study}' has no finished trials ({seen}); run `layerfuse study --preset {first['preset'] or '...'} "
        f"--dataset {first['dataset']}` until some trials complete, then report again"
    )


def load_runs(cfg: BenchConfig, studies: list[str], experiments: list[str]) -> ReportData:
    """Collect the finished trials of the named studies and of every study in the named experiments.

    Args:
        cfg: Config whose ``tracking`` section names the MLflow store.
        studies: Study names (tag ``layerfuse.study``).
        experiments: Experiment names, ``layerfuse/<dataset>`` or just ``<dataset>``.

    Raises:
        UserError: nothing named, an unknown study or experiment (listing the known ones), or no finished trials.
    """
    import pandas as pd

    mlc = client(cfg.tracking)
    exps = _experiments(mlc)
    parents = _parents_table(mlc, exps)
    if not studies and not experiments:
        known = ", ".join(sorted(set(parents["study"]))) or "none yet"
        raise UserError(f"name a study (--study NAME) or an experiment (--experiment NAME); known studies: {known}")
    chosen = _select_parents(parents, exps, studies, experiments, cfg.tracking.uri)
    rows: list[dict[str, Any]] = []
    pruned: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    refits: dict[str, dict[str, Any]] = {}
    for study, group in chosen.groupby("study", sort=True):
        states: Counter[str] = Counter()
        for parent in group.itertuples():
            for run in _search(mlc, [parent.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.run_id}'"):
                _add_run(run, parent, states, (rows, pruned, refits))
        counts[str(study)] = dict(states)
        if str(study) in studies and not states[COMPLETE]:
            raise UserError(_no_trials_message(str(study), chosen, states))
    if not rows:
        names = ", ".join(sorted(counts))
        raise UserError(f"no finished trials in studies {names}; run `layerfuse study ...` until some trials complete")
    every = pd.DataFrame(rows).sort_values(["dataset", "study", "trial"], kind="stable").reset_index(drop=True)
    lexical = every["preset"] == BASELINE  # a report of the baseline alone has empty (but typed) trials
    trials, baselines = every[~lexical].reset_index(drop=True), every[lexical].reset_index(drop=True)
    log.info("report: %d finished trials (+%d baseline) from %d studies", len(trials), len(baselines), len(counts))
    cut = pd.DataFrame(pruned, columns=list(every.columns))
    return ReportData(
        trials=trials,
        parents=chosen,
        counts=counts,
        mlc=mlc,
        baselines=baselines,
        pruned=cut,
        rule=cfg.selection.rule,
        refits=refits,
    )


def _add_run(
    run: Run,
    parent: Any,
    states: Counter[str],
    into: tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]],
) -> None:
    """File one child run of study parent ``parent``: a refit, or a trial counted by state (complete and pruned kept).

    ``into``: the complete trials' rows, the pruned trials' rows (those cut while training) and the refits.
    """
    rows, pruned, refits = into
    if run.data.tags.get(TAG_KIND) == tracking.KIND_REFIT:
        _add_refit(refits, run)
    if run.data.tags.get(TAG_KIND, KIND_TRIAL) != KIND_TRIAL:
        return
    state = run.data.tags.get(TAG_STATE, "UNKNOWN").upper()
    states[state] += 1
    if state == COMPLETE:
        rows.append(_trial_row(run, parent.dataset, parent.preset))
    elif state == PRUNED and tracking.VAL_ACC in run.data.metrics:  # pruned while training, not before
        pruned.append(_trial_row(run, parent.dataset, parent.preset))


def _add_refit(refits: dict[str, dict[str, Any]], run: Run) -> None:
    """Keep ``run`` as its trial's refit if it finished and is the latest one seen."""
    source = run.data.tags.get(tracking.TAG_REFIT_OF, "")
    if run.info.status != "FINISHED" or tracking.TEST_ACC not in run.data.metrics or not source:
        return
    if source in refits and refits[source]["start_time"] >= run.info.start_time:
        return
    refits[source] = {
        "run_id": run.info.run_id,
        "test_acc": float(run.data.metrics[tracking.TEST_ACC]),
        "start_time": run.info.start_time,
    }
