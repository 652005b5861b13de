"""Beyond one GPU: a Ray Serve pool behind the ZeroMQ front, and render-farm jobs (docs/scale-out.md).

- ``worker``: the work itself, the same in every place it runs: one model loaded per process, the adapters it
  is asked for resident, fill frames rendered into a take someone else opened, each frame published once;
  whole extends on its video model.
- ``serve_app``: the Ray Serve application whose replicas are ``worker``s (``@serve.multiplexed`` adapters).
- ``pool``: the gateway inside ``bodydouble serve --pool ADDRESS``: splits a fill into frame tasks, spreads them
  over the replicas, aggregates progress, cancels, retries a dead replica's tasks, completes the take; sends
  an extend to one replica and a training to a Ray task; gives up on a stalled cluster.
- ``relay``: a pool job's events (progress, its take, cancel) between the gateway and the Ray process doing it.
- ``offload``: training in its own process beside a server, or as a pool's Ray task.
- ``farm``: ``bodydouble farm submit``: Open Job Description bundles and OpenCue outlines running ``worker``.

Nothing here is imported by the single-GPU server unless a pool or a farm job is asked for.
"""
