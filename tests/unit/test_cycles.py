"""Replication cycles among a config's pipelines: the pure finder, and the edges and messages
built from a loaded config with given instances (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.config import load_config
from cdc_sync.records import TableId
from cdc_sync.runtime.cycle_check import cycle_problems, pipeline_edges
from cdc_sync.runtime.cycles import Edge, Node, find_cycles


def n(instance: str, table: str = "public.t") -> Node:
    return Node(instance, TableId.parse(table))


def e(pipeline: str, src: Node, dst: Node, link: str | None = None) -> Edge:
    return Edge(pipeline, src, dst, link)


def pipelines(cycles: list[tuple[Edge, ...]]) -> list[list[str]]:
    return [[x.pipeline for x in c] for c in cycles]


def test_two_pipelines_both_ways_are_one_cycle() -> None:
    a, b = n("A"), n("B")
    found = find_cycles([e("b_to_a", b, a), e("a_to_b", a, b)])
    assert pipelines(found) == [["a_to_b", "b_to_a"]]  # starts at its smallest edge


def test_a_ring_of_three_and_renames_are_followed() -> None:
    edges = [
        e("a_to_b", n("A", "s.x"), n("B", "s.y")),
        e("b_to_c", n("B", "s.y"), n("C", "s.z")),
        e("c_to_a", n("C", "s.z"), n("A", "s.x")),
    ]
    assert pipelines(find_cycles(edges)) == [["a_to_b", "b_to_c", "c_to_a"]]
    renamed_away = [*edges[:2], e("c_to_a", n("C", "s.z"), n("A", "s.other"))]
    assert find_cycles(renamed_away) == []


def test_a_chain_other_tables_and_fan_in_are_no_cycle() -> None:
    a, b, c = n("A"), n("B"), n("C")
    assert find_cycles([e("a_to_b", a, b), e("b_to_c", b, c)]) == []
    assert find_cycles([e("a_to_b", a, b), e("b_to_a", n("B", "s.u"), n("A", "s.u"))]) == []
    assert find_cycles([e("a_to_w", a, c), e("b_to_w", b, c)]) == []


def test_a_links_two_directions_and_a_hub_of_links_are_no_cycle() -> None:
    a, b, c = n("A"), n("B"), n("C")
    one = [e("l__a_to_b", a, b, "l"), e("l__b_to_a", b, a, "l")]
    assert find_cycles(one) == []
    hub = [*one, e("m__b_to_c", b, c, "m"), e("m__c_to_b", c, b, "m")]
    assert find_cycles(hub) == []  # each link drops its counterpart's echo: a tree


def test_a_link_with_an_ordinary_pipeline_or_another_link_is_a_cycle() -> None:
    a, b, c = n("A"), n("B"), n("C")
    link = [e("l__a_to_b", a, b, "l"), e("l__b_to_a", b, a, "l")]
    mixed = find_cycles([*link, e("extra_b_to_a", b, a)])
    assert pipelines(mixed) == [["extra_b_to_a", "l__a_to_b"]]
    twice = find_cycles([*link, e("m__a_to_b", a, b, "m"), e("m__b_to_a", b, a, "m")])
    assert pipelines(twice) == [["l__a_to_b", "m__b_to_a"], ["l__b_to_a", "m__a_to_b"]]
    ring = [
        *link,
        e("m__b_to_c", b, c, "m"),
        e("m__c_to_b", c, b, "m"),
        e("k__c_to_a", c, a, "k"),
        e("k__a_to_c", a, c, "k"),
    ]
    assert pipelines(find_cycles(ring)) == [
        ["k__a_to_c", "m__c_to_b", "l__b_to_a"],
        ["k__c_to_a", "l__a_to_b", "m__b_to_c"],
    ]


def test_one_pipeline_into_its_own_tables_is_left_to_self_loop() -> None:
    a = n("A")
    assert find_cycles([e("p", a, a)]) == []
    x, y = n("A", "s.x"), n("A", "s.y")
    assert find_cycles([e("p", x, y), e("p", y, x)]) == []


def test_each_table_is_its_own_cycle_and_found_once() -> None:
    edges = [
        e(p, n(s, t), n(d, t))
        for p, s, d in (("a_to_b", "A", "B"), ("b_to_a", "B", "A"))
        for t in ("s.one", "s.two")
    ]
    found = find_cycles(edges + edges)
    assert [[str(x.source.table) for x in c] for c in found] == [
        ["s.one", "s.one"],
        ["s.two", "s.two"],
    ]


CONFIG = """
sources:
  src_a: {type: postgres, dsn: "postgresql://u:${PW}@h1/a"}
  src_b: {type: mysql, dsn: "mysql://u:${PW}@h2:3306/b", server_id: 7}
  src_c: {type: postgres, dsn: "postgresql://u:${PW}@h3/c"}
targets:
  tgt_a: {type: postgres, dsn: "postgresql://u:${PW}@h1/a"}
  tgt_b: {type: mysql, dsn: "mysql://u:${PW}@h2:3306/b"}
pipelines:
  a_to_b: {source: src_a, target: tgt_b, tables: {public.people: {target: b.people}}}
  b_to_a: {source: src_b, target: tgt_a, tables: {b.people: {target: public.people}}}
"""
LINK = """
links:
  l:
    between: [src_a, src_c]
    tables:
      public.people <-> public.people: {}
"""
INSTANCES = {
    ("source", "src_a"): "postgres:1/a",
    ("target", "tgt_a"): "postgres:1/a",
    ("target", "src_a"): "postgres:1/a",  # a link side written through its source DSN
    ("source", "src_b"): "mysql:h2:3306:/data/",
    ("target", "tgt_b"): "mysql:h2:3306:/data/",
    ("source", "src_c"): "postgres:3/c",
    ("target", "src_c"): "postgres:3/c",
}


def test_a_config_cycle_is_named_with_its_fix_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "secret")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    problems = cycle_problems(cfg, INSTANCES)
    assert set(problems) == {"a_to_b", "b_to_a"}
    (line,) = problems["a_to_b"]
    assert problems["b_to_a"] == [line]
    assert "pipelines a_to_b, b_to_a form a replication cycle" in line
    assert "a_to_b copies public.people (source src_a) to b.people (target tgt_b)" in line
    assert "b_to_a copies b.people (source src_b) to public.people (target tgt_a)" in line
    assert "`links:` entry" in line and "remove one direction" in line
    assert "secret" not in line and "h1" not in line and "postgres:1" not in line
    # An endpoint that could not be asked: its pipeline's edges are skipped.
    unknown = {k: v for k, v in INSTANCES.items() if k != ("target", "tgt_a")}
    assert cycle_problems(cfg, unknown) == {}


def test_a_link_alone_is_fine_and_with_an_ordinary_pipeline_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "secret")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.split("pipelines:", maxsplit=1)[0] + LINK)
    cfg = load_config(path)
    edges = pipeline_edges(cfg, INSTANCES)
    assert {(x.pipeline, x.link) for x in edges} == {("l__src_a_to_src_c", "l"),
                                                     ("l__src_c_to_src_a", "l")}  # fmt: skip
    assert cycle_problems(cfg, INSTANCES) == {}
    extra = "pipelines:\n  back: {source: src_c, target: tgt_a, tables: {public.people: {}}}\n"
    path.write_text(CONFIG.split("pipelines:", maxsplit=1)[0] + extra + LINK)
    problems = cycle_problems(load_config(path), INSTANCES)
    assert set(problems) == {"back", "l__src_a_to_src_c"}
    assert "(link l)" in problems["back"][0]
    assert "drops only what its own other direction wrote" in problems["back"][0]
