"""Reports: result rows as terminal tables and JSON files.

>>> from effstack.report import print_rows, write_rows   # doctest: +SKIP
>>> print_rows(rows); write_rows("results.json", rows)   # doctest: +SKIP
"""

from .jsonio import atomic_write_text, read_report, read_rows, write_rows
from .table import format_text, print_rows, render_table

__all__ = ["atomic_write_text", "format_text", "print_rows", "read_report", "read_rows", "render_table", "write_rows"]
