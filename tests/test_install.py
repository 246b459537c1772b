"""scripts/install.sh, run for real by bash against a fake root (`--prefix`).

With `--prefix` the script writes every file under the prefix and only prints the
system steps (apt, useradd, chown, systemctl) as "would run: ..." lines, so these tests
check the files it makes and the commands it would run, without root and without
touching the machine. `--no-venv` skips the slow venv step; one slow test builds the
real venv (pip installs this checkout) and runs the installed `edgemeter`.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"
# The manual check that runs this script under a real systemd (not run by the tests: it
# needs root and the package registries); only checked statically here.
SMOKE_SCRIPT = ROOT / "scripts" / "systemd-smoke.sh"
EXAMPLE_CONFIG = ROOT / "config.yaml"
UNIT = ROOT / "systemd" / "edgemeter.service"

QUICK_TIMEOUT_S = 60
# pip builds the project and installs its dependencies (OpenCV, numpy, tesserocr wheels).
VENV_TIMEOUT_S = 600

WOULD_RUN = "edgemeter: would run: "
LOG_HINT = "journalctl -u edgemeter -f"


def run_install(*args: str, timeout: float = QUICK_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """The script run by a user who is not root (as `nobody` when the tests run as root).

    Nobody may read the checkout or pytest's temp directory (both can be 0700 under
    /root or /tmp/pytest-of-root), so the script runs from a world-readable copy; the
    checks exercised here come before it looks at the rest of the checkout.
    """
    if os.geteuid() != 0:
        return run_install(*args)
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        copy = Path(directory) / "scripts" / "install.sh"
        copy.parent.mkdir(mode=0o755)
        shutil.copy(SCRIPT, copy)
        return subprocess.run(
            ["runuser", "-u", "nobody", "--", "bash", str(copy), *args],
            capture_output=True,
            text=True,
            timeout=QUICK_TIMEOUT_S,
            check=False,
            cwd=directory,
        )


def would_run(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The commands the script printed instead of running."""
    return [
        line.removeprefix(WOULD_RUN)
        for line in result.stdout.splitlines()
        if line.startswith(WOULD_RUN)
    ]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every path under directory, with the content of each file."""
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in sorted(directory.rglob("*"))
    }


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    # A space in the path: every path in the script must be quoted.
    return tmp_path / "fake root"


@pytest.fixture
def installed(prefix: Path) -> subprocess.CompletedProcess[str]:
    """A quick install (no venv) under the prefix."""
    return ok(run_install("--prefix", str(prefix), "--no-venv"))


# --- the script itself ----------------------------------------------------------------


@pytest.mark.parametrize("script", [SCRIPT, SMOKE_SCRIPT], ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [SCRIPT, SMOKE_SCRIPT], ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail(
            "shellcheck not found: `apt-get install shellcheck` (CI installs it); "
            f"{script.relative_to(ROOT)} cannot be checked without it"
        )
    result = subprocess.run(
        [shellcheck, str(script)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_lists_every_option() -> None:
    result = ok(run_install("--help"))
    for option in ("--uninstall", "--prefix DIR", "--no-venv", "--dry-run"):
        assert option in result.stdout


def test_unknown_option_is_a_usage_error() -> None:
    result = run_install("--prefx", "/tmp/x")
    assert result.returncode == 2
    assert "unknown option --prefx" in result.stderr


def test_real_install_without_root_says_run_with_sudo() -> None:
    result = run_unprivileged()
    assert result.returncode == 1
    assert "run with sudo" in result.stderr


def test_no_venv_is_refused_for_a_real_install() -> None:
    result = run_unprivileged("--no-venv")
    assert result.returncode == 1
    assert "--no-venv only with --prefix or --dry-run" in result.stderr


# --- install under a prefix -----------------------------------------------------------


def test_install_creates_config_from_the_example(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    config = prefix / "etc" / "edgemeter" / "config.yaml"
    assert config.read_bytes() == EXAMPLE_CONFIG.read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640


def test_install_copies_the_unit(prefix: Path, installed: subprocess.CompletedProcess[str]) -> None:
    unit = prefix / "etc" / "systemd" / "system" / "edgemeter.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644


def test_install_creates_the_state_directory(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    state = prefix / "var" / "lib" / "edgemeter"
    assert state.is_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o750


def test_install_prints_the_system_steps_it_would_run(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    commands = would_run(installed)
    apt = [c for c in commands if c.startswith("apt-get install ")]
    assert len(apt) == 1
    assert {"tesseract-ocr", "python3-venv", "python3-pip"} <= set(apt[0].split())
    assert "mosquitto" not in apt[0]
    useradd = [c for c in commands if c.startswith("useradd ")]
    assert len(useradd) == 1
    assert "--groups video" in useradd[0]
    assert "--home-dir /var/lib/edgemeter" in useradd[0]
    assert useradd[0].endswith(" edgemeter")
    assert any(c.startswith("chown root:edgemeter ") for c in commands)
    assert "systemctl daemon-reload" in commands
    assert "systemctl enable edgemeter.service" in commands
    assert "systemctl start edgemeter.service" in commands


def test_install_ends_with_the_log_and_config_hints(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    last = installed.stdout.splitlines()[-1]
    assert LOG_HINT in last
    assert f"edgemeter check-config {prefix}/etc/edgemeter/config.yaml" in last
    assert "apt-get install mosquitto" in installed.stdout


def test_install_twice_is_fine(prefix: Path, installed: subprocess.CompletedProcess[str]) -> None:
    before = tree(prefix)
    again = ok(run_install("--prefix", str(prefix), "--no-venv"))
    assert "keeping the existing" in again.stdout
    assert tree(prefix) == before


def test_install_never_overwrites_an_edited_config(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    config = prefix / "etc" / "edgemeter" / "config.yaml"
    edited = EXAMPLE_CONFIG.read_text().replace("192.0.2.20", "broker.example")
    config.write_text(edited)
    ok(run_install("--prefix", str(prefix), "--no-venv"))
    assert config.read_text() == edited


# --- uninstall ------------------------------------------------------------------------


def test_uninstall_removes_unit_and_venv_and_keeps_config_and_state(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    # Stands for the venv the --no-venv install left out: uninstall removes the directory.
    venv_python = prefix / "opt" / "edgemeter" / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    state_file = prefix / "var" / "lib" / "edgemeter" / "state.json"
    state_file.write_text('{"value": 12345}')

    result = ok(run_install("--uninstall", "--prefix", str(prefix)))

    assert not (prefix / "etc" / "systemd" / "system" / "edgemeter.service").exists()
    assert not (prefix / "opt" / "edgemeter").exists()
    config = prefix / "etc" / "edgemeter" / "config.yaml"
    assert config.read_bytes() == EXAMPLE_CONFIG.read_bytes()
    assert state_file.read_text() == '{"value": 12345}'
    assert "systemctl disable --now edgemeter.service" in would_run(result)
    assert "Kept" in result.stdout


def test_uninstall_twice_is_fine(prefix: Path, installed: subprocess.CompletedProcess[str]) -> None:
    ok(run_install("--uninstall", "--prefix", str(prefix)))
    again = ok(run_install("--uninstall", "--prefix", str(prefix)))
    assert "no unit at" in again.stdout


# --- dry run --------------------------------------------------------------------------


def test_dry_run_changes_nothing(prefix: Path) -> None:
    prefix.mkdir()
    result = ok(run_install("--dry-run", "--prefix", str(prefix)))
    assert list(prefix.iterdir()) == []
    commands = would_run(result)
    assert any(c.startswith("install -m 0640 ") for c in commands)
    assert any(" -m venv " in c for c in commands)
    assert "systemctl enable edgemeter.service" in commands
    assert "systemctl start edgemeter.service" in commands


def test_dry_run_uninstall_changes_nothing(
    prefix: Path, installed: subprocess.CompletedProcess[str]
) -> None:
    before = tree(prefix)
    result = ok(run_install("--dry-run", "--uninstall", "--prefix", str(prefix)))
    assert tree(prefix) == before
    assert any(c.startswith("rm -f ") for c in would_run(result))


# --- the real venv --------------------------------------------------------------------


@pytest.mark.slow
def test_install_builds_a_venv_that_runs_edgemeter(prefix: Path) -> None:
    ok(run_install("--prefix", str(prefix), timeout=VENV_TIMEOUT_S))
    venv = prefix / "opt" / "edgemeter" / "venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()

    version = subprocess.run(
        [str(venv / "bin" / "edgemeter"), "--version"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("edgemeter ")
