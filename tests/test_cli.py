import subprocess
import sys

import pathnet.cli as cli


def test_demo_prints_the_dag(capsys):
    assert cli.main(["demo", "--data", "digits", "--model", "lenet300"]) == 0
    out = capsys.readouterr().out
    assert "Dataset('digits'" in out and "19,200/19,200" in out  # 64→300 weights, all kept


def test_bad_arguments_give_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "pathnet", "demo", "--data", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown dataset 'nope'" in proc.stderr
