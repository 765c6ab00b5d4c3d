"""The Space's requirements.txt stays in step with pyproject; the two-command setup exists."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs):
    return {re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0].lower(): r.strip() for r in reqs if r.strip()}


def test_requirements_match_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    ]  # "-": pip options (e.g. the CPU torch index)
    assert _names(lines) == _names(deps)


def test_readme_quickstart_has_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_ci_calls_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_ci_runs_the_suite_as_a_newcomer_with_an_empty_data_root():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^SRWEB_DATA_ROOT="\$\(mktemp -d\)"$', script, re.M) and "export SRWEB_DATA_ROOT" in script
    assert script.index("SRWEB_DATA_ROOT") < script.index("make test")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, srweb; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_space_front_matter_matches_the_installed_gradio():
    import gradio

    front = (ROOT / "README.md").read_text().split("---\n")[1]
    fields = {k.strip(): v.strip().strip('"') for k, v in (line.split(":", 1) for line in front.splitlines())}
    assert fields["sdk"] == "gradio" and fields["sdk_version"] == gradio.__version__
    assert fields["app_file"] == "app.py" and (ROOT / fields["app_file"]).is_file()
    minimum = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, fields["python_version"].split("."))) >= tuple(map(int, minimum.split(".")))
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()  # the Space guide is linked, and there
    assert "## Hugging Face Spaces" in (ROOT / "docs" / "deploy.md").read_text()
