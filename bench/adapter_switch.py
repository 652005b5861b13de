"""Switching between two resident adapters (``set_adapters``, what the server does per request) vs loading
the adapter from disk each time (``load_lora_weights`` + ``delete_adapters``). Target: >= 20x faster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from bodydouble_server.adapter_files import synthetic_adapter
    from bodydouble_server.adapters import WEIGHTS_FILE, AdapterLibrary
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine

    root = Path(tempfile.mkdtemp(prefix="bd-bench-"))
    engine = Engine(ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters")))
    engine.load()
    pipe = engine.pipelines["fill"]
    for name, seed in (("a", 1), ("b", 2)):
        synthetic_adapter(pipe, engine.identity, root / "adapters" / name, character=name, seed=seed)
    library = AdapterLibrary(root / "adapters", engine.identity)
    library.sync(pipe)
    a, b = (library.resolve([type("R", (), {"name": n, "weight": 1.0})()])[0] for n in ("a", "b"))

    def resident() -> float:
        t = time.perf_counter()
        library.activate(pipe, [a])
        library.activate(pipe, [b])
        return (time.perf_counter() - t) / 2

    def from_disk() -> float:
        t = time.perf_counter()
        for adapter, _ in (a, b):
            pipe.load_lora_weights(str(adapter.folder), weight_name=WEIGHTS_FILE, adapter_name="disk")
            pipe.set_adapters(["disk"])
            pipe.delete_adapters("disk")
        return (time.perf_counter() - t) / 2

    resident(), from_disk()
    r, d = [], []
    for _ in range(args.repeats):
        r.append(resident())
        d.append(from_disk())
    mr, md = statistics.median(r), statistics.median(d)
    print(f"adapter switch on the embedded model, {args.repeats} interleaved runs")
    print(f"  resident set_adapters       : {mr * 1000:8.2f} ms (median)")
    print(f"  load_lora_weights from disk : {md * 1000:8.2f} ms (median)")
    print(f"  speed-up                    : {md / mr:.1f}x   (target >= 20x)")


if __name__ == "__main__":
    main()
