"""The Colab GPU stack: which lock file a GPU takes, installing it, and checking it without a GPU.

Two lock files at the top of the repository pin the whole GPU stack (Unsloth, vLLM, torch, TRL,
transformers, peft, datasets, ...) for Colab (Python 3.12, Linux x86_64, glibc 2.35). Each is the full
``uv pip compile`` resolution of the ``.in`` file of the same name (``make lock-gpu`` regenerates both):

* ``requirements-gpu-t4.txt``: GPUs of compute capability below 8.0 (a Colab T4 is 7.5). vLLM 0.11.2,
  the newest vLLM with an attention backend for Turing (xformers), after Unsloth's Colab GRPO template
  (``update_all_notebooks.py`` in unslothai/notebooks).
* ``requirements-gpu.txt``: compute capability 8.0 and up (A100 8.0, L4 8.9, H100 9.0). vLLM 0.15.1.

triton is pinned in both locks at exactly the version their torch requires (torch 2.9.x names one
triton), which is what Unsloth's template gets by installing a bare ``triton`` apart, without
``--upgrade``; the old ``triton==3.2.0`` pin could not resolve with vLLM's torch (issue 8, defect 1).
numpy, pillow, pandas and pyzmq are left out of the locks (:data:`NOT_EMITTED`): Colab's kernel and
preinstalled libraries run on its own copies, and the installer keeps them when they satisfy the stack.

The notebooks' set-up cell calls :func:`install_on_colab` (standard library only: it runs before
anything is installed). The tests call :func:`verify_lock` (needs the package index) and the
``test-gpu-libs`` make target builds a CPU venv with the GPU lock's libraries via
:func:`cpu_requirements_with_lock`.

Command line: ``python -m medreason_utils.pipeline.gpu_stack {lock,verify,cpu-requirements,check-installed}``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOCK_T4",
    "LOCK_DEFAULT",
    "LOCKS",
    "NOT_EMITTED",
    "GPU_LIBS",
    "GpuStackError",
    "Gpu",
    "query_gpu",
    "lock_file_for",
    "read_pins",
    "run_checked",
    "installed_mismatches",
    "imported_distributions",
    "install_on_colab",
    "compile_command",
    "verify_lock",
    "cpu_requirements_with_lock",
    "main",
]

#: Lock of GPUs below compute capability 8.0 (Colab T4: 7.5).
LOCK_T4 = "requirements-gpu-t4.txt"
#: Lock of GPUs of compute capability 8.0 and up (A100, L4, H100).
LOCK_DEFAULT = "requirements-gpu.txt"
#: lock file -> the ``.in`` file it is resolved from
LOCKS: dict[str, str] = {LOCK_T4: "requirements-gpu-t4.in", LOCK_DEFAULT: "requirements-gpu.in"}
#: First compute capability that takes :data:`LOCK_DEFAULT` (FlashAttention needs sm80; below it vLLM
#: 0.11.2 falls back to xformers, a backend vLLM 0.12 removed).
AMPERE = (8, 0)
#: Colab target of the locks (``uv pip compile --python-version/--python-platform``).
PYTHON_VERSION = "3.12"
PYTHON_PLATFORM = "x86_64-manylinux_2_35"
#: Packages the locks leave to the machine (``--no-emit-package``): Colab's kernel (pyzmq) and its
#: preinstalled libraries run on its own copies; Unsloth's template holds numpy and pillow too.
#: ``protobuf`` and ``googleapis-common-protos``: Colab's kernel has imported them before the set-up cell
#: runs (its own Google libraries), so a lock pinning other versions made every fresh runtime stop once
#: asking for a restart (issue 19, defect 5); the stack needs only a range of them (vLLM's grpcio and
#: opentelemetry), which the install keeps Colab's copies in or else upgrades into.
NOT_EMITTED = ("numpy", "pillow", "pandas", "pyzmq", "protobuf", "googleapis-common-protos")
#: The GPU lock's libraries that the ``test-gpu-libs`` venv takes (with CPU torch; no unsloth, vllm,
#: bitsandbytes), so that transformers 4.x vs 5.x drift shows on a CPU.
GPU_LIBS = ("transformers", "trl", "peft", "datasets", "accelerate", "sentence-transformers")
#: Their dependencies that the ``test-gpu-libs`` venv also takes at the lock's versions (as constraints).
GPU_LIBS_DEPS = ("huggingface-hub", "tokenizers", "safetensors")
#: uv, installed on Colab to install the lock (the same version the CPU venv uses to resolve it).
UV_REQUIREMENT = "uv==0.13.9"
#: how the locks are regenerated (written into their header)
REGENERATE = "make lock-gpu"


class GpuStackError(RuntimeError):
    """The GPU stack cannot be installed as asked (no GPU, a failed install, a restart needed)."""


def _norm(name: str) -> str:
    """PEP 503 normalised project name (``Sentence_Transformers`` -> ``sentence-transformers``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` reports it; ``compute_capability`` is None when the driver does not say."""

    name: str
    compute_capability: tuple[int, int] | None


def query_gpu(nvidia_smi: str = "nvidia-smi") -> Gpu:
    """The first GPU of this machine, from ``nvidia-smi --query-gpu=name,compute_cap``.

    Raises :class:`GpuStackError` when there is no NVIDIA driver or GPU (on Colab: a CPU runtime).
    """
    exe = shutil.which(nvidia_smi)
    if exe is None:
        raise GpuStackError(
            "no NVIDIA GPU in this runtime (nvidia-smi not found). On Colab: Runtime > Change runtime type > "
            "T4 GPU (or A100 / L4), then run this cell again. Without a GPU, run the suite's CPU path "
            "(`make run`) on a machine with Python 3.11."
        )
    proc = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        name, _, cap = proc.stdout.strip().splitlines()[0].rpartition(",")
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", cap)
        if name and match:
            return Gpu(name.strip(), (int(match.group(1)), int(match.group(2))))
    # older drivers know no compute_cap field: the name alone
    proc = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GpuStackError(f"nvidia-smi found no GPU (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return Gpu(proc.stdout.strip().splitlines()[0].strip(), None)


def lock_file_for(gpu: Gpu) -> str:
    """:data:`LOCK_T4` for compute capability < 8.0 (T4, V100), else :data:`LOCK_DEFAULT`.

    Without a compute capability, a name containing ``T4`` or ``V100`` counts as below 8.0 (Unsloth's
    template tests ``"Tesla T4" in nvidia-smi``'s output).
    """
    if gpu.compute_capability is not None:
        return LOCK_T4 if gpu.compute_capability < AMPERE else LOCK_DEFAULT
    return LOCK_T4 if re.search(r"\b(T4|V100)\b", gpu.name) else LOCK_DEFAULT


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)\s*(;[^#]*)?(#.*)?$")  # an environment marker may follow


def read_pins(path: str | os.PathLike) -> dict[str, str]:
    """``{normalised name: version}`` of a lock file; every requirement line must be ``name==version``.

    Comment and blank lines are skipped. Raises ValueError naming the file and line of any other
    requirement (a range, a URL, an option), so that a lock cannot silently float.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not an exact `name==version` pin: {line!r}")
        pins[_norm(match.group(1))] = match.group(3)
    return pins


def run_checked(cmd: list[str], *, what: str, tail: int = 40, cwd: str | os.PathLike | None = None) -> str:
    """Run ``cmd``; return its stdout, or raise :class:`GpuStackError` naming ``what``, the command,
    the exit status and the last ``tail`` lines of its output (a failing ``!pip`` does not stop a cell)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()[-tail:]
        raise GpuStackError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n--- last {len(lines)} lines ---\n" + "\n".join(lines)
        )
    return proc.stdout


def _version_or_none(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_mismatches(pins: dict[str, str], names=None) -> dict[str, tuple[str, str | None]]:
    """``{name: (pinned, installed or None)}`` for the pins (or only ``names``) this interpreter does not match."""
    out = {}
    for name in names if names is not None else pins:
        name = _norm(name)
        found = _version_or_none(name)
        if found != pins[name]:
            out[name] = (pins[name], found)
    return out


def imported_distributions() -> dict[str, str]:
    """``{distribution: version}`` of the distributions whose modules this process has imported."""
    owners = metadata.packages_distributions()
    found = {}
    for module in list(sys.modules):
        for dist in owners.get(module.partition(".")[0], ()):
            try:
                found[_norm(dist)] = metadata.version(dist)
            except metadata.PackageNotFoundError:  # pragma: no cover - a module without metadata
                pass
    return found


def install_on_colab(source_dir: str | os.PathLike, *, gpu: Gpu | None = None) -> str:
    """Install the GPU stack from the lock of this GPU, then this suite from ``source_dir``.

    Steps: pick the lock (:func:`lock_file_for`), skip when the interpreter already matches every pin
    (a re-run), else ``pip install uv`` and ``uv pip install -r <lock>``; check every pin is installed;
    ``uv pip install --no-deps -e <source_dir>``. Returns the lock file's name.

    Raises :class:`GpuStackError` when there is no GPU, an install command fails (with its output),
    a pin is not installed afterwards, or the install replaced a library this session had already
    imported (then: restart the session and run again; the install is done and will be skipped).
    """
    source = Path(source_dir)
    gpu = gpu or query_gpu()
    lock_name = lock_file_for(gpu)
    lock = source / lock_name
    if not lock.is_file():
        raise GpuStackError(f"{lock} is missing: MEDREASON_SOURCE must hold a full checkout of this suite")
    pins = read_pins(lock)
    cap = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "unknown"
    print(f"GPU: {gpu.name} (compute capability {cap}) -> {lock_name}")
    python = sys.executable  # the kernel's interpreter: the pins are checked in this process
    install = [python, "-m", "uv", "pip", "install", "--python", python]
    before = imported_distributions()
    if _version_or_none("uv") != UV_REQUIREMENT.partition("==")[2]:
        run_checked([python, "-m", "pip", "install", "-q", UV_REQUIREMENT], what="installing uv")
    if installed_mismatches(pins):
        run_checked(install + ["-r", str(lock)], what=f"installing {lock_name}")
        importlib.invalidate_caches()
        missing = installed_mismatches(pins)
        if missing:
            listed = ", ".join(f"{n} {want} (found {got})" for n, (want, got) in sorted(missing.items()))
            raise GpuStackError(f"after installing {lock_name}, these pins are not installed: {listed}")
    else:
        print(f"{lock_name}: already installed")
    run_checked(install + ["--no-deps", "-e", str(source)], what="installing medreason_utils")
    importlib.invalidate_caches()
    after = {d: _version_or_none(d) for d in before}
    changed = {d: (v, after[d]) for d, v in before.items() if after[d] != v}
    if changed:
        listed = ", ".join(f"{d} {a} -> {b}" for d, (a, b) in sorted(changed.items()))
        raise GpuStackError(
            f"{lock_name} is installed, but it replaced libraries this session had already imported ({listed}). "
            "Restart the session (Runtime > Restart session) and run the notebook again: the install is "
            "done and this cell will skip it."
        )
    shown = ("torch", "vllm", "unsloth", "unsloth-zoo", "transformers", "trl", "peft", "datasets")
    print(" | ".join(f"{n} {pins[n]}" for n in shown if n in pins))
    return lock_name


def compile_command(in_file: str, *, uv: str | None = None, output: str | None = None, constraints: str | None = None) -> list[str]:
    """The ``uv pip compile`` command resolving ``in_file`` for Colab (:data:`PYTHON_VERSION`,
    :data:`PYTHON_PLATFORM`, without :data:`NOT_EMITTED`), optionally against ``constraints``."""
    cmd = [uv or _uv(), "pip", "compile", "-q", "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
    for name in NOT_EMITTED:
        cmd += ["--no-emit-package", name]
    if constraints:
        cmd += ["-c", constraints]
    if output:
        cmd += ["--custom-compile-command", REGENERATE, "-o", output]
    else:
        cmd += ["--no-header", "--no-annotate"]
    return cmd + [in_file]


def _uv() -> str:
    """The uv executable next to this interpreter, else on PATH; GpuStackError when absent."""
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.is_file() else shutil.which("uv")
    if not found:
        raise GpuStackError("uv is not installed (it is in requirements-cpu.txt: `make setup`)")
    return found


def verify_lock(lock: str | os.PathLike, in_file: str | os.PathLike | None = None, *, uv: str | None = None) -> list[str]:
    """Problems of one lock file, found by resolving it for Colab with uv (needs the package index).

    Resolves the lock's ``.in`` file constrained by the lock: a pin that conflicts with another
    (or with the ``.in``) makes the resolution fail; a package the resolution needs but the lock lacks,
    or one the lock holds but nothing needs, shows as a difference. Returns [] when the lock is exactly
    the resolution.
    """
    lock = Path(lock)
    in_file = Path(in_file) if in_file else lock.with_name(LOCKS.get(lock.name, lock.stem + ".in"))
    try:
        pins = read_pins(lock)
    except ValueError as exc:
        return [str(exc)]
    proc = subprocess.run(compile_command(str(in_file), uv=uv, constraints=str(lock)), capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"{lock.name} does not resolve for Python {PYTHON_VERSION} on {PYTHON_PLATFORM}:\n{proc.stderr.strip()}"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(proc.stdout)
    try:
        resolved = read_pins(handle.name)
    finally:
        os.unlink(handle.name)
    problems = [f"{lock.name}: {n}=={pins[n]} is pinned but nothing in {in_file.name} needs it" for n in sorted(set(pins) - set(resolved))]
    problems += [f"{lock.name}: {n} is needed ({resolved[n]}) but not pinned" for n in sorted(set(resolved) - set(pins))]
    problems += [
        f"{lock.name}: {n} pinned {pins[n]}, resolves to {resolved[n]}" for n in sorted(set(pins) & set(resolved)) if pins[n] != resolved[n]
    ]
    return problems


def cpu_requirements_with_lock(cpu_requirements: str | os.PathLike, lock: str | os.PathLike) -> tuple[str, str]:
    """``(requirements, constraints)`` texts of a CPU venv that takes the lock's versions of :data:`GPU_LIBS`.

    The lines of ``cpu_requirements`` for :data:`GPU_LIBS` take the lock's versions; everything else,
    CPU torch included, keeps its CPU pin (the CPU venv's Python may be older than the lock's 3.12, so
    the lock's other pins are not all installable there). The constraints hold the lock's versions of
    :data:`GPU_LIBS_DEPS` (transformers 4.57 takes huggingface-hub < 1.0 and its own tokenizers).
    Raises ValueError when the lock lacks one of :data:`GPU_LIBS`.
    """
    pins = read_pins(lock)
    absent = [n for n in GPU_LIBS if n not in pins]
    if absent:
        raise ValueError(f"{lock} pins none of {absent}")
    lines, taken = [f"# {Path(cpu_requirements).name} with the versions of {', '.join(GPU_LIBS)} from {Path(lock).name}"], set()
    for raw in Path(cpu_requirements).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", raw.strip())
        name = _norm(match.group(1)) if match else None
        if name in GPU_LIBS:
            lines.append(f"{match.group(1)}{match.group(2) or ''}=={pins[name]}  # from {Path(lock).name}")
            taken.add(name)
        else:
            lines.append(raw)
    lines += [f"{n}=={pins[n]}  # from {Path(lock).name}" for n in GPU_LIBS if n not in taken]
    constraints = [f"{n}=={pins[n]}" for n in GPU_LIBS_DEPS if n in pins]
    return "\n".join(lines) + "\n", "\n".join(constraints) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lock", help=f"regenerate {', '.join(LOCKS)} from their .in files with uv")
    sub.add_parser("verify", help="resolve both lock files for Colab; exit 1 on a conflict or a difference")
    cpu = sub.add_parser("cpu-requirements", help="write requirements.txt + constraints.txt of a CPU venv with the lock's libraries")
    cpu.add_argument("--lock", default=LOCK_DEFAULT)
    cpu.add_argument("--cpu", default="requirements-cpu.txt")
    cpu.add_argument("--out-dir", required=True)
    chk = sub.add_parser("check-installed", help="exit 1 unless this interpreter has the lock's versions of the named packages")
    chk.add_argument("--lock", default=LOCK_DEFAULT)
    chk.add_argument("names", nargs="*", default=list(GPU_LIBS))
    args = parser.parse_args(argv)
    from ..config import repo_root

    root = repo_root()
    if args.command == "lock":
        for lock, in_file in LOCKS.items():
            run_checked(compile_command(in_file, output=lock), what=f"resolving {in_file}", cwd=root)
            print(f"wrote {lock}")
        return 0
    if args.command == "verify":
        problems = [p for lock in LOCKS for p in verify_lock(root / lock)]
        print("\n".join(problems) if problems else f"{', '.join(LOCKS)}: resolve for Python {PYTHON_VERSION} on {PYTHON_PLATFORM}")
        return 1 if problems else 0
    if args.command == "cpu-requirements":
        requirements, constraints = cpu_requirements_with_lock(args.cpu, args.lock)
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "constraints.txt").write_text(constraints)
        (out / "requirements.txt").write_text("-c constraints.txt\n" + requirements)
        print(out / "requirements.txt")
        return 0
    pins = read_pins(args.lock)
    bad = installed_mismatches(pins, args.names)
    for name, (want, got) in sorted(bad.items()):
        print(f"{name}: {args.lock} pins {want}, installed {got}", file=sys.stderr)
    if not bad:
        print(" ".join(f"{n}=={pins[_norm(n)]}" for n in args.names))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
