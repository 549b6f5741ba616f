"""A model pipelined across several devices on Ray: each node holds a contiguous range of layers (pinned where
its budget allows, streamed within it where not) and only the residual stream crosses the network.

    split.py        which layers each node holds (the planner), and a stage's own plan
    stage.py        one stage: its layers and their KV cache under its node's budget (plain Python)
    ray_cluster.py  connecting to Ray, one stage actor per node
    pipeline.py     the driver's forward pass over the stages; their failures as one clear error
    driver.py       load(path, cluster=...) and plan(path, cluster=...)

The core never imports this package unless a cluster is asked for, and this package imports Ray only then.
"""
