"""Run folders side by side: `lora runs`' columns, --filter and --sort, and `lora compare`'s
differing config keys and results. Everything is read from the folders' manifests and
configs; nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_cli.config.overrides import parse_scalar
from lora_cli.config.stages import ADAPTED
from lora_cli.errors import ConfigError
from lora_cli.measure.trackers import flat_params
from lora_cli.stages.kinds import LAYOUTS

RESULT_STAGE = {"pipeline": ADAPTED, "approx": "approx"}  # the stage whose numbers stand for the run
COLUMNS = ("name", "kind", "status", "method", "rank", "alpha", "init", "final_loss", "final_test_loss", "optimal_loss", "gap", "detail")
RESULT_KEYS = ("final_loss", "final_test_loss", "optimal_loss", "gap", "seconds")


def columns(summary: dict[str, Any]) -> dict[str, Any]:
    """One folder's row (store.run_index.summary): its status is that of its first stage not
    complete (else complete), its numbers those of the stage that stands for the run."""
    row = dict.fromkeys(COLUMNS) | {"name": summary["name"], "kind": summary["kind"]}
    if summary.get("damaged"):
        return row | {"status": "damaged", "detail": summary["damaged"]}
    stages = summary["stages"]
    layout = LAYOUTS[summary["kind"]].stages if summary["kind"] in LAYOUTS else tuple(stages)
    unfinished = [(stage, stages.get(stage, {"status": "pending"})) for stage in layout if stages.get(stage, {}).get("status") != "complete"]
    row["status"] = unfinished[0][1].get("status", "pending") if unfinished else "complete"
    result = stages.get(RESULT_STAGE.get(summary["kind"], ""), {})
    row |= {key: result.get(key) for key in ("method", "rank", "alpha", "init", "final_loss", "final_test_loss", "optimal_loss", "gap")}
    noted = [(stage, rec) for stage, rec in stages.items() if "trials" in rec or rec.get("imported")]  # a sweep, an import
    words = [stage_words(*unfinished[0])] if unfinished else [stage_words(*item) for item in noted]
    words += [f"in use by {summary['running_in']}"] if summary.get("running_in") else []
    row["detail"] = "; ".join(words) or None
    return row


def stage_words(stage: str, rec: dict[str, Any]) -> str:
    """A stage's status in words: trials complete, where it can resume, an imported adapter."""
    status = rec.get("status", "pending")
    trials = f"{rec.get('complete', 0)} of {rec['trials']} trials complete" if "trials" in rec else None
    if status == "complete":
        failed = f", {rec['failed']} failed" if rec.get("failed") else ""
        if trials:
            return f"{trials}{failed}"
        return f"{stage} complete" + (f" (imported adapter {rec['imported']})" if rec.get("imported") else "")
    if status == "interrupted":
        saved = rec.get("checkpoint_epoch")
        where = f", resumable from epoch {saved}" if saved else ""
        if rec.get("checkpoint") == "damaged":
            where = ", its checkpoint damaged (start it over with --force)"
        return f"{stage} interrupted" + (f", {trials}" if trials else where)
    if status == "pending":
        return f"{stage} not run yet"
    return f"{stage} {status}" + (f": {rec['error']}" if rec.get("error") else "")


def parse_filters(texts: list[str] | None) -> list[tuple[str, Any]]:
    """--filter KEY=VALUE …: a column or a dotted config key, and the value it must have."""
    filters = []
    for text in texts or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--filter {text!r}: expected KEY=VALUE, e.g. --filter method=lora or --filter adapter.rank=4")
        if "." not in key and key.strip() not in COLUMNS:
            raise ConfigError(f"--filter {key.strip()!r}: not a column; choose from {', '.join(COLUMNS)}, or a config key such as adapter.rank")
        filters.append((key.strip(), parse_scalar(value.strip(), f"--filter {key.strip()}")))
    return filters


def matches(row: dict[str, Any], config: dict[str, Any] | None, filters: list[tuple[str, Any]]) -> bool:
    """Whether a row (with its folder's flat config, for dotted keys) has every filtered value."""
    for key, wanted in filters:
        have = (config or {}).get(key) if "." in key else row.get(key)
        if have != wanted and str(have) != str(wanted):
            return False
    return True


def sort_rows(rows: list[dict[str, Any]], key: str | None, reverse: bool = False) -> list[dict[str, Any]]:
    """Rows by `key` (a column; rows without a value last), else as listed (oldest first)."""
    if key is None:
        return list(reversed(rows)) if reverse else rows
    if key not in COLUMNS:
        raise ConfigError(f"--sort {key!r}: not a column; choose from {', '.join(COLUMNS)}")
    present = [r for r in rows if r.get(key) is not None]
    return sorted(present, key=lambda r: (isinstance(r[key], str), r[key]), reverse=reverse) + [r for r in rows if r.get(key) is None]


def flat_config(path: Path) -> dict[str, Any] | None:
    """A folder's config.yaml as flat keys (read as every config is: strictly, bounded), keys
    renamed since the folder was written under their current names (finetune.rank ->
    adapter.rank); None when it cannot be read."""
    from lora_cli.config.schemas import RENAMED, renamed_value
    from lora_cli.config.yamlio import YamlError, read_yaml_file
    from lora_cli.store.run_folder import CONFIG

    try:
        doc = read_yaml_file(path / CONFIG)
    except YamlError:
        return None
    if not isinstance(doc, dict):
        return None
    flat = flat_params(doc)
    for old, new in RENAMED.items():
        if old in flat:
            value = flat.pop(old)
            flat.setdefault(new, renamed_value(old, value))
    return flat


def compare(folders: list[Any]) -> dict[str, Any]:
    """The config keys whose values differ between `folders` (RunFolders), each folder's value
    ("-" where it has none), how many keys are the same, and each stage's results side by side."""
    configs = [flat_config(folder.path) or {} for folder in folders]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    differ = {key: [config.get(key) for config in configs] for key in keys if len({repr(c.get(key)) for c in configs}) > 1}
    stages: dict[str, dict[str, list[Any]]] = {}
    manifests = [folder.manifest() for folder in folders]
    for stage in dict.fromkeys(stage for m in manifests for stage in m.get("stages", {})):
        records = [m.get("stages", {}).get(stage, {}) for m in manifests]
        shown = {key: [r.get(key) for r in records] for key in ("status", *RESULT_KEYS) if any(r.get(key) is not None for r in records)}
        stages[stage] = shown
    return {"runs": [str(f.path) for f in folders], "differ": differ, "same": len(keys) - len(differ), "stages": stages}
