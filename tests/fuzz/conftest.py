"""Prints how many inputs each parser was tried with at the end of the run (`pytest tests/fuzz -q`; under
xdist each worker counts its own and the summary is not shown)."""

from fuzzing import TRIED


def pytest_terminal_summary(terminalreporter):
    if TRIED:
        terminalreporter.section("fuzz: inputs tried per parser")
        for parser, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{count:7d}  {parser}")
