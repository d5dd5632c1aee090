"""YAML recipes: the stage configs of each machine class, one file per stage.

``recipes/cpu/{sft,grpo,eval}.yaml``: a 2-core CPU, minutes per stage (SmolLM2-135M, shipped
data; what ``make run`` executes). ``recipes/t4/...``: a Colab T4 (16 GB, fp16).
``recipes/a100/...``: a Colab A100 (40/80 GB, bf16), also used on other GPUs (L4, H100).
``recipes/base/<stage>.yaml`` holds the stage's whole recipe; a machine's file names it with
``extends: ../base/<stage>.yaml`` and sets only what differs (sections such as ``rewards`` merge
one level down, as overrides do). Each file sets the fields of its stage config
(:mod:`medreason_utils.config.stages`) or of TRL's config, read with PyYAML's ``safe_load``; a key
that is neither is an error naming the file and the nearest valid name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .paths import recipes_dir
from .stages import STAGES, SettingError, StageConfig, merge_settings

__all__ = ["MACHINE_CLASSES", "recipe_for_runtime", "recipe_path", "read_recipe", "load_stage_config"]

#: The machine classes a recipe exists for.
MACHINE_CLASSES = ("cpu", "t4", "a100")


def recipe_for_runtime(runtime: Any) -> str:
    """The recipe of a runtime (:class:`medreason_utils.models.RuntimeInfo`): ``"cpu"`` without CUDA,
    ``"t4"`` on a T4, ``"a100"`` on any other GPU (A100, L4, H100: 24 GB or more, bf16)."""
    kind = getattr(runtime, "gpu_kind", "cpu")
    return "cpu" if kind == "cpu" else "t4" if kind == "t4" else "a100"


def recipe_path(stage: str, recipe: str | Path) -> Path:
    """The YAML file of ``stage`` for ``recipe``: a machine class (``"cpu"``, ``"t4"``, ``"a100"``,
    read from ``recipes/<class>/<stage>.yaml`` of the checkout) or a path to a YAML file.

    Raises ``KeyError`` for an unknown stage, ``FileNotFoundError`` naming the file."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
    r = str(recipe)
    path = recipes_dir() / r / f"{stage}.yaml" if r in MACHINE_CLASSES else Path(r).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe file {path} does not exist (recipes: {', '.join(MACHINE_CLASSES)} in {recipes_dir()}, or a YAML file)"
        )
    return path


def read_recipe(path: str | Path, *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of one recipe file (a YAML mapping; an empty file is ``{}``), with the file it
    ``extends`` (a path relative to the file's folder) read first and overlaid by this file's values
    (:func:`~medreason_utils.config.stages.merge_settings`).

    Raises ``ValueError`` naming the file when it is not valid YAML, not a mapping, or extends itself
    (a cycle); ``FileNotFoundError`` naming the file and the missing base."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {path} is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"recipe {path} is not UTF-8 text: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of settings, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise SettingError(f"recipe {path}: extends must be the path of a recipe file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ValueError(f"recipe {path} extends {base}, which extends it again (a cycle)")
    if not base_path.is_file():
        raise FileNotFoundError(f"recipe {path} extends {base}: {base_path} does not exist")
    return merge_settings(read_recipe(base_path, _seen=_seen + (path.resolve(),)), data)


def load_stage_config(
    stage: str,
    recipe: str | Path | None = None,
    runtime: Any = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    run_dir: str | Path | None = None,
    label: str = "OVERRIDES",
) -> StageConfig:
    """The resolved config of ``stage`` (``"sft"``, ``"grpo"``, ``"eval"``): a recipe plus overrides.

    Args:
        recipe: a machine class (``"cpu"``, ``"t4"``, ``"a100"``) or a YAML file; ``None``: the
            runtime's class (:func:`recipe_for_runtime`).
        runtime: :class:`medreason_utils.models.RuntimeInfo` (``detect_runtime()`` when ``None``
            and ``recipe`` is ``None``).
        overrides: settings to change, e.g. ``{"max_steps": 2}`` (a notebook's ``OVERRIDES``);
            nested sections merge (``{"rewards": {"verifier": "rule"}}``).
        label: how errors in ``overrides`` name them (``"OVERRIDES"``, a notebook's cell; ``"the command line"``).
        run_dir: the run folder; fills the run's own paths left ``None`` in the recipe: the GRPO
            stage's ``sft_adapter`` (``run_dir/sft_adapter``) and the evaluation's ``adapters``
            (base, ``run_dir/sft_adapter``, ``run_dir/grpo_adapter``).

    Returns:
        An :class:`~medreason_utils.config.stages.SFTStageConfig`, ``GRPOStageConfig`` or
        ``EvalStageConfig``; ``config.recipe`` names the file and the overrides.

    Raises:
        KeyError: unknown stage; ``UnknownSettingError`` (a ``KeyError`` and a ``SettingError``) for a
            setting that is neither the stage's nor TRL's, naming the file or ``OVERRIDES`` and the nearest name.
        FileNotFoundError: no such recipe. SettingError (a ``ValueError``): a value of the wrong type or range.
    """
    if recipe is None:
        if runtime is None:
            from ..models import detect_runtime

            runtime = detect_runtime()
        recipe = recipe_for_runtime(runtime)
    path = recipe_path(stage, recipe)
    data = read_recipe(path)
    data.setdefault("recipe", f"recipes/{recipe}/{stage}.yaml" if str(recipe) in MACHINE_CLASSES else str(path))
    config = STAGES[stage].from_dict(data, source=str(path)).with_overrides(overrides, label=label)
    if run_dir is not None:
        run = str(run_dir)
        if stage == "grpo" and config.sft_adapter is None:
            config = config.replace(sft_adapter=f"{run}/sft_adapter")
        if stage == "eval" and config.adapters is None:
            config = config.replace(adapters={"base": None, "sft": f"{run}/sft_adapter", "grpo": f"{run}/grpo_adapter"})
    return config
