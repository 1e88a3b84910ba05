"""The metric set of each task, from gathered predictions, labels and (synthetic data) oracle columns."""

from __future__ import annotations

import numpy as np

from recsys_mtl.metrics.ranking import auc, logloss, rmse, xauc
from recsys_mtl.tasks.heads import TaskSpec


def task_metrics(tasks: list[TaskSpec], cols: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}``. ``cols`` holds real rows only: predictions (``pctr``, ``pcvr``,
    ``pctcvr``, ``watch_time``), labels (``label_click``, ...) and optional ``oracle_*`` columns.
    ``oracle_<metric>`` is the same metric of the true probabilities."""
    out: dict[str, dict[str, float]] = {}

    def with_oracle(m: dict[str, float], name: str, fn, oracle_col: str, *args) -> None:
        if oracle_col in cols:
            m[f"oracle_{name}"] = fn(cols[oracle_col], *args)

    for task in tasks:
        m: dict[str, float] = {}
        if task.kind == "ctr":
            y = cols["label_click"]
            m["auc"] = auc(cols["pctr"], y)
            m["logloss"] = logloss(cols["pctr"], y)
            m["calibration"] = float(cols["pctr"].sum() / max(y.sum(), 1e-12))
            with_oracle(m, "auc", auc, "oracle_pctr", y)
        elif task.kind in ("ctcvr", "cvr"):
            click, conv = cols["label_click"], cols["label_conversion"]
            y = click * conv
            if "pctcvr" in cols:
                m["auc"] = auc(cols["pctcvr"], y)
                m["logloss"] = logloss(cols["pctcvr"], y)
                with_oracle(m, "auc", auc, "oracle_pctcvr", y)
            # CVR judged on the entire impression space and, classically, on clicked rows only
            m["cvr_auc_entire_space"] = auc(cols["pcvr"], y)
            with_oracle(m, "cvr_auc_entire_space", auc, "oracle_pcvr", y)
            clicked = click > 0
            m["cvr_auc_clicked"] = auc(cols["pcvr"][clicked], conv[clicked])
            if "oracle_pcvr" in cols:
                m["oracle_cvr_auc_clicked"] = auc(cols["oracle_pcvr"][clicked], conv[clicked])
                # synthetic data knows p(convert | click) for every impression, clicked or not: pCVR
                # judged on the whole space it is served on, against soft labels (the expected AUC
                # under labels drawn from the oracle) -- where click-only training is biased
                m["cvr_auc_counterfactual"] = auc(cols["pcvr"], cols["oracle_pcvr"])
                m["oracle_cvr_auc_counterfactual"] = auc(cols["oracle_pcvr"], cols["oracle_pcvr"])
        else:
            t = cols["label_watch_time"]
            m["xauc"] = xauc(cols["watch_time"], t)
            m["rmse"] = rmse(cols["watch_time"], t)
            with_oracle(m, "xauc", xauc, "oracle_watch_time", t)
            with_oracle(m, "rmse", rmse, "oracle_watch_time", t)
        out[task.name] = m
    return out


HEADLINE = {"ctr": "auc", "ctcvr": "auc", "cvr": "cvr_auc_clicked", "watch_time": "xauc"}
