"""deploy/systemd/drift-monitor.service: hardened, reloadable, restarted on failure."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.conftest import DEPLOY_DIR

UNIT = DEPLOY_DIR / "systemd" / "drift-monitor.service"


def directives() -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values in order; systemd allows a key more than once."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key), []).append(value)
    return out


def service(key: str) -> str:
    values = directives().get(("Service", key))
    assert values, f"[Service] has no {key}="
    return values[-1]


def test_runs_the_daemon_with_the_config_and_reloads_with_sighup():
    assert service("ExecStart").endswith(
        "drift-monitor run --config /etc/drift-monitor/config.yaml")
    assert service("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert service("Restart") == "on-failure"


def test_execstart_is_the_venv_the_recipe_makes_outside_the_hidden_home():
    program = service("ExecStart").split()[0]
    venv = program.removesuffix("/bin/drift-monitor")
    assert venv != program, program
    # ProtectHome=yes hides these from the service: a venv there could not start.
    assert service("ProtectHome") == "yes"
    assert not venv.startswith(("/home", "/root", "/run/user")), venv
    recipe = f"python3 -m venv {venv} && {venv}/bin/pip install ."
    assert recipe in UNIT.read_text(encoding="utf-8")
    assert recipe in (DEPLOY_DIR / "README.md").read_text(encoding="utf-8")


def test_state_is_a_state_directory_of_a_dynamic_user():
    assert service("DynamicUser") == "yes"
    assert service("StateDirectory") == "drift-monitor"


def test_file_system_is_read_only_except_the_state_directory():
    assert service("ProtectSystem") == "strict"
    assert service("ProtectHome") == "yes"
    assert service("PrivateTmp") == "yes"
    read_only = service("ReadOnlyPaths").split()
    assert any(path.lstrip("-").startswith("/var/log/") for path in read_only)
    assert ("Service", "ReadWritePaths") not in directives()


def test_privileges_are_dropped():
    assert service("NoNewPrivileges") == "yes"
    assert service("CapabilityBoundingSet") == ""
    assert set(service("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    filters = directives()[("Service", "SystemCallFilter")]
    assert "@system-service" in filters


def test_install_section_enables_it_at_boot():
    assert directives()[("Install", "WantedBy")] == ["multi-user.target"]


def test_systemd_accepts_every_directive(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found: the directives are checked where it is installed")
    # verify insists that ExecStart's program exists; the daemon is not installed at
    # /usr/local/bin here, so the copy starts /bin/true instead and keeps every other line.
    text = UNIT.read_text(encoding="utf-8")
    program = service("ExecStart").split()[0]
    copy = tmp_path / "drift-monitor.service"
    copy.write_text(text.replace(f"ExecStart={program}", "ExecStart=/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
