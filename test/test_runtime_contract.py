"""The chunk contract (motus_core.runtime.contract): what the policy declares vs the executor's settings.

Checks: Motus (H = 48) and MoLA (H = 15) both fit the default settings; a horizon that does not fit is
refused with the numbers and the fix; a step period that differs from the robot's is refused; the
executor takes no chunk and asks for none without a contract; the closed loop runs with H = 15 and
H = 48 on defaults without a watchdog stop (before the contract, s = 16 > 15 starved every chunk).
"""
import subprocess
import sys

import numpy as np
import pytest

from motus_core.policy.base import ActionChunk
from motus_core.policies.replay import ReplayPolicy
from motus_core.robot_profile import load_profile
from motus_core.runtime.contract import ContractError, negotiate
from motus_core.runtime.executor import ChunkExecutor, ExecState, ExecutorConfig
from motus_core.runtime.offline import run_closed_loop, synthetic_motion
from motus_core.runtime.safety import JointLimits
from motus_core.runtime.strategies import (RTCConfig, RTCStrategy, STRATEGIES, SyncStrategy, TemporalEnsembleConfig,
                                           TemporalEnsembleStrategy, make_strategy)

DT = 1 / 30


@pytest.fixture(scope="module")
def limits():
    return JointLimits.from_profile(load_profile("sim_aloha"), use_urdf=False)


@pytest.fixture(scope="module")
def motion():
    return synthetic_motion(load_profile("sim_aloha"), duration=14.0)


def test_defaults_fit_motus_and_mola():
    motus = negotiate(48, DT, strategy=RTCStrategy(), max_delay=0, robot_step_period=DT, min_delay=4)
    assert (motus.execution_horizon, motus.max_delay) == (16, 32)  # the figures of the existing runs
    mola = negotiate(15, DT, strategy=RTCStrategy(), max_delay=0, robot_step_period=DT, min_delay=4)
    assert (mola.execution_horizon, mola.max_delay) == (5, 10)
    assert mola.execution_horizon + mola.max_delay <= 15
    te = negotiate(15, DT, strategy=TemporalEnsembleStrategy(), max_delay=0, robot_step_period=DT, min_delay=4)
    assert (te.execution_horizon, te.max_delay) == (1, 14)
    sync = negotiate(15, DT, strategy=SyncStrategy(), max_delay=0, robot_step_period=DT, min_delay=4)
    assert (sync.execution_horizon, sync.max_delay) == (15, 0)


def test_a_horizon_that_does_not_fit_is_refused_with_the_numbers_and_the_fix():
    with pytest.raises(ContractError) as e:
        negotiate(15, DT, strategy=RTCStrategy(RTCConfig(execution_horizon=16)), max_delay=4, robot_step_period=DT, min_delay=4)
    assert "rtc.execution_horizon 16 > chunk_length 15 - max_delay 4: set rtc.execution_horizon <= 11" in str(e.value)
    with pytest.raises(ContractError) as e:  # the old default s = 16 with MoLA, delay budget derived
        negotiate(15, DT, strategy=RTCStrategy(RTCConfig(execution_horizon=16)), max_delay=0, robot_step_period=DT, min_delay=4)
    assert "set rtc.execution_horizon <= 11" in str(e.value)
    with pytest.raises(ContractError) as e:
        negotiate(15, DT, strategy=TemporalEnsembleStrategy(TemporalEnsembleConfig(replan_interval=12)), max_delay=0,
                  robot_step_period=DT, min_delay=4)
    assert "temporal_ensemble.replan_interval 12" in str(e.value) and "<= 11" in str(e.value)
    with pytest.raises(ContractError, match="max_delay 2 < the delay planned"):
        negotiate(48, DT, strategy=RTCStrategy(), max_delay=2, robot_step_period=DT, min_delay=4)


def test_a_step_period_other_than_the_robots_is_refused():
    with pytest.raises(ContractError) as e:
        negotiate(48, 1 / 20, strategy=RTCStrategy(), max_delay=0, robot_step_period=DT)
    msg = str(e.value)
    assert "20.0 Hz" in msg and "action_rate_hz 30.0" in msg
    negotiate(48, 1 / 29.9, strategy=RTCStrategy(), max_delay=0, robot_step_period=DT)  # within 1 %


