"""``zhangben dev cluster up|status|down``: cells of Patroni nodes on this machine (docs/scale-out.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zhangben.cluster import ClusterError, DevCluster


def cmd_cluster_up(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / "cluster.json").exists():
        return _fail(f"a cluster is already at {root}: `zhangben dev cluster down --dir {root}` first")
    try:
        cluster = DevCluster.create(root, cells=args.cells, nodes=args.nodes)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        cluster.save()
    except ClusterError as exc:
        return _fail(str(exc))
    print(f"{len(cluster.cells)} cells of {args.nodes} nodes up under {cluster.root} (etcd on {cluster.etcd_port})")
    print("add to zhangben.toml, then `zhangben db init`:\n")
    for line in cluster.config_lines():
        print(line)
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    try:
        cluster = DevCluster.load(Path(args.dir))
    except ClusterError as exc:
        return _fail(str(exc))
    for cell in cluster.cells:
        members = {m["name"]: m for m in cell.members()}
        for node in cell.nodes:
            member = members.get(node.name, {})
            role, state = member.get("role", "down"), member.get("state", "stopped")
            print(f"cell {cell.name}  {node.name}  127.0.0.1:{node.pg_port}  {role:<12} {state}")
    return 0


def cmd_cluster_down(args: argparse.Namespace) -> int:
    try:
        cluster = DevCluster.load(Path(args.dir))
    except ClusterError as exc:
        return _fail(str(exc))
    cluster.stop()
    print(f"cluster at {cluster.root} stopped and removed")
    return 0


def _fail(message: str) -> int:
    print(f"zhangben: error: {message}", file=sys.stderr)
    return 1
