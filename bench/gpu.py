"""Motus and MoLA at full size on one CUDA GPU: chunk latency, stage split, memory, compile, RTC, training.

    tools/gpu_run.sh --out $OUT/bench_gpu.json           # the lent GPU machine (installs tools/gpu_wheels first)
    make bench-gpu                                       # a machine with CUDA and the project's venv
    python bench/gpu.py --device cpu --config reduced    # CPU dry run of the same script (a few minutes)
    python bench/gpu.py --device cpu --config tiny --repeats 2 --threads 1   # what test/test_bench_gpu.py runs

No weights are downloaded: every model is built from its config with random weights (bf16 on CUDA;
latency and memory do not depend on the values). The script runs a list of parts, each with its own
share of one wall-clock budget (``--budget-s``, default 450 s, so the whole run stays under 8 minutes
with the interpreter start): when a part's share is used up its remaining repetitions are skipped
and the part says so (``reps_done`` < ``reps_asked`` and a ``note``). A part that fails (out of
memory, flash-attn missing, ...) is recorded with its error and the script goes on. ``torch.compile``
and the training step run in child processes that are killed at their deadline, so neither a long
compilation nor an OOM can hold up the rest. The last line printed is one JSON object (docs/performance.md
explains every key); ``--out FILE`` also writes it to a file.

Parts, in order: ``motus_build``; ``motus_vla_10step``, ``motus_vla_3step``, ``motus_joint_10step``
(8 decoded frames) with torch SDPA attention; ``motus_rtc`` (the 10-step VLA chunk with an RTC prefix,
guided sampling); ``motus_flash`` (flash-attn, when importable); ``mola``; ``train`` (one Stage-3
step, full model, LoRA + activation checkpointing, batch 1, when ``motus-train`` exists);
``motus_compiled`` (``torch.compile``; compile time reported apart).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(ROOT))

T0 = time.monotonic()

# (module, distribution to install): everything the benchmarked code paths import. Checked before
# anything is built, so a missing package is reported at once with its name.
REQUIRED = [
    ("numpy", "numpy"), ("torch", "torch"), ("yaml", "PyYAML"), ("safetensors", "safetensors"), ("PIL", "pillow"),
    ("cv2", "opencv-python-headless"), ("tqdm", "tqdm"), ("huggingface_hub", "huggingface-hub"),
    ("transformers", "transformers"), ("diffusers", "diffusers"),
]
# Names the parts use from the libraries: an old or new release that lacks one fails here, by name.
REQUIRED_NAMES = [
    ("diffusers", ("WanTransformer3DModel", "AutoencoderKLWan", "UNetSpatioTemporalConditionModel",
                   "AutoencoderKLTemporalDecoder")),
    ("transformers", ("Qwen3VLConfig", "Qwen3VLModel", "CLIPTextConfig", "CLIPTextModelWithProjection", "ViTConfig")),
    ("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl", ("Qwen2VLImageProcessorPil",)),
    ("transformers.models.vit.modeling_vit", ("ViTLayer",)),
    ("motus_core.models.motus.policy", ("create_random", "MotusRequest")),
    ("motus_core.models.mola.policy", ("build_policy",)),
]
OPTIONAL = [("flash_attn", "flash-attn", "part motus_flash"), ("peft", "peft", "part train (LoRA)")]

# Share of the budget each part may use (the compiled part gets whatever is left at its turn).
SHARES = {"motus_build": 0.10, "motus_vla_10step": 0.05, "motus_vla_3step": 0.03, "motus_joint_10step": 0.08,
          "motus_rtc": 0.07, "motus_flash": 0.04, "mola": 0.12, "train": 0.22}
RESERVE_S = 8.0  # kept for the summary and the JSON line at the end
CHILD_GRACE_S = 5.0  # a child process is killed this long after its budget
STAGES = ("preprocess", "text", "vlm", "vae_encode", "denoise", "vae_decode")
MOLA_STAGES = ("preprocess", "text", "video", "moidm", "video_former", "head")


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def percentile(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def rnd(x, nd=2):
    return None if x is None else round(float(x), nd)


def err_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 600 else text[:600] + " ..."


# ----------------------------------------------------------------------------------------- checks


def check_imports() -> tuple[list[str], dict]:
    """(missing required items, optional availability) - each missing item names what to install."""
    missing = []
    for module, dist in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            missing.append(f"{module} (pip: {dist}): {err_text(exc)}")
    if not missing:
        for module, names in REQUIRED_NAMES:
            try:
                mod = importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001
                missing.append(f"{module}: {err_text(exc)}")
                continue
            for name in names:
                try:
                    getattr(mod, name)
                except Exception as exc:  # noqa: BLE001 - lazy modules raise on first access
                    missing.append(f"{module}.{name}: {err_text(exc)}")
    optional = {}
    for module, dist, what in OPTIONAL:
        try:
            mod = importlib.import_module(module)
            optional[module] = {"available": True, "version": getattr(mod, "__version__", "?")}
        except Exception as exc:  # noqa: BLE001
            optional[module] = {"available": False, "error": err_text(exc), "needed_for": what, "pip": dist}
    return missing, optional


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "cuda_runtime": torch.version.cuda, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for mod in ("transformers", "diffusers", "huggingface_hub", "numpy"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = None
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        prop = torch.cuda.get_device_properties(idx)
        env.update(gpu=prop.name, gpu_capability=f"{prop.major}.{prop.minor}", gpu_memory_gb=rnd(prop.total_memory / 1024**3),
                   gpu_multiprocessors=prop.multi_processor_count, cudnn=torch.backends.cudnn.version())
        try:  # informative (the fp32 VAE's convolutions may use TF32); the flags' API changes between releases
            env.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
        except Exception as exc:  # noqa: BLE001
            env["tf32"] = err_text(exc)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            env["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
        except Exception as exc:  # noqa: BLE001 - informative only
            env["nvidia_smi"] = err_text(exc)
    else:
        env["gpu"] = None
    return env


# ----------------------------------------------------------------------------------------- timing


class Clock:
    """The run's global deadline and each part's share of it."""

    def __init__(self, budget_s: float):
        self.budget_s = float(budget_s)
        self.start = T0

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def part_deadline(self, share: float | None) -> float:
        """Monotonic deadline of a part starting now: its share of the budget, never past the global end."""
        end = self.start + self.budget_s - RESERVE_S
        if share is None:
            return end
        return min(time.monotonic() + share * self.budget_s, end)


class Part:
    """One measured part: its deadline, its result dict and its status."""

    def __init__(self, name: str, deadline: float, progress_file: str | None = None):
        self.name = name
        self.deadline = deadline
        self.result: dict = {"status": "ok"}
        self.progress_file = progress_file

    def stage(self, what: str) -> None:
        """Record what the part is doing now (a child killed at its deadline is reported with it)."""
        self.result["stage"] = what
        if self.progress_file:
            Path(self.progress_file).write_text(json.dumps({**self.result, "status": "incomplete"}))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def repeat(self, fn, reps: int, warmup: int) -> list:
        """``warmup`` unmeasured calls, then up to ``reps`` measured ones while the part's time lasts
        (at least one measured call). Returns the measured results; records the counts."""
        t = time.monotonic()
        for i in range(warmup):
            fn(-1 - i)
        self.result["warmup_s"] = rnd(time.monotonic() - t, 3)
        out = []
        for i in range(reps):
            if out and self.left() <= 0:
                self.result["note"] = (f"stopped after {len(out)} of {reps} repetitions: the part's time budget "
                                       f"was used")
                break
            out.append(fn(i))
        self.result["reps_asked"] = reps
        self.result["reps_done"] = len(out)
        return out


class Memory:
    """Peak memory of a part: CUDA max allocated since the part began, or the process peak RSS on CPU."""

    def __init__(self, device: str):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float:
        import torch

        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 1024**3
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    def peak_reserved_gb(self):
        import torch

        return torch.cuda.max_memory_reserved(self.device) / 1024**3 if self.cuda else None

    def allocated_gb(self):
        import torch

        return torch.cuda.memory_allocated(self.device) / 1024**3 if self.cuda else None

    @property
    def source(self) -> str:
        return ("torch.cuda.max_memory_allocated since the part began" if self.cuda
                else "peak resident set of the process so far (CPU; cumulative, not per part)")

    def free(self) -> None:
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def chunk_stats(timings: list[dict], stages) -> dict:
    total = [t["total"] * 1e3 for t in timings]
    out = {"ms_p50": rnd(percentile(total, 50)), "ms_p90": rnd(percentile(total, 90)),
           "ms_min": rnd(min(total)) if total else None, "ms_max": rnd(max(total)) if total else None}
    out["stage_ms_p50"] = {k: rnd(percentile([t.get(k, 0.0) * 1e3 for t in timings], 50)) for k in stages}
    return out


# ----------------------------------------------------------------------------------------- Motus


def motus_config(name: str):
    from motus_core.models.motus.config import PRESETS

    return PRESETS[name]()


def build_motus(args):
    from motus_core.models.motus.policy import create_random

    return create_random(motus_config(args.config), profile=args.profile, device=args.device, num_steps=10, seed=0,
                         options={"dtype": args.dtype, "vae_dtype": args.vae_dtype, "text_encoder": False,
                                  "num_threads": args.threads})


class MotusInputs:
    """One observation, a pre-encoded instruction (umT5 never loaded) and an RTC prefix."""

    def __init__(self, policy, args):
        import numpy as np
        import torch

        from motus_core.policy.base import Observation

        prof = policy.profile
        rng = np.random.default_rng(0)
        images = {r: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for r, c in prof.cameras.items()}
        home = np.asarray(prof.home, dtype=np.float64)
        self.observation = Observation(images=images, state=home, stamp=0.0)
        self.embedding = torch.randn(24, int(policy.config.wan["text_dim"]), generator=torch.Generator().manual_seed(0))
        lo, hi = np.asarray(prof.position_lower), np.asarray(prof.position_upper)
        n = min(args.prefix_length, policy.chunk_length)
        drift = 0.05 * (hi - lo) * np.linspace(0.0, 1.0, n)[:, None]  # a plan that moves a little, inside the limits
        self.prefix = np.clip(home[None] + drift, lo, hi)
        self.delay = min(args.delay, n)

    def request(self, mode: str, seed: int, *, frames: bool = False, prefix: bool = False):
        from motus_core.models.motus.policy import MotusRequest

        extra = {"prefix": self.prefix, "expected_delay": self.delay} if prefix else {}
        return MotusRequest(observation=self.observation, mode=mode, seed=seed, instruction="bench",
                            instruction_embedding=self.embedding, return_frames=frames, **extra)


def motus_chunks(part: Part, policy, inputs: MotusInputs, args, *, mode: str, steps: int, frames=False, prefix=False):
    policy.num_steps = steps
    checked = {}

    def one(i):
        chunk = policy.predict(inputs.request(mode, 1000 + i, frames=frames, prefix=prefix))
        if "shape" not in checked:  # what was produced, once (the figures mean nothing if the chunk is wrong)
            checked["shape"] = list(chunk.actions.shape)
            checked["frames"] = None if chunk.frames is None else list(chunk.frames.shape)
        return chunk.timing

    timings = part.repeat(one, args.repeats, args.warmup)
    part.result.update(chunk_stats(timings, STAGES))
    part.result.update(mode=mode, steps=steps, attention=policy.model.attention_backend, actions_shape=checked["shape"],
                       frames_shape=checked["frames"], rtc_prefix=bool(prefix))
    if prefix:
        part.result.update(prefix_length=len(inputs.prefix), expected_delay=inputs.delay)
    return part.result


def motus_params(policy) -> dict:
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)  # noqa: E731
    return {"video": count(policy.model.video), "action_expert": count(policy.model.action_expert),
            "und_expert": count(policy.model.und_expert), "vlm": count(policy.vlm.model), "vae": count(policy.vae)}


# ----------------------------------------------------------------------------------------- MoLA


def mola_config(name: str):
    from motus_core.models.mola.config import MolaConfig

    if name == "full":
        cfg = MolaConfig.aloha()  # our full-size model: SVD UNet, 3 cameras, 16 frames at 256 px
    elif name == "reduced":
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_mola", ROOT / "bench" / "mola.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cfg = mod.reduced_config()  # full-size MoIDM/head/Video Former on a narrower SVD UNet (bench/mola.py)
    else:
        cfg = MolaConfig.tiny()
    cfg.video.pretrained = cfg.video.text_encoder = ""  # random weights from the architecture, never a download
    return cfg


def run_mola(part: Part, args, mem: Memory) -> None:
    import numpy as np
    import torch

    from motus_core.models.mola.policy import build_policy
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.preprocessing import MinMaxNormalizer
    from motus_core.robot_profile import load_profile

    cfg = mola_config(args.config)
    profile = load_profile("sim_aloha")
    if profile.dof != cfg.action_dim:
        profile = None
    lower = profile.position_lower if profile else [-1.0] * cfg.action_dim
    upper = profile.position_upper if profile else [1.0] * cfg.action_dim
    torch.manual_seed(0)
    t = time.monotonic()
    policy = build_policy(cfg, None, MinMaxNormalizer(lower, upper, "bench"), device=args.device, profile=None,
                          options={"dtype": args.dtype})
    part.result["build_s"] = rnd(time.monotonic() - t)
    part.result["weights_gb"] = rnd(mem.allocated_gb(), 3)
    rng = np.random.default_rng(0)
    images = {r: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for r in ("high", "left_wrist", "right_wrist")}
    state = np.asarray(profile.home if profile else np.zeros(cfg.action_dim), dtype=np.float64)
    req = PolicyRequest(observation=Observation(images=images, state=state, stamp=0.0), instruction="transfer the cube")
    shape = {}

    def one(i):
        chunk = policy.predict(req)
        shape.setdefault("actions", list(chunk.actions.shape))
        return chunk.timing

    timings = part.repeat(one, args.repeats, args.warmup)
    part.result.update(chunk_stats(timings, MOLA_STAGES))
    net = policy.model.net
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)  # noqa: E731
    part.result.update(
        mola_config={"full": "aloha", "reduced": "reduced (bench/mola.py)", "tiny": "tiny"}[args.config],
        dtype=str(policy.dtype).replace("torch.", ""), cameras=len(cfg.cameras), frames=cfg.video.num_frames,
        image_size=cfg.video.image_size, sampler_steps=int(cfg.head.sampling_steps), actions_shape=shape["actions"],
        params_m={"unet": count(policy.model.video.unet), "moidm": count(net.moidm.idms),
                  "idm_input": count(net.moidm.idm_input), "video_former": count(net.video_former),
                  "head": count(net.head)})
    del policy


# ----------------------------------------------------------------------------------------- children


def child_compile(args, part: Part, mem: Memory) -> None:
    """torch.compile of the layer function (what ``compile: true`` does in a policy), 10-step VLA chunks."""
    part.stage("building the model")
    t = time.monotonic()
    policy = build_motus(args)
    policy.model.attention_backend = "sdpa"
    part.result["build_s"] = rnd(time.monotonic() - t)
    part.result["compile_backend"] = args.compile_backend
    policy.model.compile(backend=args.compile_backend)
    inputs = MotusInputs(policy, args)
    policy.num_steps = 10
    part.stage("compiling (first chunk)")
    t = time.monotonic()
    first = policy.predict(inputs.request("vla", 0))  # compiles every layer (dynamo specialises per layer index)
    part.result["first_chunk_s"] = rnd(time.monotonic() - t, 3)
    if args.eager_ms is not None:  # compile time = first compiled chunk - an eager chunk (p50 of motus_vla_10step)
        part.result["compile_s"] = rnd(first.timing["total"] - args.eager_ms / 1e3, 3)
    part.stage("measuring compiled chunks")
    mem.reset()
    motus_chunks(part, policy, inputs, args, mode="vla", steps=10)
    part.result.update(peak_gb=rnd(mem.peak_gb(), 3), peak_reserved_gb=rnd(mem.peak_reserved_gb(), 3))
    part.result.pop("stage", None)


class Unavailable(Exception):
    """A part whose prerequisite (a package, a command) does not exist here: reported, not an error."""


def train_modules():
    """The ``motus-train`` modules (issue 12), or Unavailable when this checkout has no trainer."""
    try:
        importlib.import_module("motus_core.models.motus.train")
    except ModuleNotFoundError as exc:
        if exc.name not in ("motus_core.models.motus.train",):
            raise  # the trainer exists but something it imports is missing: an error, not "unavailable"
        raise Unavailable(f"motus-train is not available here ({exc})") from exc
    names = ("build", "config", "lora", "schedule", "step")
    return SimpleNamespace(**{n: importlib.import_module(f"motus_core.models.motus.train.{n}") for n in names})


def train_batch(built, device):
    """One synthetic batch in the trainer's collate layout (``train.data.collate``), batch 1."""
    import numpy as np
    import torch

    cfg = built.config
    g = torch.Generator().manual_seed(0)
    h, w, f = cfg.video_height, cfg.video_width, cfg.num_video_frames
    image = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
    return {
        "first_frame": image.permute(2, 0, 1)[None].float() / 255.0,
        "video_frames": torch.rand(1, f, 3, h, w, generator=g),
        "vlm_inputs": [built.vlm.prompt(np.ascontiguousarray(image.numpy()), "bench")],
        "language_embedding": torch.randn(1, cfg.text_len, int(cfg.wan["text_dim"]), generator=g),
        "action_sequence": torch.rand(1, cfg.action_chunk_size, cfg.action_dim, generator=g),
        "initial_state": torch.rand(1, cfg.state_dim, generator=g),
    }


