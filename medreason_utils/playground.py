"""Reward playground: score a group of completions under the GRPO rewards, live, in ipywidgets.

The playground holds no reward logic of its own. It builds the reward functions with the
factories of :mod:`medreason_utils.rewards` (strict format, partial format, correctness with
:class:`~medreason_utils.rewards.CorrectnessTiers`), calls them the way TRL's
``GRPOTrainer`` does (completions plus the dataset columns ``answer`` and ``question`` as
keyword arguments) and computes totals and advantages with
:func:`~medreason_utils.rewards.compute_advantages` (TRL's ``reward_weights`` and
``scale_rewards`` semantics). What the user ends with is one :class:`RewardSettings` object,
which the GRPO cell hands to the trainer::

    settings = playground.settings
    config = GRPOConfig(..., **settings.grpo_config_kwargs())
    trainer = GRPOTrainer(..., reward_funcs=settings.reward_funcs(), args=config)
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .data import SAMPLES_DIR
from .rewards import (
    DEFAULT_TIERS,
    CorrectnessTiers,
    compute_advantages,
    exclude_unscored,
    make_correctness_reward,
    make_partial_format_reward,
    make_strict_format_reward,
)
from .verifier import RuleBasedVerifier, Verifier

__all__ = [
    "REWARD_NAMES",
    "SCALE_OPTIONS",
    "VERIFIER_OPTIONS",
    "EXAMPLES_PATH",
    "COMPLETION_SEPARATOR",
    "RewardSettings",
    "resolve_verifier",
    "load_examples",
    "example_questions",
    "split_completions",
    "join_completions",
    "ScoreTable",
    "score_completions",
    "RewardPlayground",
]

#: The rewards the playground scores, in the order of ``reward_funcs()`` and ``reward_weights``.
REWARD_NAMES = ("strict_format_reward", "partial_format_reward", "correctness_reward")
#: TRL ``GRPOConfig.scale_rewards`` values (TRL 1.16).
SCALE_OPTIONS = ("group", "batch", "none")
#: Verifier dropdown: (label, spec). A spec is ``"rule"``, a verifier object, or a spec the
#: project's verifier factory (``medreason_utils.verifier.make_verifier``, when present) accepts.
VERIFIER_OPTIONS: list[tuple[str, Any]] = [("rule-based (offline)", "rule")]
#: Shipped example completions (see samples/SOURCES.md).
EXAMPLES_PATH = SAMPLES_DIR / "playground_examples.jsonl"
#: A line holding only this separates completions in the playground's text box.
COMPLETION_SEPARATOR = "---"


def resolve_verifier(spec: Any) -> Verifier:
    """A verifier object from a dropdown spec, through :func:`medreason_utils.verifier.make_verifier`.

    ``None`` or ``"rule"`` gives :class:`~medreason_utils.verifier.RuleBasedVerifier`; an object
    with a ``score`` method is returned as is; a dict or kind name builds a model verifier.
    Raises what ``make_verifier`` raises (``ValueError`` naming an unknown kind).
    """
    from .verifier import make_verifier

    return make_verifier(spec)


@dataclass(frozen=True)
class RewardSettings:
    """Every setting of the GRPO rewards and advantages, in one object for the trainer cell.

    Attributes:
        strict_value: reward of a strictly well-formed completion (0 otherwise); default 3.0.
        partial_per_tag: + per tag present exactly once, - per tag that is not; default 0.5.
        tiers: verifier probability -> correctness reward (defaults from the reference GRPO project).
        weights: (strict, partial, correctness) weights, TRL's ``reward_weights``; default 1.0 each.
        verifier: ``"rule"``, a verifier object, or a spec for ``make_verifier`` (see :func:`resolve_verifier`).
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (TRL ``GRPOConfig.scale_rewards``);
            default ``"batch"``: advantages centred on the group mean and scaled by the batch std, the
            suite's recipe (Dr. GRPO loss, arXiv:2503.20783, with batch-level scaling as in TRL's
            ``scale_rewards="batch"``); ``"none"`` is Dr. GRPO's own choice of no scaling.
        prefilled_think: the prompt ends with the opening THINK tag (see ``parse_completion``).
        max_unscored_fraction: the correctness reward raises when a step leaves more than this
            fraction unscored (see :func:`~medreason_utils.rewards.make_correctness_reward`).

    Raises ``ValueError`` for a weight count other than 3 or an unknown ``scale_rewards``.
    """

    strict_value: float = 3.0
    partial_per_tag: float = 0.5
    tiers: CorrectnessTiers = DEFAULT_TIERS
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    verifier: Any = "rule"
    scale_rewards: str = "batch"
    prefilled_think: bool = False
    max_unscored_fraction: float = 0.5

    def __post_init__(self) -> None:
        w = tuple(float(x) for x in self.weights)
        if len(w) != len(REWARD_NAMES):
            raise ValueError(f"weights needs {len(REWARD_NAMES)} values {REWARD_NAMES}, got {len(w)}")
        object.__setattr__(self, "weights", w)
        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)  # type: ignore[arg-type]
        if scale not in SCALE_OPTIONS:
            raise ValueError(f"scale_rewards must be one of {SCALE_OPTIONS}, got {self.scale_rewards!r}")
        object.__setattr__(self, "scale_rewards", scale)

    def reward_funcs(self, verifier: Any = None) -> list:
        """The three reward functions for ``GRPOTrainer(reward_funcs=...)``, in :data:`REWARD_NAMES` order.

        ``verifier`` overrides :attr:`verifier` (pass an already-built verifier to share it). The
        format rewards are gated with :func:`~medreason_utils.rewards.exclude_unscored`, so a
        completion the verifier could not score is left out of the advantage, not rewarded on format alone.
        """
        v = resolve_verifier(self.verifier if verifier is None else verifier)
        correctness = make_correctness_reward(
            v, tiers=self.tiers, prefilled_think=self.prefilled_think, max_unscored_fraction=self.max_unscored_fraction
        )
        return exclude_unscored(
            [
                make_strict_format_reward(self.strict_value, prefilled_think=self.prefilled_think),
                make_partial_format_reward(self.partial_per_tag, prefilled_think=self.prefilled_think),
                correctness,
            ],
            correctness,
        )

    @property
    def reward_weights(self) -> list[float]:
        """Weights in :data:`REWARD_NAMES` order, for ``GRPOConfig(reward_weights=...)``."""
        return list(self.weights)

    def grpo_config_kwargs(self) -> dict[str, Any]:
        """``{"reward_weights": [...], "scale_rewards": ...}`` to unpack into ``GRPOConfig``."""
        return {"reward_weights": self.reward_weights, "scale_rewards": self.scale_rewards}

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable settings (a verifier object is shown by its ``repr``)."""
        d = asdict(self)
        d["tiers"] = {"thresholds": [list(t) for t in self.tiers.thresholds], "below": self.tiers.below, "no_answer": self.tiers.no_answer}
        d["weights"] = dict(zip(REWARD_NAMES, self.weights))
        if not isinstance(self.verifier, (str, dict, type(None))):
            d["verifier"] = repr(self.verifier)
        return d


