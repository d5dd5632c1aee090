"""``medreason sft|grpo|eval|export``: the notebooks' stages from a command line, on one machine or launched on several GPUs.

::

    medreason sft  --config recipes/cpu/sft.yaml  --output_dir runs/x
    medreason grpo --config recipes/cpu/grpo.yaml --output_dir runs/x --max_steps 2
    medreason eval --config cpu --output_dir runs/x --limit 10
    medreason export --output_dir runs/x --format merged_16bit --push_to_hub me/medreason-135m
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
``medreason export`` runs notebook 04's export cell (:func:`medreason_utils.training.export.export_adapter`)
on the run's GRPO adapter (else the shipped checkpoint, as notebook 04), or ``--adapter``.

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

__all__ = ["Invocation", "ExportInvocation", "build_parser", "parse", "main", "user_errors"]

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
        description="Run a stage of the medreason pipeline (what notebooks 01-03 do) from a recipe, writing the run folder, "
                    "or export an adapter (notebook 04's export).",
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{sft,grpo,eval,export}")
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
        if stage in ("sft", "grpo"):
            p.add_argument("--push_adapter_to", dest="push_to", default=None, metavar="REPO_ID",
                           help="push the trained adapter with its model card to this Hub model repo (owner/name) at the "
                                "end, as the notebooks' PUSH_TO_HUB; the token only from $HF_TOKEN (checked before "
                                "training). TRL's own push_to_hub/hub_model_id push the trainer's folder instead")
        if stage == "grpo":
            p.add_argument("--resume", action="store_true", default=False,
                           help="continue from the last checkpoint in DIR/grpo_trainer (saved every save_steps steps)")
        group = p.add_argument_group(f"settings ({cls.__name__}; a value is read as YAML)")
        for name, text in _settings(cls):
            group.add_argument(f"--{name}", dest=f"set:{name}", metavar="VALUE", help=text.replace("%", "%%"))
    _add_export_parser(sub)
    return parser


def _add_export_parser(sub: Any) -> None:
    """``medreason export``: notebook 04's export cell; its options are that cell's parameters."""
    from ..training.export import DEFAULT_FORMATS, DEFAULT_GGUF_QUANTIZATION, FORMATS, TOKEN_VARIABLES

    p = sub.add_parser("export", help="merged 16-bit model, GGUF, Hub push of an adapter (notebook 04's export)",
                       description="Export a LoRA adapter as notebook 04's export cell does "
                                   "(medreason_utils.training.export.export_adapter): the merged 16-bit model "
                                   "(loads with plain transformers), GGUF (a CUDA GPU with Unsloth), a Hub push "
                                   "with its model card. The Hub token is read from the environment "
                                   f"({' or '.join(TOKEN_VARIABLES)}) or Colab's secret HF_TOKEN, never from an argument.")
    p.add_argument("--adapter", "--checkpoint", dest="adapter", default=None, metavar="FOLDER_OR_HUB_ID",
                   help="a LoRA adapter folder, a folder of adapters (the newest), or a hub id 'owner/name'; default "
                        "as notebook 04: DIR/grpo_adapter when there is one, else checkpoints/medreason-smollm2-135m-grpo")
    p.add_argument("--output_dir", "--run_dir", dest="output_dir", default="runs/latest", metavar="DIR",
                   help="the run folder: the merged model goes to DIR/merged_16bit, the GGUF to DIR/gguf "
                        "(default runs/latest)")
    p.add_argument("--format", dest="formats", action="append", default=None, metavar="FORMAT",
                   help=f"what to write, repeated or comma-separated: {', '.join(FORMATS)} ('adapter': nothing "
                        f"written, the adapter is what --push_to_hub sends); default {','.join(DEFAULT_FORMATS)}")
    p.add_argument("--gguf_quantization", "--gguf-quantization", dest="gguf_quantization",
                   default=DEFAULT_GGUF_QUANTIZATION, metavar="METHOD",
                   help=f"llama.cpp's quantisation of the GGUF (default {DEFAULT_GGUF_QUANTIZATION}; q8_0, f16, ...)")
    p.add_argument("--push_to_hub", "--push-to-hub", dest="push_to", default=None, metavar="REPO_ID",
                   help="push the merged model (or, without merged_16bit, the adapter) with its card to this "
                        "private Hub repo 'owner/name'; the token from $HF_TOKEN")


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
    push_to: str | None = None


@dataclasses.dataclass(frozen=True)
class ExportInvocation:
    """``medreason export``: the adapter as given (``None``: notebook 04's default), the run folder, the
    formats as given (checked by ``export_adapter``), the GGUF quantisation, the Hub repo to push to."""

    adapter: str | None
    run_dir: Path
    formats: tuple[str, ...]
    gguf_quantization: str
    push_to: str | None
    stage: str = "export"


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
    if args.stage == "export":
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        from ..training.export import DEFAULT_FORMATS

        return ExportInvocation(args.adapter, Path(args.output_dir), tuple(args.formats or DEFAULT_FORMATS),  # type: ignore[return-value]
                                args.gguf_quantization, args.push_to)
    cls = STAGES[args.stage]
    overrides = {k[4:]: _value(v) for k, v in vars(args).items() if k.startswith("set:")}
    overrides.update(_dotted_extras(extras, cls, parser.error))
    run_dir = Path(args.output_dir)
    config = load_stage_config(args.stage, args.config, None, overrides or None, run_dir=run_dir, label="the command line")
    return Invocation(args.stage, config, run_dir, args.config, bool(args.dry_run), bool(getattr(args, "resume", False)),
                      getattr(args, "push_to", None))


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that are the user's error, not a bug: the command prints their message in one line
    and exits with status 2 (:func:`main`). Any other exception is a bug: its traceback is shown, status 1.

    * :class:`medreason_utils.fileio.UserInputError` and its subclasses: bad data
      (:class:`medreason_utils.data.DataError`, naming file and line), an unreadable artefact of the run folder
      (:class:`medreason_utils.fileio.CorruptFileError`), and any later error raised for bad input;
    * :class:`medreason_utils.config.SettingError` (and ``UnknownSettingError``): a setting not allowed, naming it
      and the recipe or the command line;
    * ``FileNotFoundError``: a path the user gave (recipe, data file, adapter folder, checkpoint) does not exist;
      the package opens no file of its own that could be missing.

    Not included, on purpose: plain ``ValueError``/``KeyError``/``TypeError`` raised *after* the settings were
    read, which may be bugs (a wrong shape, a missing key in our own records), so they keep their traceback.
    (While parsing, :func:`parse` runs only the config's checks, so there every ``KeyError``/``TypeError``/
    ``ValueError`` is the user's.)
    """
    from ..config.stages import SettingError
    from ..fileio import UserInputError

    return (UserInputError, SettingError, FileNotFoundError)


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args and type(exc).__str__ is KeyError.__str__ else exc
    return " ".join(str(text).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medreason`` and ``python -m medreason_utils.pipeline.cli``: parse, run the stage, print its summary.

    Returns 0. A user error (a bad option or setting while parsing; afterwards one of :func:`user_errors`: bad
    data, a missing file or adapter, an unreadable run record) prints ``medreason: error: <what was wrong>`` in
    one line on stderr and returns 2; set ``MEDREASON_TRACEBACK=1`` to see its traceback too. Any other
    exception is a bug and propagates with its traceback (exit status 1).
    """
    import os

    try:
        inv = parse(argv)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("MEDREASON_TRACEBACK"):
            raise
        print(f"medreason: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        return _run(inv)
    except user_errors() as exc:
        if os.environ.get("MEDREASON_TRACEBACK"):
            raise
        print(f"medreason {inv.stage}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _export(inv: ExportInvocation) -> int:
    """``medreason export``: notebook 04's calls, in its order: the adapter (``find_checkpoint`` of
    ``--adapter`` or ``default_demo_adapter`` of the run folder, as ``load_demo_model`` resolves it), then
    ``export_adapter`` (which checks the formats, the GPU and the token before writing anything). Prints
    what was written and pushed (never the token)."""
    from ..config import default_demo_adapter
    from ..training.export import export_adapter
    from ..ui.demo import find_checkpoint

    adapter = find_checkpoint(inv.adapter or default_demo_adapter(inv.run_dir))
    result = export_adapter(adapter, inv.run_dir, formats=inv.formats, gguf_quantization=inv.gguf_quantization,
                            push_to=inv.push_to)
    print(result.describe())
    return 0


def _run(inv: Invocation) -> int:
    """Run the stage of ``inv`` and print its summary (the part of :func:`main` after parsing)."""
    import json

    if isinstance(inv, ExportInvocation):
        return _export(inv)
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
        section = stages.run_sft(inv.config, inv.run_dir, runtime=runtime, push_to=inv.push_to)
    elif inv.stage == "grpo":
        section = stages.run_grpo(inv.config, inv.run_dir, runtime=runtime, resume=inv.resume, push_to=inv.push_to)
    else:
        section = stages.run_eval(inv.config, inv.run_dir, runtime=runtime, recipe=inv.recipe)
    if state.is_main_process:
        shown = {k: v for k, v in section.items() if k not in ("config", "reward_history", "comparisons")}
        print(json.dumps(shown, indent=1, default=str))
        print(f"summary: {inv.run_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
