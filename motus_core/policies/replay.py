"""Replay policy: plays back a recorded joint trajectory as action chunks (tests, demos, benchmarks).

Source (the part after ``replay:`` in the policy spec):

* a ``.npy`` or ``.pt`` file holding a ``[T, dof]`` array/tensor (e.g. a Motus-layout ``qpos/<id>.pt``);
* ``<dataset root>#<episode>``: an episode of a Motus-layout dataset (``motus_core.data.motus_layout``; its
  training targets: ``actions/`` when it has them, else ``qpos/``),
  ``<episode>`` being its index in ``find_episodes`` order or its ``task/id`` name.

A chunk answers one observation with the recording after it: ``actions[k] = traj[i + 1 + k]``,
where ``i`` is the recording's index for the observation (``align``):

* ``time`` (default): ``i = (stamp - t0) / step_period`` (fractional: the recording is interpolated
  linearly, so the chunk's k-th action is the recording exactly at ``stamp + (k + 1) * step_period``), ``t0`` = the stamp of the first
  observation after ``reset()``; the recording runs with the robot's clock;
* ``state``: ``i`` = the recorded sample nearest to ``observation.state`` within a window around the
  previous index (the recording follows the robot: a robot that waited, as under synchronous
  execution, does not skip ahead).

Past the end the last pose repeats (or the recording loops with ``loop: true``). The output is
deterministic: the same observations give the same chunks.

Options: ``chunk_length`` (48), ``step_period`` (1 / the profile's action rate), ``align``,
``loop``, ``start_index``, ``perturb`` (amplitude of a smooth per-chunk offset that emulates the
chunk-to-chunk inconsistency of a generative policy; seeded by ``seed`` and the index, 0 = off),
``seed``, ``latency`` (seconds ``predict`` sleeps, to emulate a slow model) and ``stall_after``
(after this many chunks ``predict`` blocks until ``close()``/``reset()``: a hung model, for tests).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from motus_core.policy.base import ActionChunk, Policy, PolicyError, PolicyRequest


def load_trajectory(source: str | Path) -> np.ndarray:
    """A [T, dof] float64 array from a .npy/.pt file or a ``<dataset root>#<episode>`` reference."""
    src = str(source)
    if "#" in src:
        root, _, which = src.rpartition("#")
        from motus_core.data.motus_layout import DatasetError, find_episodes, load_targets

        refs = find_episodes(root)
        if not refs:
            raise PolicyError(f"replay: no episodes in dataset {root}")
        ref = None
        if which.isdigit():
            if int(which) >= len(refs):
                raise PolicyError(f"replay: dataset {root} has {len(refs)} episodes, no episode {which}")
            ref = refs[int(which)]
        else:
            ref = next((r for r in refs if r.name == which or r.episode_id == which), None)
            if ref is None:
                raise PolicyError(f"replay: no episode {which!r} in {root}; e.g. {[r.name for r in refs[:5]]}")
        try:  # the episode's training targets: its recorded commands when it has them, else its qpos
            data = load_targets(ref)
        except DatasetError as exc:
            raise PolicyError(f"replay: {exc}") from exc
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise PolicyError(f"replay: trajectory file not found: {path}")
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj.get("qpos", obj.get("actions", obj.get("action")))
            if obj is None:
                raise PolicyError(f"replay: {path} holds a dict without 'qpos' or 'actions'")
            data = obj.float().numpy() if hasattr(obj, "numpy") else np.asarray(obj)
        else:
            raise PolicyError(f"replay: unsupported trajectory file {path} (expected .npy or .pt)")
    traj = np.asarray(data, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[0] < 2:
        raise PolicyError(f"replay: trajectory must be [T >= 2, dof], got shape {traj.shape}")
    if not np.all(np.isfinite(traj)):
        raise PolicyError("replay: trajectory contains NaN or inf")
    return traj


class ReplayPolicy(Policy):
    name = "replay"
    modes = ("vla",)
    supports_prefix = False  # the executor applies RTC's soft mask itself (strategies.RTCStrategy)

    def __init__(self, trajectory: np.ndarray, *, chunk_length: int = 48, step_period: float = 1.0 / 30.0,
                 align: str = "time", loop: bool = False, start_index: int = 0, perturb: float = 0.0, seed: int = 0,
                 latency: float = 0.0, stall_after: int = 0, search_window: int = 90):
        if align not in ("time", "state"):
            raise PolicyError(f"replay: align must be 'time' or 'state', got {align!r}")
        if chunk_length < 1 or not step_period > 0:
            raise PolicyError("replay: chunk_length must be >= 1 and step_period > 0")
        self.trajectory = np.asarray(trajectory, dtype=np.float64)
        self.dof = int(self.trajectory.shape[1])
        self.chunk_length = int(chunk_length)
        self.step_period = float(step_period)
        self.align = align
        self.loop = bool(loop)
        self.start_index = int(start_index)
        self.perturb = float(perturb)
        self.seed = int(seed)
        self.latency = float(latency)
        self.stall_after = int(stall_after)
        self.search_window = int(search_window)
        self._t0: float | None = None
        self._last_index: int | None = None
        self._calls = 0
        self._release = threading.Event()

    # -------------------------------------------------------------------------------- policy API
    def warmup(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._t0 = None
        self._last_index = None
        self._calls = 0
        self._release.set()  # unblock a stalled predict
        self._release = threading.Event()

    def close(self) -> None:
        self._release.set()

    def index_for(self, stamp: float, state: np.ndarray) -> float:
        """The recording's (fractional) index of the observation."""
        if self.align == "time":
            if self._t0 is None:
                self._t0 = float(stamp)
            return self.start_index + (float(stamp) - self._t0) / self.step_period
        t = self.trajectory
        n = t.shape[0]
        if self._last_index is None:
            lo, hi = 0, n
        else:
            lo = max(0, self._last_index - self.search_window // 3)
            hi = min(n, self._last_index + self.search_window)
        d = np.linalg.norm(t[lo:hi] - np.asarray(state)[None, :], axis=1)
        return float(lo + int(np.argmin(d)))

    def _sample(self, idx: np.ndarray) -> np.ndarray:
        """Recording at fractional indices (linear interpolation; clamped at the ends, or looped)."""
        n = self.trajectory.shape[0]
        idx = np.mod(idx, n) if self.loop else np.clip(idx, 0.0, n - 1.0)
        i0 = np.floor(idx).astype(np.int64)
        i1 = np.mod(i0 + 1, n) if self.loop else np.minimum(i0 + 1, n - 1)
        w = (idx - i0)[:, None]
        return (1.0 - w) * self.trajectory[i0] + w * self.trajectory[i1]

    def _offset(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index & 0x7FFFFFFF])
        u = np.linspace(0.0, 1.0, self.chunk_length)[:, None]
        r = rng.standard_normal((3, self.dof)) / np.sqrt(3.0)
        return self.perturb * (r[0] + r[1] * u + r[2] * np.sin(np.pi * u))

    def predict(self, request: PolicyRequest) -> ActionChunk:
        self.check_request(request)
        t_start = time.perf_counter()
        self._calls += 1
        if self.stall_after and self._calls > self.stall_after:
            self._release.wait()
            raise PolicyError("replay: stalled policy released (reset or closed)")
        obs = request.observation
        i = self.index_for(obs.stamp, np.asarray(obs.state, dtype=np.float64))
        self._last_index = int(round(i))
        actions = self._sample(i + 1 + np.arange(self.chunk_length)).copy()
        if self.perturb:
            actions += self._offset(int(round(i)))
        if self.latency > 0:
            time.sleep(self.latency)
        elapsed = time.perf_counter() - t_start
        return ActionChunk(
            actions=actions, step_period=self.step_period, stamp=float(obs.stamp), prefix_length=0,
            mode=request.mode, model=self.name, timing={"preprocess": 0.0, "model": elapsed, "postprocess": 0.0},
            info={"index": float(i)},
        )


def create(source, *, device: str = "cpu", profile=None, options: dict | None = None) -> ReplayPolicy:
    opts = dict(options or {})
    if source is None or str(source) == "":
        raise PolicyError("replay: give the trajectory as replay:<file.npy|file.pt|dataset#episode>")
    traj = load_trajectory(source)
    if profile is not None and traj.shape[1] != profile.dof:
        raise PolicyError(f"replay: trajectory has {traj.shape[1]} joints, robot profile {profile.name!r} has {profile.dof}")
    step = float(opts.pop("step_period", 1.0 / float(profile.action_rate_hz) if profile is not None else 1.0 / 30.0))
    known = {"chunk_length", "align", "loop", "start_index", "perturb", "seed", "latency", "stall_after", "search_window"}
    unknown = set(opts) - known - {"kind"}
    if unknown:
        raise PolicyError(f"replay: unknown options {sorted(unknown)}; known: {sorted(known | {'step_period'})}")
    opts.pop("kind", None)
    return ReplayPolicy(traj, step_period=step, **opts)
