"""Beyond one GPU: a Ray Serve pool behind the ZeroMQ front, and render-farm jobs (docs/scale-out.md).

- ``worker``: the work itself, the same in every place it runs: one model loaded per process, the adapters it
  is asked for resident, fill frames rendered into a take someone else opened, each frame published once.
- ``serve_app``: the Ray Serve application whose replicas are ``worker``s (``@serve.multiplexed`` adapters).
- ``pool``: the gateway inside ``bodydouble serve --pool ADDRESS``: splits a job into frame tasks, spreads them
  over the replicas, aggregates progress, cancels, retries a dead replica's tasks, completes the take.
- ``farm``: ``bodydouble farm submit``: Open Job Description bundles and OpenCue outlines running ``worker``.

Nothing here is imported by the single-GPU server unless a pool or a farm job is asked for.
"""
