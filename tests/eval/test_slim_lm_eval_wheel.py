"""scripts/slim_lm_eval_wheel.py: lm-eval's wheel without the task folders this project does not run."""

import base64
import hashlib
import subprocess
import sys
import zipfile

from tests.scripts import load_script

FILES = {
    "lm_eval/__init__.py": "VERSION = 1\n",
    "lm_eval/tasks/__init__.py": "from .manager import X\n",
    "lm_eval/tasks/manager.py": "X = 2\n",
    "lm_eval/tasks/mmlu/default.yaml": "task: mmlu\n" * 50,
    "lm_eval/tasks/mmlu/sub/deep.yaml": "task: deep\n",
    "lm_eval/tasks/longbench/hotpotqa.yaml": "task: longbench_hotpotqa\n",
    "lm_eval-0.4.13.dist-info/METADATA": "Metadata-Version: 2.1\nName: lm_eval\nVersion: 0.4.13\n",
    "lm_eval-0.4.13.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def test_slim_drops_unused_task_folders_and_rewrites_record(tmp_path):
    wheel = tmp_path / "lm_eval-0.4.13-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in FILES.items():
            z.writestr(name, text)
        z.writestr("lm_eval-0.4.13.dist-info/RECORD", "stale,sha256=x,1\n")
    assert load_script("slim_lm_eval_wheel").slim(wheel) == (len(FILES) + 1, len(FILES) - 1)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("lm_eval-0.4.13.dist-info/RECORD").decode().splitlines()
        contents = {n: z.read(n) for n in names}
    assert "lm_eval/tasks/mmlu/default.yaml" not in names and "lm_eval/tasks/mmlu/sub/deep.yaml" not in names
    assert {"lm_eval/tasks/manager.py", "lm_eval/tasks/longbench/hotpotqa.yaml", "lm_eval/__init__.py"} <= names
    # every file but RECORD itself is listed with its urlsafe-base64 sha256 (no padding) and size
    for name in names - {"lm_eval-0.4.13.dist-info/RECORD"}:
        digest = base64.urlsafe_b64encode(hashlib.sha256(contents[name]).digest()).decode().rstrip("=")
        assert f"{name},sha256={digest},{len(contents[name])}" in record
    assert record[-1] == "lm_eval-0.4.13.dist-info/RECORD,,"
    # and pip installs it as it does on the GPU machine
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(target), str(wheel)], check=True)
    assert (target / "lm_eval" / "tasks" / "longbench" / "hotpotqa.yaml").exists()
    assert not (target / "lm_eval" / "tasks" / "mmlu").exists()
