"""The op-overhead benchmark runs end to end (10 calls per case) and reports sane numbers."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import op_overhead  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402


def test_op_overhead_rows_and_table():
    rows = op_overhead.run(number=10, repeat=2, torch=False)
    assert [r["case"] for r in rows] == list(op_overhead.CASES)
    for r in rows:
        assert isinstance(r["numpy"], float) and r["numpy"] > 0
        assert isinstance(r["ember"], float | str)
        if isinstance(r["ember"], float):
            assert r["ratio"] == r["ember"] / r["numpy"]
    table = op_overhead.format_table(rows)
    assert table.splitlines()[0].split()[:3] == ["op", "ember", "us"]
    assert len(table.splitlines()) >= 1 + len(rows)


def test_time_call_counts_microseconds():
    assert 0 < op_overhead.time_call(lambda: None, number=100, repeat=2) < 1000


def test_bench_main_rejects_unknown_names(capsys):
    assert bench_main(["no_such_bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
