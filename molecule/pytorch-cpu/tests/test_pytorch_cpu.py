"""A web host's PyTorch: the CPU build, no CUDA wheels, a venv of a sensible size, a truthful fact."""

import json

VENV = "/opt/nnp/venv"
CUDA_PREFIXES = ("nvidia-", "cuda-")


def fact(host):
    return json.loads(host.file("/etc/ansible/facts.d/pytorch.fact").content_string)


def test_cpu_build_imports_as_app_account(host):
    code = (
        "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda, float(torch.ones(2, 2).sum())]))"
    )
    out = host.run(f"runuser -u nnp -- {VENV}/bin/python -c '{code}'")
    assert out.rc == 0, out.stderr
    version, cuda, total = json.loads(out.stdout)
    assert version == "2.13.0+cpu"
    assert cuda is None
    assert total == 4.0


def test_no_cuda_wheels_in_venv(host):
    out = host.check_output(f"{VENV}/bin/python -m pip list --format=json --disable-pip-version-check")
    names = {p["name"].lower().replace("_", "-") for p in json.loads(out)}
    assert "torch" in names
    cuda = sorted(n for n in names if n.startswith(CUDA_PREFIXES) or n == "triton")
    assert cuda == [], f"CPU host got CUDA wheels: {cuda}"


def test_venv_size_is_cpu_sized(host):
    size_mb = int(host.check_output(f"du -sm {VENV}").split()[0])
    print(f"venv size: {size_mb} MB")
    # 2.13.0+cpu is about 0.9 GB; a CUDA build is about 5.5 GB.
    assert size_mb < 1500, f"{VENV} is {size_mb} MB"


def test_venv_owned_by_app_account(host):
    assert host.file(VENV).user == "nnp"
    assert host.file(f"{VENV}/lib/python3.11/site-packages/torch").user == "nnp"


def test_fact_records_the_verified_build(host):
    data = fact(host)
    assert data["variant"] == "cpu"
    assert data["requirement"] == "torch==2.13.0+cpu"
    assert data["torch_version"] == "2.13.0+cpu"
    assert data["cuda_version"] is None
    assert data["cuda_available"] is False
    assert data["cuda_wheels"] == 0
    assert data["venv"] == VENV
    assert data["nvidia_driver"]["managed"] is False
    assert data["nvidia_driver"]["reason"] == "not needed: cpu variant"


def test_no_nvidia_driver_or_nouveau_changes(host):
    assert host.run("dpkg-query -W 'nvidia-*'").rc != 0
    assert not host.file("/etc/modprobe.d/blacklist-nouveau.conf").exists
