"""The three stages as functions, for the command line and scripts: what notebooks 01-03 run, cell by cell.

:func:`run_sft`, :func:`run_grpo` and :func:`run_eval` call the same package functions as the
notebooks, in the same order, and write the same run folder: ``sft_adapter/``,
``heldout_questions.json``, ``grpo_adapter/``, ``grpo_rewards.png``, ``eval/`` and the sections
``sft``, ``grpo``, ``eval`` of ``summary.json`` (each with the resolved config).

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
from pathlib import Path
from typing import Any, Iterator, Sequence

from .reporting import Timer, plot_reward_curves, reward_history, run_training_data, update_summary

__all__ = ["run_sft", "run_grpo", "run_eval", "eval_models", "training_data_for_decontamination", "process_state"]


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


def run_sft(config: Any, run_dir: str | Path, *, runtime: Any = None) -> dict:
    """Notebook 01 as a function: format compliance before, LoRA SFT, the adapter, format compliance after.

    Writes ``run_dir/sft_adapter``, ``run_dir/heldout_questions.json`` and the ``sft`` section of
    ``summary.json`` (main process). Returns that section. ``config`` is an
    :class:`~medreason_utils.config.SFTStageConfig`. Raises ``ValueError`` for several GPU
    processes with an engine other than ``transformers``, and what the steps raise.
    """
    from ..evaluation import format_compliance
    from ..models import add_lora, detect_runtime, load_model, vllm_lora_request
    from ..training import sft_data, sft_trainer

    runtime = runtime or detect_runtime()
    state = process_state(runtime)
    _check_engine_for_processes(config, state, runtime)
    run = Path(run_dir)
    model, tokenizer = load_model(config.base_model, load_in_4bit=config.load_in_4bit, max_seq_length=config.max_seq_length,
                                  lora_rank=config.lora_rank, engine=config.engine, runtime=runtime)
    data = sft_data(config, tokenizer)
    gen = dict(max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size)
    completions_before = _generate_split(state, model, tokenizer, data.heldout["prompt"], desc="before SFT", **gen)
    fc_before = format_compliance(completions_before)

    model = add_lora(model, rank=config.lora_rank, seed=config.seed, runtime=runtime, engine=config.engine)
    trainer = sft_trainer(model, tokenizer, data.train, config, output_dir=run / "sft_trainer", runtime=runtime)
    with Timer() as sft_time:
        train_out = trainer.train()

    sft_dir = _save_trained_adapter(trainer, model, tokenizer, run / "sft_adapter", state)
    tokenizer.padding_side = "left"
    with _for_generation(trainer, model) as gen_model:
        completions_after = _generate_split(state, gen_model, tokenizer, data.heldout["prompt"], desc="after SFT",
                                            lora_request=vllm_lora_request(gen_model, sft_dir), **gen)
    fc_after = format_compliance(completions_after)
    section = {"config": config.to_dict(), "steps": train_out.global_step, "train_seconds": sft_time.seconds,
               "final_loss": train_out.training_loss, "rows_skipped": data.train_report.n_skipped,
               "format_compliance_before": fc_before, "format_compliance_after": fc_after,
               "n_heldout_scored": len(completions_after), "processes": state.num_processes}
    if state.is_main_process:
        (run / "heldout_questions.json").write_text(json.dumps(list(data.heldout["question"])))
        update_summary(run, "sft", section)
    state.wait_for_everyone()
    return section


def run_grpo(config: Any, run_dir: str | Path, *, runtime: Any = None, resume: bool = False) -> dict:
    """Notebook 02 as a function: GRPO from ``config.sft_adapter`` with the rewards of ``config.rewards``.

    Leaves out the questions in ``run_dir/heldout_questions.json`` when it exists (notebook 01's),
    builds the verifier and the reward functions from ``config.rewards`` (what the notebook does
    after its playground), orders the prompts easy to hard when ``config.curriculum`` is set, trains
    (from the last checkpoint in ``run_dir/grpo_trainer`` when ``resume``), and writes (main process)
    ``run_dir/grpo_adapter``, ``run_dir/grpo_rewards.png``, ``run_dir/grpo_completions.csv`` (with
    ``log_completions``), the reward evaluation (``reward_eval_prompts`` > 0) and the ``grpo`` section
    of ``summary.json``, which it returns. ``reward_history`` holds TRL's logged reward means: over the
    completions of every process (TRL gathers the rewards before it logs them). Raises ``ValueError``
    when ``sft_adapter`` is unset, for several GPU processes without ``engine: transformers``, when the
    saved adapter is all zero; ``FileNotFoundError`` for ``resume`` without a checkpoint; and what the steps raise.
    """
    from ..models import adapter_nonzero, detect_runtime, load_model
    from ..training import completions_table, evaluate_rewards, grpo_prompts, grpo_trainer, last_checkpoint, order_by_pass_rate
    from ..verifiers import make_verifier

    runtime = runtime or detect_runtime()
    state = process_state(runtime)
    _check_engine_for_processes(config, state, runtime)
    if config.sft_adapter is None:
        raise ValueError("GRPO continues an SFT adapter: set sft_adapter (a folder or hub id; the shipped "
                         "checkpoints/medreason-smollm2-135m-grpo works on CPU) or give the SFT run's folder as output_dir")
    run = Path(run_dir)
    trainer_dir = run / "grpo_trainer"
    checkpoint = last_checkpoint(trainer_dir, save_steps=config.save_steps) if resume else None
    model, tokenizer = load_model(adapter=config.sft_adapter, trainable=True, load_in_4bit=config.load_in_4bit,
                                  engine=config.engine, runtime=runtime)
    held = run / "heldout_questions.json"
    grpo = grpo_prompts(config, exclude=json.loads(held.read_text()) if held.is_file() else [])
    eval_prompts = grpo.heldout_prompts(config.reward_eval_prompts) if config.reward_eval_prompts > 0 else None
    verifier = make_verifier(config.rewards.verifier)
    reward_funcs = config.rewards.reward_funcs(verifier)
    prompts = grpo.prompts
    if config.curriculum:
        prompts = order_by_pass_rate(prompts, model, tokenizer, config, config.rewards.reward_funcs(verifier),
                                     progress=state.is_main_process)
    trainer = grpo_trainer(model, tokenizer, prompts, config, output_dir=trainer_dir, runtime=runtime,
                           reward_funcs=reward_funcs)
    with Timer() as grpo_time:
        train_out = trainer.train(resume_from_checkpoint=checkpoint)

    history = reward_history(trainer.state.log_history, [f.__name__ for f in reward_funcs])
    grpo_dir = _save_trained_adapter(trainer, model, tokenizer, run / "grpo_adapter", state)
    section: dict[str, Any] = {"config": config.to_dict(), "steps": train_out.global_step, "train_seconds": grpo_time.seconds,
                               "verifier": repr(verifier), "reward_history": history, "processes": state.num_processes,
                               "completions_per_step": config.batch_size * config.grad_accum * state.num_processes,
                               "data_mix": grpo.sources, "resumed_from": Path(checkpoint).name if checkpoint else None}
    if state.is_main_process:
        plot_reward_curves(history, run / "grpo_rewards.png")
        check = adapter_nonzero(grpo_dir)
        if not check["lora_B_abs_sum"] > 0:
            raise ValueError(f"the saved adapter {grpo_dir} is all zero")
        correctness = next((f for f in reward_funcs if f.__name__ == "correctness_reward"), None)
        section.update(adapter=check, unscored_items=getattr(getattr(correctness, "counter", None), "unscored", None))
        if config.log_completions:
            completions_table(trainer_dir, run / "grpo_completions.csv", reward_names=[f.__name__ for f in reward_funcs])
            section["completions_table"] = "grpo_completions.csv"
        if eval_prompts is not None:
            with Timer() as eval_time:
                record, _ = evaluate_rewards(config, eval_prompts, {"before": config.sft_adapter, "after": grpo_dir},
                                             model=model, tokenizer=tokenizer, verifier=verifier)
            section["reward_eval"] = {**record, "seconds": eval_time.seconds}
        update_summary(run, "grpo", section)
    state.wait_for_everyone()
    return section


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


def run_eval(config: Any, run_dir: str | Path, *, training_data: Sequence[str] = (), runtime: Any = None) -> dict:
    """Notebook 03 as a function: the same items for every model, decontaminated, scored, reported.

    ``training_data``: the SFT and GRPO data to check for overlaps
    (:func:`training_data_for_decontamination`); the items are drawn (``config.limit``) from what
    decontamination keeps, so ``limit`` items remain where the benchmark has enough. Writes ``run_dir/eval/`` (per-item JSONL, which a
    rerun resumes, tables, comparisons, ``results.png``) and the ``eval`` section of
    ``summary.json``, which it returns. Raises ``ValueError`` when started in several processes
    (scale the evaluation with ``vllm serve`` and ``config.server`` instead).
    """
    from ..evaluation import drop_overlapping_items, evaluate_models, find_overlaps, load_benchmark, select_items, training_questions
    from ..models import detect_runtime, load_model

    runtime = runtime or detect_runtime()
    state = process_state(runtime)
    if state.num_processes > 1:
        raise ValueError(f"the evaluation runs in one process, not {state.num_processes}: serve the models with vllm serve "
                         "(data parallel there) and set server: {base_url, models, concurrency}")
    run = Path(run_dir)
    eval_dir = run / "eval"
    items = {}
    for name in config.benchmarks:
        items[name], _ = load_benchmark(name, config.data.get(name), on_bad_row="skip")
    overlaps = find_overlaps(training_questions(*training_data), items) if training_data else []
    items, dropped = drop_overlapping_items(items, overlaps)
    items = {name: select_items(its, config.limit, config.subset_seed) for name, its in items.items()}
    models = eval_models(config)
    base = load_model(config.base_model) if (runtime.on_gpu and config.server is None) else None
    table = evaluate_models(models, items, eval_dir, styles={"base": list(config.base_styles)} if "base" in models else None,
                            base=base, base_model=config.base_model, max_new_tokens=config.max_new_tokens,
                            batch_size=config.batch_size, seed=config.seed, resume=config.resume_items)
    section = {"config": config.to_dict(), "table": table, "overlaps_dropped": dropped,
               "comparisons": json.loads((eval_dir / "summary.json").read_text())["comparisons"]}
    update_summary(run, "eval", section)
    return section