def child_train(args, part: Part, mem: Memory) -> None:
    """One Stage-3 optimizer step of the Motus model with LoRA (peft) on the video DiT and activation
    checkpointing, batch 1, built and run exactly as ``motus-train`` does (its build, LoRA, optimizer
    and ``one_step``), from random weights."""
    import torch

    tr = train_modules()
    dev = torch.device(args.device)
    part.stage("building the model (float32 master weights) and the frozen VAE/VLM")
    t = time.monotonic()
    torch.manual_seed(0)
    built = tr.build.build_models(tr.config.ModelSection(preset=args.config),
                                  tr.config.InitSection(source="scratch", allow_full_size_scratch=True), dev)
    loss = tr.step.MotusLoss(built.model, built.vae, built.vlm)
    lora_cfg = tr.config.LoraSection(enabled=True)
    layers = tr.lora.add_lora(built.model, lora_cfg, frozen_dtype=torch.bfloat16 if dev.type == "cuda" else None)
    built.model.activation_checkpointing = True
    optimizer, _ = tr.schedule.build_optimizer(built.model, tr.config.OptimSection())
    batch = train_batch(built, dev)
    part.result.update(build_s=rnd(time.monotonic() - t), build_peak_gb=rnd(mem.peak_gb(), 3),
                       trainable_m=rnd(sum(p.numel() for p in built.model.parameters() if p.requires_grad) / 1e6),
                       lora_rank=lora_cfg.rank, lora_layers=layers, activation_checkpointing=True, batch_size=1,
                       precision="bf16 autocast" if dev.type == "cuda" else "fp32")
    gen = torch.Generator(device=dev).manual_seed(0)

    def one(i):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        out = tr.step.one_step(loss, optimizer, batch, generator=gen, grad_clip=0.5, precision="auto")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if not out.get("finite", True):
            raise RuntimeError(f"non-finite training step: {out}")
        return {"total": time.perf_counter() - t0, "loss": out["total_loss"]}

    part.stage("training steps")
    mem.reset()  # the training footprint: weights + gradients + optimizer state + activations (not the fp32 build)
    steps = part.repeat(one, args.train_steps, 1)
    part.result.update(chunk_stats(steps, ()))
    part.result.pop("stage_ms_p50", None)
    part.result.update(peak_gb=rnd(mem.peak_gb(), 3), peak_reserved_gb=rnd(mem.peak_reserved_gb(), 3),
                       losses=[rnd(s["loss"], 4) for s in steps])
    part.result.pop("stage", None)


