"""Synthetic multi-objective impression logs with a known ground truth.

`generate(out_dir, spec)` writes

    out_dir/train/part-00000.parquet ...   features + labels
    out_dir/test/part-00000.parquet ...    features + labels + oracle columns
    out_dir/config.yaml                    the feature config with its task list (`feature_config(spec)`)

With `GeneratorSpec.days` > 1 it writes out_dir/day_1/ .. day_N/ instead, each with train/, test/ and
config.yaml: consecutive days with new users and items and drifting item popularity over one latent
model (`days.py`); out_dir/config.yaml then reads day 1.

Every impression is a (user, item, device, hour) tuple drawn from fixed latent tables; labels come
from a latent model the generator knows exactly, so the test split carries the Bayes-optimal values
("oracle" columns, every column whose name starts with ``oracle_``) a trained model can be measured
against: ``oracle_<label>`` is the true entire-space probability (E[label] for watch_time) and, for
objectives that need a click, ``oracle_<label>_given_click`` the true conditional one.

* click: logit = intercept + item attractiveness + user.item affinity + |affinity| + preferred-category
  match + device x hour interaction + sin/product terms of price and age + small linear effects.
  The |.|, sin and pure-interaction terms are there so that a linear model on one-hot features
  cannot reach the oracle while an MLP over embeddings can.
* conversion (only on clicked rows): logit = intercept + task_corr * z_click + sqrt(1 - task_corr^2)
  * z_indep, both standardized; z_indep comes from a second, independent user.item product plus
  price and age effects, so task_corr dials how much the two tasks share.
* watch time (only on clicked rows): LogNormal with mean mu(x) = exp(linear in features).
* like, follow, finish (after click) and share (entire space): mixes of the standardized click or
  watch-time signal with the objective's own user.item product (`catalogue.py`); follow conflicts
  with click (a negative weight).

`GeneratorSpec.objectives` picks the label columns (presets: `PRESETS`). The classic three are drawn
exactly as before the other objectives existed: with the same seed their columns (and the features)
are bit-identical whatever else is written. Intercepts are calibrated once per spec on a fixed
calibration sample, so every file shares them.

Modules: `catalogue` (objectives, presets), `spec` (GeneratorSpec), `streams` (seed keys), `latent`
(tables, impressions, signals), `objectives` (calibration, truth, labels, oracles), `config`
(config.yaml, schema), `days` (multi-day populations and popularity), `write` (part files, `generate`).
"""

from recsys_mtl.data.synthetic.catalogue import CATALOGUE, CLASSIC, PRESETS, Objective, parse_objectives
from recsys_mtl.data.synthetic.config import feature_config, oracle_columns, output_schema
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.write import DaySummary, GenerateSummary, generate

__all__ = [
    "CATALOGUE",
    "CLASSIC",
    "PRESETS",
    "DaySummary",
    "GenerateSummary",
    "GeneratorSpec",
    "Objective",
    "feature_config",
    "generate",
    "oracle_columns",
    "output_schema",
    "parse_objectives",
]
