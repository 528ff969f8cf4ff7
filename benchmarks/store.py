"""Store latency outside the LLM: add (embed + write), search warm, search right after another
connection's write, and search under concurrent readers. Asserts nothing.

    .venv/bin/python benchmarks/store.py [--store sqlite|postgres] [--target PATH_OR_DSN]
        [--sizes 10000,100000] [--dim 384] [--k 10] [--readers 4] [--searches 200]
        [--minilm] [--out benchmarks/results/store]                          # -> .json, .md

Every store is opened through ``memory_r1.store.open_store(target, embedder, kind=--store)``,
so PostgreSQL is measured the same way (``--target`` a DSN; SQLite: a file, default a fresh
temporary one). Per size N, bank ``bench-N`` is emptied, then filled with N memories of one
owner (one scope, ``add_many`` in batches of 1,000) by a writer instance W, and measured
through a second instance R (another connection, as another process would hold):

* ``cold_s``: R's first search (its scope built from the store);
* ``warm``: R's searches with nothing written meanwhile;
* ``after_write``: W adds one memory, then R searches (R must see it: it is checked);
* ``after_own_write``: R adds one memory, then searches;
* ``add``: W's ``add`` (HashEmbedder embedding + one write transaction, history row included);
* ``threads``: ``--readers`` threads, each with its own instance, searching while W adds one
  memory every 20 ms; ``procs``: the same with reader processes (each builds its own scope).

Latencies are per call in milliseconds (p50 / p95). Embeddings: ``HashEmbedder(--dim)`` (the
query embedding is ~0.1 ms of each search); ``--minilm`` also times ``add`` with the real
all-MiniLM-L6-v2 embedder on a small separate SQLite file, since a file keeps one embedder.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from memory_r1.store import create_embedder, open_store
from memory_r1.store.embedders import HashEmbedder

OWNER = "A"


def _text(i: int) -> str:
    return f"memory {i}: {OWNER} talked about topic {i % 97} and thing {i % 1009} on day {i % 31}"


def _ms(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=20, method="inclusive")
    return {"p50": round(statistics.median(samples) * 1e3, 3), "p95": round(qs[18] * 1e3, 3)}


def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def _fill(store: Any, bank: str, n: int) -> float:
    store.delete_bank(bank)
    start = time.perf_counter()
    for lo in range(0, n, 1000):
        store.add_many(bank, [{"text": _text(i), "owner": OWNER} for i in range(lo, min(n, lo + 1000))])
    return time.perf_counter() - start


def _reader_proc(job: dict[str, Any]) -> list[float]:
    """One reader process: open, build the scope, then ``searches`` timed searches."""
    with open_store(job["target"], HashEmbedder(job["dim"]), kind=job["kind"]) as store:
        store.search(job["bank"], "warm up", owner=OWNER, k=job["k"])
        return _timed(lambda i: store.search(job["bank"], _text(i * 7), owner=OWNER, k=job["k"]), job["n"])


def _concurrent(args: argparse.Namespace, bank: str, writer: Any, procs: bool) -> dict[str, Any]:
    """Per-search latency and total searches/s of ``--readers`` readers while ``writer`` adds."""
    stop, added = threading.Event(), [0]

    def write() -> None:
        while not stop.wait(0.02):
            writer.add(bank, f"concurrent write {added[0]}", owner=OWNER)
            added[0] += 1

    job = {"target": args.target, "kind": args.store, "dim": args.dim, "bank": bank, "k": args.k}
    job["n"] = args.searches
    thread = threading.Thread(target=write)
    thread.start()
    start = time.perf_counter()
    try:
        if procs:
            with mp.get_context("spawn").Pool(args.readers) as pool:
                runs = pool.map(_reader_proc, [job] * args.readers)
        else:
            runs = [[] for _ in range(args.readers)]
            workers = [threading.Thread(target=lambda r=r: r.extend(_reader_proc(job))) for r in runs]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        stop.set()
        thread.join()
    wall = time.perf_counter() - start
    flat = [x for run in runs for x in run]
    return {**_ms(flat), "searches_per_s": round(len(flat) / wall, 1), "writes": added[0]}


def bench_size(args: argparse.Namespace, n: int) -> dict[str, Any]:
    bank, emb = f"bench-{n}", HashEmbedder(args.dim)
    with (
        open_store(args.target, emb, kind=args.store) as w,
        open_store(args.target, emb, kind=args.store) as r,
    ):
        fill_s = _fill(w, bank, n)
        start = time.perf_counter()
        r.search(bank, "cold", owner=OWNER, k=args.k)
        cold_s = time.perf_counter() - start
        cpu0 = time.thread_time()  # CPU, not wall: what a search costs on a machine of its own
        warm = _timed(lambda i: r.search(bank, _text(i * 13), owner=OWNER, k=args.k), args.searches)
        warm_cpu_ms = round((time.thread_time() - cpu0) / args.searches * 1e3, 3)
        refresh = []
        for i in range(args.searches // 4):  # k=0: the freshness check and refresh, no ranking
            w.add(bank, f"refresh probe {i}", owner=OWNER)
            refresh.append(_timed(lambda _: r.search(bank, "probe", owner=OWNER, k=0), 1)[0])
        after = []
        for i in range(args.searches // 4):
            text = f"fresh fact number {i} written by W"
            w.add(bank, text, owner=OWNER)
            start = time.perf_counter()
            hits = r.search(bank, text, owner=OWNER, k=args.k)
            after.append(time.perf_counter() - start)
            # in the top k, not necessarily first: HashEmbedder vectors can collide
            assert text in [h.memory.text for h in hits], "R missed W's committed write"
        own = []
        for i in range(args.searches // 4):
            r.add(bank, f"own fact {i}", owner=OWNER)
            start = time.perf_counter()
            r.search(bank, f"own fact {i}", owner=OWNER, k=args.k)
            own.append(time.perf_counter() - start)
        adds = _timed(lambda i: w.add(bank, f"timed add {i} of {n}", owner=OWNER), args.searches)
        row = {"size": n, "fill_s": round(fill_s, 2), "cold_s": round(cold_s, 3), "warm": _ms(warm)}
        row.update(warm_cpu_ms_mean=warm_cpu_ms, refresh_after_write=_ms(refresh))
        row.update(after_write=_ms(after), after_own_write=_ms(own), add=_ms(adds))
        row["threads"] = _concurrent(args, bank, w, procs=False)
        row["procs"] = _concurrent(args, bank, w, procs=True)
        return row


def bench_minilm(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``add`` latency with the real embedder (each text new, so its cache never answers)."""
    emb = create_embedder("minilm")
    emb.embed(["load the model first"])
    with open_store(folder / "minilm.sqlite", emb, kind="sqlite") as s:
        adds = _timed(
            lambda i: s.add("bench-minilm", f"Alice mentioned fact {i} on day {i % 31}", OWNER), 100
        )
        embeds = _timed(lambda i: emb.embed([f"an unseen sentence {i} about topic {i % 7}"]), 100)
    return {"add": _ms(adds), "embed_only": _ms(embeds)}


