"""Policy implementations and the registry that creates them from a spec string.

Sits above the interface (:mod:`motus_core.policy`, which imports nothing of this package):

* ``registry``  :func:`load_policy` (``tiny_motus``, ``replay:<path>``, or a checkpoint directory
                with ``motus_policy.yaml``: ``kind: motus | mola``), implementations imported lazily
* ``replay``    plays back a recorded trajectory (tests, demos, benchmarks, fault injection)
* ``tiny``      the ``tiny_motus`` kind: the real Motus code with tiny widths and random weights

The model policies live with their models (``motus_core.models.motus.policy``, ``...mola.policy``).
"""
from motus_core.policies.registry import FACTORIES, POLICY_FILE, load_policy

__all__ = ["FACTORIES", "POLICY_FILE", "load_policy"]
