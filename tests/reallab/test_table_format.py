"""The printed table: a method that ran on fewer targets has its mean starred, not passed off as
comparable."""

from loramgr.examples.reallab.table import Row, Table, format_table


def _table() -> Table:
    return Table(rows=[
        Row("navigate", "in-context", 0, 0.6, 0.7),
        Row("snarks", "in-context", 0, 0.4, 0.5),
        Row("navigate", "loramgr w0", 0, 0.8, None, seconds=10.0),
    ])


def test_a_mean_over_fewer_targets_is_starred():
    lines = format_table(_table()).splitlines()
    in_context = next(line for line in lines if line.startswith("in-context"))
    partial = next(line for line in lines if line.startswith("loramgr w0"))
    assert "0.50 (0.60)" in in_context and "*" not in in_context
    assert "0.80*" in partial
    assert lines[-1].startswith("* mean over only the targets")


def test_a_complete_table_has_no_star():
    table = Table(rows=[r for r in _table().rows if r.method == "in-context"])
    assert "*" not in format_table(table)
    assert table.covers_all_targets("in-context")
