"""One Molecule base, really shared: the platform recipe lives in .config/molecule/config.yml only.

Molecule replaces lists instead of merging them, so a scenario that states `platforms` drops the base's
recipe (mounts, the privileged switch GitHub's runners need, the cgroup mount): the GitHub matrix could
not pass. Each scenario states only what differs (host vars, ports, extra playbooks); the site scenario's
hosts are the local inventory's, so it states an empty list and nothing else of a platform.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / ".config" / "molecule" / "config.yml"
SCENARIOS = sorted(path.parent for path in (REPO / "molecule").glob("*/molecule.yml"))
# What a scenario may restate of the base's platform: nothing. The site scenario's hosts are created by
# its converge (make up), so it has no Molecule platform at all.
NO_PLATFORM = {"site"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def test_the_base_holds_the_whole_platform_recipe() -> None:
    base = load(BASE)
    (platform,) = base["platforms"]

    assert platform["name"] == "${MOLECULE_SCENARIO_NAME}-instance"
    assert platform["image"].startswith("${MOLECULE_IMAGE:-")
    assert platform["privileged"] == "${MOLECULE_PRIVILEGED:-false}"
    assert platform["volumes"][0] == "${MOLECULE_CGROUP_MOUNT:-/sys/fs/cgroup:/sys/fs/cgroup:ro}"
    # The package sources and the CA bundle are read-only in every scenario.
    assert all(volume.endswith(":ro") for volume in platform["volumes"][1:]), platform["volumes"]
    assert (platform["command"], platform["override_command"]) == ("/lib/systemd/systemd", True)
    assert platform["network_mode"] == "host"
    assert base["verifier"]["name"] == "testinfra"
    assert base["scenario"]["test_sequence"][-1] == "destroy"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda path: path.name)
def test_no_scenario_restates_the_platform(scenario: Path) -> None:
    config = load(scenario / "molecule.yml")

    if scenario.name in NO_PLATFORM:
        # Molecule's default driver, managed by the scenario's own create/destroy playbooks.
        assert config.get("platforms") == [], f"{scenario.name}: its hosts come from its converge"
        assert config["driver"]["name"] == "default"
        return
    assert "platforms" not in config, (
        f"molecule/{scenario.name}/molecule.yml restates the platform: Molecule would replace the base's "
        f"recipe ({BASE.relative_to(REPO)}) with it. State only host vars, ports and playbooks."
    )
    for key in ("driver", "dependency"):
        assert key not in config, f"{scenario.name} restates the base's {key}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda path: path.name)
def test_every_playbook_a_scenario_names_exists(scenario: Path) -> None:
    base_playbooks = load(BASE)["provisioner"].get("playbooks", {})
    playbooks = {**base_playbooks, **load(scenario / "molecule.yml").get("provisioner", {}).get("playbooks", {})}
    for step, relative in playbooks.items():
        assert (scenario / relative).is_file(), f"{scenario.name}: {step} playbook {relative} does not exist"


def test_no_two_scenarios_carry_the_same_playbook() -> None:
    """A playbook two scenarios need lives once in molecule/resources/ (e.g. the pytorch converge)."""
    seen: dict[str, Path] = {}
    for path in sorted((REPO / "molecule").glob("*/*.yml")):
        if path.name == "molecule.yml" or path.parent.name == "resources":
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest not in seen, f"{path.relative_to(REPO)} repeats {seen[digest].relative_to(REPO)}"
        seen[digest] = path


def test_every_scenario_runs_its_instance_through_mitogen() -> None:
    """The scenarios run roles the way production does: Mitogen's strategy, on a connection it takes over.

    Molecule writes its own ansible.cfg, so the project's strategy is named in the base's env. Mitogen
    replaces only the connections it lists by their short names: the Docker driver's
    `community.docker.docker` would run every task the old way (a new Python per task). The driver's own
    create and destroy playbooks use `async`, which hangs under Mitogen's local connection, so localhost
    keeps Ansible's own; the site scenario, which has no such playbook, gives it back to Mitogen.
    """
    from ansible_mitogen.strategy import REDIRECTED_CONNECTION_PLUGINS

    provisioner = load(BASE)["provisioner"]
    assert provisioner["env"]["ANSIBLE_STRATEGY"] == "mitogen_linear"
    strategy_dir = provisioner["env"]["ANSIBLE_STRATEGY_PLUGINS"].replace("${MOLECULE_PROJECT_DIRECTORY}", str(REPO))
    assert (Path(strategy_dir) / "mitogen_linear.py").is_file(), strategy_dir
    host_vars = provisioner["inventory"]["host_vars"]
    assert host_vars["${MOLECULE_SCENARIO_NAME}-instance"]["ansible_connection"] in REDIRECTED_CONNECTION_PLUGINS
    assert host_vars["localhost"]["ansible_connection"] not in REDIRECTED_CONNECTION_PLUGINS

    site = load(REPO / "molecule" / "site" / "molecule.yml")["provisioner"]
    assert site["inventory"]["host_vars"]["localhost"]["ansible_connection"] in REDIRECTED_CONNECTION_PLUGINS
