"""A GPU host's PyTorch in a container: the CUDA build, the driver step skipped for the container, a truthful fact."""

import json

VENV = "/opt/nnp/venv"


def fact(host):
    return json.loads(host.file("/etc/ansible/facts.d/pytorch.fact").content_string)


def test_cuda_build_imports_as_app_account(host):
    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda, torch.cuda.is_available()]))"
    out = host.run(f"runuser -u nnp -- {VENV}/bin/python -c '{code}'")
    assert out.rc == 0, out.stderr
    version, cuda, available = json.loads(out.stdout)
    assert version.split("+")[0] == fact(host)["requirement"].removeprefix("torch==").split("+")[0]
    assert cuda, "torch.version.cuda is empty: a CPU build was installed"
    # No GPU in the test container: the build is right, the device is absent.
    assert available is False


def test_cuda_wheels_present(host):
    out = host.check_output(f"{VENV}/bin/python -m pip list --format=json --disable-pip-version-check")
    names = {p["name"].lower().replace("_", "-") for p in json.loads(out)}
    assert "torch" in names
    assert any(n.startswith("nvidia-") for n in names)


def test_venv_size(host):
    size_mb = int(host.check_output(f"du -sm {VENV}").split()[0])
    print(f"venv size: {size_mb} MB")
    assert size_mb > 2000, f"{VENV} is only {size_mb} MB: no CUDA libraries?"


def test_fact_records_build_and_container_skip(host):
    data = fact(host)
    assert data["variant"] == "cuda"
    assert data["cuda_version"]
    assert data["cuda_available"] is False
    assert data["device_count"] == 0
    assert data["cuda_wheels"] > 0
    assert data["in_container"] is True
    driver = data["nvidia_driver"]
    assert driver["managed"] is False
    assert driver["reason"].startswith("skipped: running in a container (docker)")
    assert driver["packages"] == []


def test_driver_not_installed_in_container(host):
    # The role planned no driver install here: no apt package, no headers, no nouveau blacklist.
    assert host.run("dpkg-query -W 'nvidia-*'").rc != 0
    assert host.run("dpkg-query -W 'linux-headers-*'").rc != 0
    assert not host.file("/etc/modprobe.d/blacklist-nouveau.conf").exists
