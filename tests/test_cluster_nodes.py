"""A stage's node leaving the cluster (edgellm.cluster): its own module, as it runs a multi-node Ray cluster of
its own (test_cluster's module fixtures hold a local instance)."""

from __future__ import annotations

import time

import pytest

CTX = 64
PROMPT = "w3 w4 w5 w6 w3 w4 w5 w6 w3 w4"


@pytest.fixture(scope="module")
def q4_file(tmp_path_factory):
    from conftest import six_layer_q4

    return six_layer_q4(tmp_path_factory.mktemp("q4"))


def test_a_node_that_leaves_fails_clearly(q4_file):
    """Two Ray nodes on this machine (ray.cluster_utils, as Ray tests multi-node clusters); the second one's
    raylet is killed mid-generation: the error names its stage within seconds, never a hang."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from edgellm.cluster.driver import load_cluster
    from edgellm.cluster.pipeline import ClusterError

    if ray.is_initialized():
        ray.shutdown()
    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": fast})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        m = load_cluster(q4_file, cluster=cluster.address, node_budget="60%", context=CTX)
        try:
            assert len(m.plan.specs) == 2 and m.plan.nodes[0] != m.plan.nodes[1]
            t0 = time.perf_counter()
            with pytest.raises(ClusterError, match=r"stage 1 \(layers \d+\.\.5\) on .* is gone") as e:
                with m.stream(PROMPT, max_tokens=32, speculative=False) as chunks:
                    for n, _ in enumerate(chunks):
                        if n == 2:  # gone before the next pass (a tiny model's 30 passes would beat its death)
                            cluster.remove_node(worker, allow_graceful=False)
                            time.sleep(1.0)
            assert time.perf_counter() - t0 < 30, "the error must come within seconds"
            assert "\n" not in str(e.value)
        finally:
            m.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