def load_examples(path: str | Path | None = None) -> list[dict]:
    """Shipped example completions: dicts with ``question``, ``answer``, ``kind``, ``completion``.

    Raises ``ValueError`` naming the line and field of a malformed row.
    """
    path = Path(path) if path is not None else EXAMPLES_PATH
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        for key in ("question", "answer", "kind", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}:{n}: field {key!r} is missing or not a string")
        rows.append(row)
    return rows


def example_questions(examples: Sequence[dict] | None = None) -> list[str]:
    """The distinct questions of the examples, in file order."""
    examples = load_examples() if examples is None else examples
    return list(dict.fromkeys(r["question"] for r in examples))


def split_completions(text: str) -> list[str]:
    """Completions from the text box: blocks separated by a line holding only ``---``.

    Blocks are kept as written except for surrounding blank lines; empty blocks are dropped.
    """
    blocks, cur = [], []
    for line in (text or "").split("\n"):
        if line.strip() == COMPLETION_SEPARATOR:
            blocks.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    blocks.append("\n".join(cur))
    return [b.strip("\n") for b in blocks if b.strip()]


def join_completions(completions: Sequence[str]) -> str:
    """Inverse of :func:`split_completions`."""
    return f"\n{COMPLETION_SEPARATOR}\n".join(c.strip("\n") for c in completions)


