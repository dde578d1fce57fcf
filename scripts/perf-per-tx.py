#!/usr/bin/env python3
"""Node samples per 1,000 committed transactions, by symbol and by kind of work, for runs made
by scripts/profile-bench.sh; with two runs, the second against the first, largest growth first.

    scripts/perf-per-tx.py /tmp/profile-bench/old /tmp/profile-bench/new [--top 40]

Each argument is OUT/TAG (the script reads TAG.samples and TAG.json). The node processes are
told from the bench's own by their command: the bench process has the most samples of all
(it signs the whole workload before the clock starts), the next as many as the run had nodes.
"""
import argparse
import collections
import json
import re

KINDS = [
    ("signatures", r"curve25519|ed25519|verify_batch|sha2::"),
    ("hashing", r"blake2"),
    ("allocator", r"malloc|_int_free|cfree|unlink_chunk|realloc|malloc_consolidate"),
    ("copies", r"memmove|memcpy|memset|memcmp"),
    ("encoding", r"postcard|serde|Serialize|Deserialize"),
    ("hash maps", r"hashbrown|hash_one|BuildHasher"),
    ("QUIC and TLS", r"quinn|rustls|ring_core"),
    ("tokio", r"tokio"),
]


def load(prefix):
    report = json.load(open(prefix + ".json"))
    committed = report["committed"]
    per_process = collections.Counter()
    per_symbol = collections.Counter()
    for line in open(prefix + ".samples", errors="replace"):
        parts = line.split()
        if len(parts) < 3 or "/" not in parts[1]:
            continue
        process = int(parts[1].split("/")[0])
        if process == 0:
            continue
        symbol = re.sub(r"::h[0-9a-f]{16}$", "", " ".join(parts[3:]) or "?")
        per_process[process] += 1
        per_symbol[(process, symbol)] += 1
    ranked = [process for process, _ in per_process.most_common(1 + report.get("nodes", 4))]
    bench, nodes = ranked[0], set(ranked[1:])
    symbols = collections.Counter()
    for (process, symbol), count in per_symbol.items():
        if process in nodes and process != bench:
            symbols[symbol] += count
    return committed, symbols


def kind(symbol):
    for name, pattern in KINDS:
        if re.search(pattern, symbol):
            return name
    if symbol.startswith("kasane"):
        return "::".join(symbol.split("::")[:2])
    if "::" not in symbol:
        return "kernel and libc"
    return "other"


def per_thousand(runs):
    tables = []
    for committed, symbols in runs:
        table = collections.Counter()
        kinds = collections.Counter()
        for symbol, count in symbols.items():
            table[symbol] += count * 1000 / committed
            kinds[kind(symbol)] += count * 1000 / committed
        tables.append((table, kinds))
    return tables


def show(title, tables, top):
    keys = set().union(*(table.keys() for table in tables))
    last = tables[-1]
    first = tables[0]
    ordered = sorted(keys, key=lambda key: -(last[key] - first[key]) if len(tables) > 1 else -last[key])
    print(f"== {title}")
    for key in ordered[:top]:
        figures = " ".join(f"{table[key]:8.3f}" for table in tables)
        change = f" {last[key] - first[key]:+8.3f}" if len(tables) > 1 else ""
        print(f"{figures}{change}  {key[:100]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="OUT/TAG of scripts/profile-bench.sh, one or two")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    runs = [load(prefix) for prefix in args.runs[:2]]
    for prefix, (committed, symbols) in zip(args.runs, runs):
        print(f"{prefix}: {committed} committed, {sum(symbols.values()) * 1000 / committed:.2f} node samples per 1,000")
    tables = per_thousand(runs)
    show("by kind of work", [kinds for _, kinds in tables], args.top)
    show("by symbol", [table for table, _ in tables], args.top)


if __name__ == "__main__":
    main()