def markdown(result: dict[str, Any]) -> str:
    readers = result["settings"]["readers"]
    head = (
        "| size | fill s | cold s | warm | warm CPU (mean) | refresh only | after other's write"
        f" | after own write | add | {readers} reader threads | {readers} reader procs |"
    )
    lines = ["# Store latency (ms, p50 / p95)", "", f"settings: {json.dumps(result['settings'])}", ""]
    lines += [head, "|" + "---|" * 11]
    for r in result["sizes"]:
        cells = [f"{r['warm']['p50']} / {r['warm']['p95']}", str(r["warm_cpu_ms_mean"])]
        keys = ("refresh_after_write", "after_write", "after_own_write", "add")
        cells += [f"{r[key]['p50']} / {r[key]['p95']}" for key in keys]
        cells += [
            f"{r[key]['p50']} / {r[key]['p95']} ({r[key]['searches_per_s']}/s)"
            for key in ("threads", "procs")
        ]
        lines.append(f"| {r['size']:,} | {r['fill_s']} | {r['cold_s']} | " + " | ".join(cells) + " |")
    if "minilm" in result:
        m = result["minilm"]
        lines += ["", f"MiniLM add (embed + write): {m['add']}; embedding alone: {m['embed_only']}"]
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "Notes:",
    "",
    "* Search is exact brute force over the scope's cached float32 matrix (numpy); a commit by",
    "  another connection costs a `PRAGMA data_version` check plus a read of the changed rows only",
    "  (`seq > last`), appended to a geometrically growing buffer: `refresh only` (a `k=0` search",
    "  right after another connection's add) is that cost alone, independent of the bank size.",
    "* Before this change a search after any write re-read the whole scope (`cold s`) and another",
    "  connection's writes were never seen.",
    "* Cost of the cache: ~4*dim bytes per memory per process (150 MiB at 100k x 384) and one cold",
    "  build per scope per process (`cold s`).",
    "* sqlite-vec (`vec0`) was not needed: its KNN is also exact brute force, in C inside SQLite,",
    "  so it would not beat the numpy matmul on latency; it would save the per-process matrix and",
    "  the cold build, at the price of a native extension and a second copy of every vector that",
    "  the writer transaction must keep in sync. An ANN index (HNSW/IVF) pays off only well past",
    "  the 20 ms p95 budget, i.e. around 1M+ vectors per scope.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--target", default=None, help="SQLite file or PostgreSQL DSN (default: a temp file)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--minilm", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/store")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        if args.target is None:
            if args.store != "sqlite":
                ap.error("--store postgres needs --target DSN")
            args.target = str(Path(tmp) / "bench.sqlite")
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        settings["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
        settings["cpus"], settings["loadavg_at_start"] = os.cpu_count(), round(os.getloadavg()[0], 2)
        if args.store == "sqlite" and args.target.startswith(tmp):
            settings["target"] = "<temporary file>"
        result: dict[str, Any] = {"settings": settings, "sizes": []}
        for n in (int(s) for s in args.sizes.split(",")):
            result["sizes"].append(bench_size(args, n))
            print(json.dumps(result["sizes"][-1]), flush=True)
        if args.minilm:
            result["minilm"] = bench_minilm(args, Path(tmp))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