def test_executor_takes_and_requests_nothing_without_a_contract(limits, motion):
    ex = ChunkExecutor(ExecutorConfig(), limits)
    ex.on_measured_state(0.0, motion[0])
    for i in range(20):
        ex.tick(i * 0.005)
    assert not ex.wants_request(0.1)
    res = ex.on_chunk(ActionChunk(actions=motion[1:49], step_period=DT, stamp=0.09), 0.1)
    assert not res.accepted and "contract" in res.reason
    # a contract that does not hold: refused, said so, still no request
    error = ex.set_contract(15, DT)
    assert error is None and ex.status()["execution_horizon"] == 5
    ex2 = ChunkExecutor(ExecutorConfig(rtc=RTCConfig(execution_horizon=16)), limits)
    ex2.on_measured_state(0.0, motion[0])
    ex2.tick(0.0)
    error = ex2.set_contract(15, DT)
    assert error and "rtc.execution_horizon <= 11" in error and error in ex2.status()["message"]
    assert not ex2.wants_request(0.005)
    assert not ex2.on_chunk(ActionChunk(actions=motion[1:16], step_period=DT, stamp=0.0), 0.005).accepted
    # a chunk that breaks the declared contract is rejected
    ex.tick(0.1)
    assert "chunk_length 15" in ex.on_chunk(ActionChunk(actions=motion[1:49], step_period=DT, stamp=0.09), 0.1).reason


@pytest.mark.parametrize("chunk_length", [15, 48])
@pytest.mark.parametrize("strategy", ["rtc", "temporal_ensemble"])
def test_mola_and_motus_chunk_lengths_run_with_default_settings(limits, motion, chunk_length, strategy):
    """MoLA's H = 15 and Motus' H = 48 with every default (inference delay 0.2 s = 6 actions)."""
    policy = ReplayPolicy(motion, chunk_length=chunk_length, align="state", perturb=0.005, seed=1)
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
    run = run_closed_loop(policy, ex, duration=8.0, initial_state=motion[0], inference_delay=0.2)
    st = run.status
    assert st["chunk_length"] == chunk_length
    assert st["watchdog_stops"] == 0, st
    assert st["chunks_rejected"] == 0, st
    assert st["chunks_received"] >= (8.0 - 1.0) / (st["execution_horizon"] * DT + 0.2) * 0.8
    assert ExecState.HOLDING not in set(run.states.tolist())


def test_the_old_horizon_starves_mola_which_the_contract_now_refuses(limits, motion):
    """Without the contract check, s = 16 with H = 15 ran the plan out before every request."""
    policy = ReplayPolicy(motion, chunk_length=15, align="state")
    ex = ChunkExecutor(ExecutorConfig(rtc=RTCConfig(execution_horizon=16)), limits)
    with pytest.raises(ContractError, match="rtc.execution_horizon 16"):
        run_closed_loop(policy, ex, duration=2.0, initial_state=motion[0], inference_delay=0.2)


def test_strategies_come_from_one_registry():
    assert tuple(STRATEGIES) == ("sync", "temporal_ensemble", "rtc")
    for name in STRATEGIES:
        s = make_strategy(name)
        assert s.name == name and isinstance(s.cfg, STRATEGIES[name].Config)
    cfg = ExecutorConfig()
    assert {"sync", "temporal_ensemble", "rtc"} <= set(cfg.__dataclass_fields__)
    with pytest.raises(ValueError, match="strategy must be one of"):
        ExecutorConfig(strategy="nope").validate()
    with pytest.raises(ValueError, match="rtc.schedule"):
        ExecutorConfig(rtc=RTCConfig(schedule="cosine")).validate()


def test_the_executor_process_does_not_load_torch():
    code = ("import sys; import motus_core.runtime.executor, motus_core.runtime.offline, motus_ros.nodes.executor_node; "
            "bad = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_models_declare_their_chunks():
    """Motus' H comes from its config (48), MoLA's from its config (15); both fit the defaults."""
    from motus_core.models.mola.config import MolaConfig
    from motus_core.policies import load_policy

    profile = load_profile("sim_aloha")
    tiny = load_policy("tiny_motus", profile=profile)
    try:
        assert (tiny.chunk_length, tiny.step_period) == (48, pytest.approx(1 / 30))
    finally:
        tiny.close()
    mola = MolaConfig()
    assert (mola.chunk_length, mola.step_period) == (15, pytest.approx(1 / 30))
    for H in (tiny.chunk_length, mola.chunk_length):
        negotiate(H, 1 / 30, strategy=RTCStrategy(), max_delay=0, robot_step_period=DT, min_delay=4)