@dataclass
class ScoreTable:
    """Scores of one group: per completion, each reward, the weighted total and the advantage.

    ``rewards[i][j]`` is reward :data:`REWARD_NAMES` ``[j]`` of completion ``i`` (``None``: not
    scored); ``rank[i]`` is 1 for the highest advantage (ties share the better rank).
    """

    completions: list[str]
    labels: list[str]
    rewards: list[list[float | None]]
    totals: list[float]
    advantages: list[float]
    settings: RewardSettings
    rank: list[int] = field(default_factory=list)
    names: tuple = REWARD_NAMES  # column names: REWARD_NAMES, then any extra rewards' __name__

    def __post_init__(self) -> None:
        if not self.rank:
            self.rank = [1 + sum(b > a + 1e-12 for b in self.advantages) for a in self.advantages]

    def records(self) -> list[dict]:
        """One dict a completion: label, completion, each reward, total, advantage, rank."""
        out = []
        for i, c in enumerate(self.completions):
            rec = {"label": self.labels[i], "completion": c}
            rec.update(dict(zip(self.names, self.rewards[i])))
            rec.update(total=self.totals[i], advantage=self.advantages[i], rank=self.rank[i])
            out.append(rec)
        return out

    def to_html(self, preview_chars: int = 140) -> str:
        """The table as HTML (escaped completions, previews of ``preview_chars`` characters)."""

        def num(x: float | None) -> str:
            return "&ndash;" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"

        short = tuple(n.removesuffix("_reward").removesuffix("_format") for n in self.names)
        head = "".join(f"<th>{h}</th>" for h in ("#", "completion", *short, "total", "advantage", "rank"))
        body = []
        for i, c in enumerate(self.completions):
            preview = c if len(c) <= preview_chars else c[:preview_chars] + "…"
            adv = self.advantages[i]
            colour = "#d8f3dc" if adv > 1e-9 else "#ffd6d6" if adv < -1e-9 else "#f1f1f1"
            cells = "".join(f"<td style='text-align:right'>{num(x)}</td>" for x in self.rewards[i])
            body.append(
                f"<tr><td>{i + 1}</td>"
                f"<td title='{html.escape(c, quote=True)}'><b>{html.escape(self.labels[i])}</b><br>"
                f"<code style='white-space:pre-wrap;font-size:11px'>{html.escape(preview)}</code></td>"
                f"{cells}<td style='text-align:right'><b>{num(self.totals[i])}</b></td>"
                f"<td style='text-align:right;background:{colour}'><b>{num(adv)}</b></td>"
                f"<td style='text-align:center'>{self.rank[i]}</td></tr>"
            )
        s = self.settings
        caption = (
            f"weights {dict(zip(('strict', 'partial', 'correctness'), s.weights))}, "
            f"scale_rewards={s.scale_rewards!r}; advantage = total - group mean"
            + ("" if s.scale_rewards == "none" else f", divided by the {s.scale_rewards} std")
            + (" (one group here, so the batch std is the group std)" if s.scale_rewards == "batch" else "")
        )
        return (
            "<table class='medreason-scores' style='border-collapse:collapse' border='1' cellpadding='4'>"
            f"<caption style='caption-side:bottom;font-size:11px'>{html.escape(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()


def score_completions(
    completions: Sequence[str],
    answer: str,
    question: str | None = None,
    settings: RewardSettings | None = None,
    *,
    verifier: Any = None,
    labels: Sequence[str] | None = None,
    extra_rewards: Sequence[tuple[Any, float]] = (),
) -> ScoreTable:
    """Score one group of completions for one prompt, as the GRPO trainer would.

    Each reward function of ``settings.reward_funcs(verifier)`` gets the completions and the
    columns ``answer`` and ``question`` repeated once per completion; totals and advantages come
    from :func:`~medreason_utils.rewards.compute_advantages` with the whole list as one group
    (so ``"batch"`` and ``"group"`` scaling agree here). Malformed completions never raise.
    ``extra_rewards`` are ``(reward function, weight)`` pairs scored after the three (e.g. the perplexity reward of
    :func:`medreason_utils.perplexity_reward.make_perplexity_reward`); they add columns and count in the totals.

    Raises ``ValueError`` for no completions or a label count that does not match.
    """
    settings = settings or RewardSettings()
    completions = list(completions)
    if not completions:
        raise ValueError("score_completions needs at least one completion")
    labels = list(labels) if labels is not None else [f"completion {i + 1}" for i in range(len(completions))]
    if len(labels) != len(completions):
        raise ValueError(f"{len(labels)} labels for {len(completions)} completions")
    n = len(completions)
    columns = {"answer": [answer] * n, "question": [question or ""] * n}
    funcs = list(settings.reward_funcs(verifier)) + [fn for fn, _ in extra_rewards]
    weights = settings.reward_weights + [float(w) for _, w in extra_rewards]
    per_func = [fn(completions, **columns) for fn in funcs]
    rows = [[per_func[j][i] for j in range(len(per_func))] for i in range(n)]
    totals, advantages = compute_advantages(rows, weights, num_generations=n, scale_rewards=settings.scale_rewards)
    names = REWARD_NAMES + tuple(getattr(fn, "__name__", f"extra_{k}") for k, (fn, _) in enumerate(extra_rewards))
    return ScoreTable(completions, labels, rows, totals, advantages, settings, names=names)


class RewardPlayground:
    """ipywidgets UI: one prompt, a group of completions, every reward setting, a live score table.

    Completions come from the shipped examples (pick a question), from the text box (typed or
    pasted, separated by lines of ``---``), or from the model (``model`` and ``tokenizer``
    given: the "Sample" button draws ``n`` completions with
    :func:`medreason_utils.generation.generate_completions`). Every control change recomputes
    the table (:meth:`refresh`). :attr:`settings` is the :class:`RewardSettings` to hand to the
    trainer cell.

    Args:
        settings: starting settings (default :class:`RewardSettings`).
        model, tokenizer: optional, for sampling completions.
        verifier_options: ``(label, spec)`` pairs for the verifier dropdown (default
            :data:`VERIFIER_OPTIONS`).
        examples: example rows (default :func:`load_examples`).
        lora_request: vLLM (GPU) only: the adapter as a LoRA request (Unsloth's ``model.load_lora(path)``)
            so samples come from the trained adapter, not the base weights of the vLLM engine.
        extra_rewards: ``(reward function, weight)`` pairs shown as more columns and counted in the totals, e.g.
            ``[(make_perplexity_reward(model, tokenizer), 1.0)]`` (see :func:`score_completions`).
    """

    def __init__(
        self,
        settings: RewardSettings | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        verifier_options: Sequence[tuple[str, Any]] | None = None,
        examples: Sequence[dict] | None = None,
        lora_request: Any = None,
        extra_rewards: Sequence[tuple[Any, float]] = (),
    ):
        import ipywidgets as w

        self.extra_rewards = list(extra_rewards)

        s = settings or RewardSettings()
        self.model, self.tokenizer, self.lora_request = model, tokenizer, lora_request
        self.examples = list(examples) if examples is not None else load_examples()
        self._verifiers: dict[str, Verifier] = {}
        self._labels: dict[str, str] = {}
        self.table: ScoreTable | None = None
        self.error: str | None = None
        opts = list(verifier_options or VERIFIER_OPTIONS)
        if not any(spec is s.verifier or spec == s.verifier for _, spec in opts):
            opts.append((f"given: {s.verifier!r}"[:60], s.verifier))
        self._verifier_specs = [spec for _, spec in opts]

        num = dict(layout=w.Layout(width="170px"), style={"description_width": "95px"})
        self.example_pick = w.Dropdown(options=[(q[:90], q) for q in example_questions(self.examples)], description="example", layout=w.Layout(width="98%"))
        self.question = w.Textarea(description="question", layout=w.Layout(width="98%", height="50px"))
        self.answer = w.Text(description="reference", layout=w.Layout(width="98%"))
        self.completions = w.Textarea(
            description="completions", placeholder="one completion per block; blocks separated by a line '---'",
            layout=w.Layout(width="98%", height="220px"), continuous_update=False,
        )
        self.n_samples = w.BoundedIntText(value=4, min=1, max=16, description="n", **num)
        self.sample_temperature = w.BoundedFloatText(value=0.8, min=0.05, max=2.0, step=0.05, description="temperature", **num)
        self.sample_tokens = w.BoundedIntText(value=128, min=8, max=2048, description="max tokens", **num)
        self.sample_seed = w.IntText(value=0, description="seed", **num)
        self.sample_button = w.Button(description="Sample from model", icon="play", disabled=model is None or tokenizer is None,
                                      tooltip="needs model and tokenizer" if model is None else "")
        self.strict_value = w.FloatText(value=s.strict_value, description="strict", **num)
        self.partial_per_tag = w.FloatText(value=s.partial_per_tag, description="partial/tag", **num)
        self.tier_thresholds = [w.BoundedFloatText(value=t, min=0.0, max=1.0, step=0.05, description="p >", **num) for t, _ in s.tiers.thresholds]
        self.tier_rewards = [w.FloatText(value=r, description="reward", **num) for _, r in s.tiers.thresholds]
        self.tier_below = w.FloatText(value=s.tiers.below, description="below", **num)
        self.tier_no_answer = w.FloatText(value=s.tiers.no_answer, description="no answer", **num)
        self.weights = [w.FloatText(value=v, description=name.split("_")[0], **num) for name, v in zip(REWARD_NAMES, s.weights)]
        self.verifier = w.Dropdown(options=[(label, i) for i, (label, _) in enumerate(opts)], description="verifier",
                                   value=next(i for i, spec in enumerate(self._verifier_specs) if spec is s.verifier or spec == s.verifier))
        self.scale_rewards = w.Dropdown(options=list(SCALE_OPTIONS), value=s.scale_rewards, description="scale")
        self.prefilled_think = w.Checkbox(value=s.prefilled_think, description="prompt prefills <THINK>")
        self.status = w.HTML()
        self.output = w.HTML()

        controls = [self.strict_value, self.partial_per_tag, *self.tier_thresholds, *self.tier_rewards,
                    self.tier_below, self.tier_no_answer, *self.weights, self.verifier, self.scale_rewards,
                    self.prefilled_think, self.question, self.answer, self.completions]
        for c in controls:
            c.observe(lambda _change: self.refresh(), names="value")
        self.example_pick.observe(lambda change: self.load_example(change["new"]), names="value")
        self.sample_button.on_click(lambda _b: self.sample())

        H = w.HTML
        tiers = w.VBox([w.HBox([t, r]) for t, r in zip(self.tier_thresholds, self.tier_rewards)] + [w.HBox([self.tier_below, self.tier_no_answer])])
        self.widget = w.VBox([
            H("<b>Prompt and completions</b> (pick an example, type or paste, or sample from the model)"),
            self.example_pick, self.question, self.answer, self.completions,
            w.HBox([self.sample_button, self.n_samples, self.sample_temperature, self.sample_tokens, self.sample_seed]),
            w.HBox([
                w.VBox([H("<b>Format rewards</b>"), self.strict_value, self.partial_per_tag, self.prefilled_think]),
                w.VBox([H("<b>Correctness tiers</b> (first p &gt; threshold wins)"), tiers]),
                w.VBox([H("<b>Weights and advantage</b>"), *self.weights, self.verifier, self.scale_rewards]),
            ]),
            self.status, self.output,
        ])
        if self.example_pick.options:
            self.load_example(self.example_pick.value)
        else:
            self.refresh()

    # -- state -------------------------------------------------------------------------------
    @property
    def settings(self) -> RewardSettings:
        """The current settings (raises ``ValueError`` for an invalid tier threshold or weights)."""
        tiers = CorrectnessTiers(
            thresholds=tuple((t.value, r.value) for t, r in zip(self.tier_thresholds, self.tier_rewards)),
            below=self.tier_below.value,
            no_answer=self.tier_no_answer.value,
        )
        return RewardSettings(
            strict_value=self.strict_value.value,
            partial_per_tag=self.partial_per_tag.value,
            tiers=tiers,
            weights=tuple(x.value for x in self.weights),
            verifier=self._verifier_specs[self.verifier.value],
            scale_rewards=self.scale_rewards.value,
            prefilled_think=self.prefilled_think.value,
        )

    def _verifier(self, spec: Any) -> Verifier:
        key = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True, default=repr) if isinstance(spec, dict) else str(id(spec))
        if key not in self._verifiers:
            self._verifiers[key] = resolve_verifier(spec)
        return self._verifiers[key]

    def load_example(self, question: str) -> None:
        """Fill question, reference answer and completions from the shipped examples of ``question``."""
        rows = [r for r in self.examples if r["question"] == question]
        if not rows:
            raise ValueError(f"no shipped example has the question {question[:60]!r}")
        self._labels = {r["completion"].strip("\n"): r["kind"] for r in rows}
        self._quiet = True
        try:
            self.question.value = question
            self.answer.value = rows[0]["answer"]
            self.completions.value = join_completions([r["completion"] for r in rows])
        finally:
            self._quiet = False
        self.refresh()

    def set_completions(self, completions: Sequence[str], labels: Sequence[str] | None = None) -> None:
        """Replace the group (e.g. with completions sampled elsewhere) and recompute."""
        if labels is not None:
            self._labels.update({c.strip("\n"): l for c, l in zip(completions, labels)})
        self.completions.value = join_completions(completions)

    def refresh(self) -> ScoreTable | None:
        """Recompute the table from the widgets; an invalid setting is shown, not raised."""
        if getattr(self, "_quiet", False):
            return self.table
        completions = split_completions(self.completions.value)
        if not completions:
            self.error = "no completions: type or paste some, pick an example, or sample from the model"
            self.status.value = f"<span style='color:#a00'>{html.escape(self.error)}</span>"
            self.output.value = ""
            self.table = None
            return None
        labels = [self._labels.get(c, f"completion {i + 1}") for i, c in enumerate(completions)]
        try:
            settings = self.settings
            table = score_completions(
                completions, self.answer.value, self.question.value, settings,
                verifier=self._verifier(settings.verifier), labels=labels, extra_rewards=self.extra_rewards,
            )
        except (ValueError, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.status.value = f"<span style='color:#a00'>{html.escape(self.error)}</span>"
            return self.table
        self.error = None
        self.table = table
        best = table.labels[table.rank.index(1)]
        self.status.value = f"{len(completions)} completions; highest advantage: <b>{html.escape(best)}</b>"
        self.output.value = table.to_html()
        return table

    def sample(self) -> list[str]:
        """Sample ``n`` completions for the question from the model and show them (needs model and tokenizer)."""
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("RewardPlayground was built without model and tokenizer; pass them to sample")
        from .generation import generate_completions
        from .prompts import grpo_prompt

        self.status.value = "sampling…"
        prompt = grpo_prompt(self.question.value)
        texts = generate_completions(
            self.model, self.tokenizer, [prompt] * self.n_samples.value,
            max_new_tokens=self.sample_tokens.value, temperature=self.sample_temperature.value,
            seed=self.sample_seed.value, batch_size=self.n_samples.value, progress=False, lora_request=self.lora_request,
        )
        self.set_completions(texts, [f"sample {i + 1}" for i in range(len(texts))])
        return texts

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
