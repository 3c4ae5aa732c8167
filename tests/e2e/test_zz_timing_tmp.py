import sys, time
from tests.e2e import notebook_runner as m
from tests.e2e.test_notebooks import run, ENDPOINT
from dbstruct.testing import Emulator

def test_t(classic_spark, monkeypatch):
    orig = m._run_cell
    def timed(name, cell, *a):
        t = time.time(); orig(name, cell, *a); print(f"cell {cell.number}: {time.time()-t:.2f}s", file=sys.__stderr__)
    monkeypatch.setattr(m, "_run_cell", timed)
    with Emulator(token="dapi1234567890abcdef12", endpoints=[ENDPOINT]) as emu:
        t = time.time()
        run("02_dataframe_extraction.py", classic_spark, emu, "dapi1234567890abcdef12", rows="40")
        print("total", time.time() - t, file=sys.__stderr__)
        t = time.time()
        run("02_dataframe_extraction.py", classic_spark, emu, "dapi1234567890abcdef12", rows="40")
        print("total", time.time() - t, file=sys.__stderr__)