CHILDREN = {"compile": child_compile, "train": child_train}


def run_child_main(args) -> int:
    """Entry of a child process: run one part, write its result dict to ``--child-out``."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    importlib.import_module("motus_core.models.motus.policy")  # imports are not part of any timed figure
    # the parent kills this process CHILD_GRACE_S after the budget: stop repeating a little before it
    part = Part(args.child, time.monotonic() + args.budget_s - 3.0, progress_file=args.child_out)
    mem = Memory(args.device)
    try:
        CHILDREN[args.child](args, part, mem)
    except Unavailable as exc:
        part.result = {"status": "unavailable", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        traceback.print_exc()
        part.result = {**part.result, "status": "error", "error": err_text(exc)}
    Path(args.child_out).write_text(json.dumps(part.result))
    return 0


def run_child(name: str, args, clock: Clock, share: float | None, extra: list[str]) -> dict:
    """Run a part in a child process, killed (with its whole process group) at the part's deadline."""
    deadline = clock.part_deadline(share)
    budget = deadline - time.monotonic()
    if budget < 5:
        return {"status": "skipped", "error": f"the run's time budget ({clock.budget_s:.0f} s) was used before this part"}
    fd, out = tempfile.mkstemp(prefix=f"bench_gpu_{name}_", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", out, "--budget-s", f"{budget:.1f}",
           *child_args(args), *extra]
    proc = subprocess.Popen(cmd, start_new_session=True)  # its own process group: compile workers die with it
    killed = False
    try:
        proc.wait(timeout=budget + CHILD_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    try:
        text = Path(out).read_text()
        result = json.loads(text) if text.strip() else None
    except ValueError:  # killed while writing
        result = None
    finally:
        os.unlink(out)
    if killed or result is None or result.get("status") == "incomplete":
        partial = dict(result or {})
        where = partial.pop("stage", "starting")
        partial.pop("status", None)
        if killed:
            why = f"killed at the part's deadline after {budget + CHILD_GRACE_S:.0f} s, while {where}"
        else:
            why = f"the child process exited with code {proc.returncode} while {where}"
        return {**partial, "status": "error", "error": why}
    return result


def child_args(args) -> list[str]:
    out = ["--device", args.device, "--config", args.config, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--profile", args.profile, "--vae-dtype", args.vae_dtype, "--train-steps", str(args.train_steps),
           "--compile-backend", args.compile_backend]
    if args.dtype:
        out += ["--dtype", args.dtype]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


# ----------------------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda | cuda:N | cpu (default cuda; without CUDA the run is skipped)")
    ap.add_argument("--config", choices=["tiny", "reduced", "full"], default="full",
                    help="model sizes: full (released Motus, our full MoLA), reduced (real geometry, narrow), tiny (tests)")
    ap.add_argument("--dtype", default=None, help="compute dtype: bfloat16 | float32 (default bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--vae-dtype", default="float32", help="Motus VAE dtype (the policy's default: float32)")
    ap.add_argument("--repeats", type=int, default=10, help="measured chunks per part, after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured chunks per part")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole run (s)")
    ap.add_argument("--parts", default="all", help="comma list of parts to run (default all): motus_vla_10step, "
                    "motus_vla_3step, motus_joint_10step, motus_rtc, motus_flash, mola, train, motus_compiled")
    ap.add_argument("--prefix-length", type=int, default=32, help="RTC prefix length (actions of the previous plan)")
    ap.add_argument("--delay", type=int, default=4, help="RTC expected delay d (frozen prefix actions)")
    ap.add_argument("--train-steps", type=int, default=5, help="measured training steps after one warm-up step")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of motus_compiled (inductor; 'eager' only checks the tracing, for tests)")
    ap.add_argument("--profile", default="aloha_agilex_2", help="robot profile of the Motus inputs (cameras, joints)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU runs)")
    ap.add_argument("--out", default=None, help="also write the final JSON object to this file")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--eager-ms", type=float, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


ALL_PARTS = ("motus_vla_10step", "motus_vla_3step", "motus_joint_10step", "motus_rtc", "motus_flash", "mola", "train",
             "motus_compiled")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child_main(args)
    explicit_device = args.device is not None
    args.device = args.device or "cuda"
    parts_wanted = ALL_PARTS if args.parts == "all" else tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts_wanted if p not in ALL_PARTS]
    if unknown:
        print(f"unknown parts {unknown}; parts: {list(ALL_PARTS)}", file=sys.stderr)
        return 2

    try:  # no CUDA: say so at once (`make bench` on a CPU machine skips this benchmark; `make bench-gpu` fails)
        import torch

        no_cuda = args.device.startswith("cuda") and not torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - torch itself missing: check_imports names it
        no_cuda = False
    if no_cuda:
        msg = "no CUDA device here (torch.cuda.is_available() is False); use --device cpu for a dry run"
        log(msg)
        print(json.dumps({"bench": "gpu", "status": "skipped" if not explicit_device else "error", "error": msg}))
        return 2 if explicit_device else 0
    log("checking imports")
    missing, optional = check_imports()
    if missing:
        for m in missing:
            log(f"MISSING {m}")
        log("install what is missing (on the lent GPU machine: run through tools/gpu_run.sh, which installs tools/gpu_wheels)")
        print(json.dumps({"bench": "gpu", "status": "error", "error": "missing imports", "missing": missing}))
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from motus_core.models.common import resolve_dtype

    args.dtype = str(resolve_dtype(args.dtype, args.device)).replace("torch.", "")
    env = environment(args.device)
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "child_out", "eager_ms")}
    settings.update(parts=list(parts_wanted), shares=SHARES, attention_default="sdpa (torch SDPA) unless the part says")
    log("environment: " + json.dumps(env))
    log("optional packages: " + json.dumps(optional))
    log("settings: " + json.dumps(settings))

    clock = Clock(args.budget_s)
    mem = Memory(args.device)
    parts: dict[str, dict] = {}
    keys: dict[str, object] = {}

    def run(name: str, fn, share: float | None):
        if clock.left() - RESERVE_S < 3:
            parts[name] = {"status": "skipped", "error": f"the run's time budget ({clock.budget_s:.0f} s) was used"}
            log(f"{name}: skipped (time budget used)")
            return
        part = Part(name, clock.part_deadline(share))
        log(f"{name}: start (part deadline in {part.left():.0f} s)")
        t = time.monotonic()
        mem.reset()
        try:
            fn(part)
            part.result.setdefault("peak_gb", rnd(mem.peak_gb(), 3))
            part.result.setdefault("peak_reserved_gb", rnd(mem.peak_reserved_gb(), 3))
        except Unavailable as exc:
            part.result = {"status": "unavailable", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - recorded; the next part runs
            traceback.print_exc()
            part.result = {**part.result, "status": "error", "error": err_text(exc)}
        mem.free()  # after the handler: the traceback no longer holds the part's tensors
        part.result["wall_s"] = rnd(time.monotonic() - t)
        parts[name] = part.result
        log(f"{name}: {part.result['status']} " + json.dumps(part.result))

    # ---- Motus (one model for every eager part)
    motus_parts = [p for p in parts_wanted if p.startswith("motus_") and p != "motus_compiled"]
    state: dict = {}
    if motus_parts:
        def build(part):
            t = time.monotonic()
            policy = build_motus(args)
            policy.model.attention_backend = "sdpa"
            state["policy"] = policy
            state["inputs"] = MotusInputs(policy, args)
            part.result.update(build_s=rnd(time.monotonic() - t), weights_gb=rnd(mem.allocated_gb(), 3),
                               params_m=motus_params(policy), video_tokens=policy.config.video_tokens,
                               action_tokens=policy.config.action_tokens, chunk_length=policy.chunk_length,
                               dtype=str(policy.model.compute_dtype).replace("torch.", ""),
                               vae_dtype=str(policy.vae.dtype).replace("torch.", ""))

        run("motus_build", build, SHARES["motus_build"])

    def need_model():
        if "policy" not in state:
            raise RuntimeError(f"no Motus model: motus_build failed ({parts.get('motus_build', {}).get('error')})")
        return state["policy"], state["inputs"]

    def motus_part(name, **kw):
        def fn(part):
            policy, inputs = need_model()
            motus_chunks(part, policy, inputs, args, **kw)
        return fn

    if "motus_vla_10step" in parts_wanted:
        run("motus_vla_10step", motus_part("motus_vla_10step", mode="vla", steps=10), SHARES["motus_vla_10step"])
    if "motus_vla_3step" in parts_wanted:
        run("motus_vla_3step", motus_part("motus_vla_3step", mode="vla", steps=3), SHARES["motus_vla_3step"])
    if "motus_joint_10step" in parts_wanted:
        run("motus_joint_10step", motus_part("motus_joint_10step", mode="joint", steps=10, frames=True),
            SHARES["motus_joint_10step"])
    if "motus_rtc" in parts_wanted:
        run("motus_rtc", motus_part("motus_rtc", mode="vla", steps=10, prefix=True), SHARES["motus_rtc"])
    if "motus_flash" in parts_wanted:
        def flash(part):
            from motus_core.models.motus import attention

            if not attention.HAS_FLASH:
                raise Unavailable("flash-attn is not importable: " + str(optional["flash_attn"].get("error")))
            if not args.device.startswith("cuda") or args.dtype not in ("bfloat16", "float16"):
                raise Unavailable("flash-attn needs CUDA and bf16/fp16")
            policy, inputs = need_model()
            policy.model.attention_backend = "flash"
            try:
                motus_chunks(part, policy, inputs, args, mode="vla", steps=10)
            finally:
                policy.model.attention_backend = "sdpa"

        run("motus_flash", flash, SHARES["motus_flash"])
    state.clear()
    mem.free()

    # ---- MoLA
    if "mola" in parts_wanted:
        run("mola", lambda part: run_mola(part, args, mem), SHARES["mola"])
        mem.free()

    # ---- children: training step, then torch.compile (the most variable in time: last)
    for name, child, share in (("train", "train", SHARES["train"]), ("motus_compiled", "compile", None)):
        if name not in parts_wanted:
            continue
        extra = []
        eager = parts.get("motus_vla_10step", {}).get("ms_p50")
        if child == "compile" and eager is not None:
            extra = ["--eager-ms", str(eager)]
        log(f"{name}: start in a child process")
        t = time.monotonic()
        res = run_child(child, args, clock, share, extra)
        res["wall_s"] = rnd(time.monotonic() - t)
        parts[name] = res
        log(f"{name}: {res['status']} " + json.dumps(res))

    # ---- flat keys
    def get(part, key):
        p = parts.get(part, {})
        return p.get(key) if p.get("status") == "ok" else None

    for part, prefix in (("motus_vla_10step", "motus_vla_10step"), ("motus_vla_3step", "motus_vla_3step"),
                         ("motus_joint_10step", "motus_joint_10step"), ("motus_rtc", "motus_vla_10step_rtc"),
                         ("motus_flash", "motus_vla_10step_flash"), ("motus_compiled", "motus_vla_10step_compiled"),
                         ("mola", "mola_step")):
        keys[f"{prefix}_ms_p50"] = get(part, "ms_p50")
        keys[f"{prefix}_ms_p90"] = get(part, "ms_p90")
    stages10 = get("motus_vla_10step", "stage_ms_p50") or {}
    stages_joint = get("motus_joint_10step", "stage_ms_p50") or {}
    keys.update(
        motus_vlm_ms_p50=stages10.get("vlm"), motus_vae_encode_ms_p50=stages10.get("vae_encode"),
        motus_denoise_10step_ms_p50=stages10.get("denoise"),
        motus_denoise_3step_ms_p50=(get("motus_vla_3step", "stage_ms_p50") or {}).get("denoise"),
        motus_joint_denoise_10step_ms_p50=stages_joint.get("denoise"),
        motus_vae_decode_ms_p50=stages_joint.get("vae_decode"),
        motus_weights_gb=get("motus_build", "weights_gb"), motus_build_s=get("motus_build", "build_s"),
    )
    peaks = [get(p, "peak_gb") for p in ("motus_vla_10step", "motus_vla_3step", "motus_joint_10step")]
    peaks = [p for p in peaks if p is not None]
    keys["motus_peak_gb"] = max(peaks) if peaks else None
    keys["motus_rtc_peak_gb"] = get("motus_rtc", "peak_gb")
    rtc, plain = keys["motus_vla_10step_rtc_ms_p50"], keys["motus_vla_10step_ms_p50"]
    keys["motus_rtc_overhead_x"] = rnd(rtc / plain, 3) if rtc and plain else None
    keys["motus_compile_s"] = get("motus_compiled", "compile_s")
    keys["mola_peak_gb"] = get("mola", "peak_gb")
    short = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(args.dtype, args.dtype)
    tag = f"{args.config}_lora_{short}"  # e.g. train_step_ms_full_lora_bf16 (the names bench/train.py uses)
    keys[f"train_step_ms_{tag}"] = get("train", "ms_p50")
    keys[f"peak_mem_gb_{tag}"] = get("train", "peak_gb")

    errors = {k: v.get("error") for k, v in parts.items() if v.get("status") == "error"}
    skipped = [k for k, v in parts.items() if v.get("status") == "skipped"]
    result = {"bench": "gpu", "status": "ok" if not (errors or skipped) else "partial", "config": args.config,
              "device": args.device, "dtype": args.dtype, **keys,
              "goals": {"motus_vla_10step_ms": 250.0, "motus_vla_3step_ms": 100.0, "mola_step_ms": 65.0,
                        "mola_paper_rtx4090_ms": 129.6},
              "errors": errors, "skipped": skipped, "parts": parts, "env": env, "optional": optional, "settings": settings,
              "memory_source": mem.source, "total_s": rnd(time.monotonic() - T0)}
    log("summary:")
    for k, v in keys.items():
        log(f"  {k:40s} {v}")
    for k, v in parts.items():
        log(f"  part {k:30s} {v.get('status')}{'  ' + v['error'] if v.get('error') else ''}{'  (' + v['note'] + ')' if v.get('note') else ''}")
    line = json.dumps(result)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
