"""``medreason sft|grpo|eval``: the notebooks' stages from a command line, on one machine or launched on several GPUs.

::

    medreason sft  --config recipes/cpu/sft.yaml  --output_dir runs/x
    medreason grpo --config recipes/cpu/grpo.yaml --output_dir runs/x --max_steps 2
    medreason eval --config cpu --output_dir runs/x --limit 10
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m medreason_utils.pipeline.cli \\
        grpo --config recipes/multi_gpu/grpo.yaml --output_dir runs/x

``--config`` is a recipe: a machine class (``cpu``, ``t4``, ``a100``: ``recipes/<class>/<stage>.yaml``)
or a YAML file; without it, this machine's class, as in the notebooks. Every setting of the
stage's config can be changed in TRL's style, ``--max_steps 2``; a value is read as YAML
(``--load_in_4bit true``, ``--benchmarks '[medqa, pubmedqa]'``), a setting of a section with
a dot (``--rewards.verifier rule``, ``--server.concurrency 32``), and any field of TRL's config by TRL's
name (``--mask_truncated_completions true``, ``--use_vllm true --vllm_mode colocate``).
``medreason grpo --help`` lists every setting with its help text. ``--output_dir`` is the run
folder (default ``runs/latest``); ``--dry_run`` prints the resolved settings and stops.

Why not TRL's ``TrlParser``: it reads these dataclasses, but it hands the recipe's values to
the dataclass unchecked (``rewards`` stays a plain dict, not the :class:`RewardSettings` the
trainer builds rewards from; ``num_train_epochs: 2`` stays an int) and has no way to change one setting of
a section. This module is a thin argparse layer over
:func:`medreason_utils.config.load_stage_config`, which reads, checks and merges the overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Invocation", "build_parser", "parse", "main"]

#: Options of the command itself (not settings of a stage config).
_OWN = {"config", "output_dir", "dry_run", "resume"}


def _value(text: str) -> Any:
    """A command-line value read as YAML: ``2`` -> 2, ``true`` -> True, ``null`` -> None, ``[a, b]`` -> a list;
    anything YAML cannot read stays the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _settings(cls: type) -> list[tuple[str, str]]:
    """``(option name, help)`` for every setting of stage config ``cls``, a section's settings dotted."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ("recipe", "trl_args"):
            continue
        out.append((f.name, f.metadata.get("help", "")))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            out += [(f"{f.name}.{sub.name}", sub.metadata.get("help", "")) for sub in dataclasses.fields(default)]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``medreason`` parser: one sub-command per stage, one option per setting of its config (help from the field)."""
    from ..config import STAGES

    parser = argparse.ArgumentParser(
        prog="medreason",
        description="Run a stage of the medreason pipeline (what notebooks 01-03 do) from a recipe, writing the run folder.",
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{sft,grpo,eval}")
    titles = {"sft": "LoRA SFT (notebook 01)", "grpo": "GRPO from the SFT adapter (notebook 02)",
              "eval": "evaluation of base, SFT and GRPO (notebook 03)"}
    for stage, cls in STAGES.items():
        p = sub.add_parser(stage, help=titles.get(stage, stage), description=f"{titles.get(stage, stage)}: {cls.__doc__}",
                           argument_default=argparse.SUPPRESS)
        p.add_argument("--config", default=None, metavar="RECIPE",
                       help="a machine class (cpu, t4, a100: recipes/<class>/<stage>.yaml) or a YAML file; "
                            "default: this machine's class")
        p.add_argument("--output_dir", "--run_dir", dest="output_dir", default="runs/latest", metavar="DIR",
                       help="the run folder: adapters, plots, summary.json (default runs/latest); GRPO starts from "
                            "DIR/sft_adapter unless --sft_adapter is given, the evaluation scores DIR's adapters")
        p.add_argument("--dry_run", action="store_true", default=False,
                       help="print the resolved settings and stop (nothing is loaded)")
        if stage == "grpo":
            p.add_argument("--resume", action="store_true", default=False,
                           help="continue from the last checkpoint in DIR/grpo_trainer (saved every save_steps steps)")
        group = p.add_argument_group(f"settings ({cls.__name__}; a value is read as YAML)")
        for name, text in _settings(cls):
            group.add_argument(f"--{name}", dest=f"set:{name}", metavar="VALUE", help=text.replace("%", "%%"))
    return parser


def _dotted_extras(extras: Sequence[str], cls: type, error: Any) -> dict[str, Any]:
    """The options the parser does not declare: ``--section.key value`` / ``--section.key=value`` for the mapping
    settings (``server``, ``rewards``), and ``--trl_field value`` for any field of TRL's config
    (``--mask_truncated_completions true``), which the stage config checks against TRL's own dataclass fields
    (naming the nearest valid name). A token that is not an option goes to ``error`` (argparse's, exit status 2)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extras):
        token = extras[i]
        if not token.startswith("--") or token == "--":
            error(f"unrecognized argument: {token}")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(extras) or extras[i + 1].startswith("--"):
                error(f"argument {token}: expected a value")
            value = extras[i + 1]
            i += 1
        out[key] = _value(value)
        i += 1
    return out


@dataclasses.dataclass(frozen=True)
class Invocation:
    """What the command line asked for: the stage, its resolved config, the run folder, the recipe as given."""

    stage: str
    config: Any
    run_dir: Path
    recipe: str | None
    dry_run: bool
    resume: bool = False


def parse(argv: Sequence[str] | None = None) -> Invocation:
    """The :class:`Invocation` of command-line arguments ``argv`` (``sys.argv[1:]`` when ``None``).

    The config is :func:`medreason_utils.config.load_stage_config` of ``--config`` with every
    ``--setting value`` as an override (``run_dir`` fills GRPO's ``sft_adapter`` and the
    evaluation's ``adapters`` when the recipe leaves them ``null``). Raises ``SystemExit(2)`` with
    argparse's message for a bad option, and the config's ``KeyError``/``TypeError``/``ValueError``/
    ``FileNotFoundError`` naming the setting or the file.
    """
    from ..config import STAGES, load_stage_config

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    cls = STAGES[args.stage]
    overrides = {k[4:]: _value(v) for k, v in vars(args).items() if k.startswith("set:")}
    overrides.update(_dotted_extras(extras, cls, parser.error))
    run_dir = Path(args.output_dir)
    config = load_stage_config(args.stage, args.config, None, overrides or None, run_dir=run_dir, label="the command line")
    return Invocation(args.stage, config, run_dir, args.config, bool(args.dry_run), bool(getattr(args, "resume", False)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medreason`` and ``python -m medreason_utils.pipeline.cli``: parse, run the stage, print its summary.

    Returns 0; a bad option or setting exits with status 2 and a message naming it.
    """
    import json

    try:
        inv = parse(argv)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as exc:
        print(f"medreason: error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    if inv.dry_run:
        print(inv.config.describe())
        return 0

    from ..models import detect_runtime
    from . import stages

    runtime = detect_runtime()
    state = stages.process_state(runtime)
    if state.is_main_process:
        print(f"medreason {inv.stage}: {inv.config.recipe} -> {inv.run_dir} | {runtime.device} {runtime.gpu_name or ''} | "
              f"{state.num_processes} process(es)", flush=True)
    if inv.stage == "sft":
        section = stages.run_sft(inv.config, inv.run_dir, runtime=runtime)
    elif inv.stage == "grpo":
        section = stages.run_grpo(inv.config, inv.run_dir, runtime=runtime, resume=inv.resume)
    else:
        section = stages.run_eval(inv.config, inv.run_dir, runtime=runtime, recipe=inv.recipe)
    if state.is_main_process:
        shown = {k: v for k, v in section.items() if k not in ("config", "reward_history", "comparisons")}
        print(json.dumps(shown, indent=1, default=str))
        print(f"summary: {inv.run_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
