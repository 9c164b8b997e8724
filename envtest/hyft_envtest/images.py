"""Build the operator and trainer images with the local Docker engine (`make images`).

    python -m hyft_envtest.images [operator|trainer ...]

Both images build FROM debian:bookworm-slim. Where no registry is reachable (this
project's CI machines), that base is made from Debian's packages (debootstrap
--variant=minbase bookworm, then `docker import`): the same release with the same
packages, tagged locally. Where no Docker engine answers but `dockerd` is installed
and we are root (a machine without an init system), one is started for the build
and stopped afterwards. Builds use host networking (no bridge network needed). A
rebuild removes the image it replaced, so the store keeps one copy of each.
"""
from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("operator", "trainer")
BASE_IMAGE = "debian:bookworm-slim"
PIP_CA = ROOT / "docker" / "pip-ca" / "build.crt"


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def tag(name: str) -> str:
    return f"hyft-{name}:{version()}"


def docker(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_engine() -> Iterator[None]:
    """A Docker engine for the duration: the running one, or one started here and stopped after."""
    if engine_answers():
        yield
        return
    if not shutil.which("dockerd") or os.geteuid() != 0:
        raise SystemExit("no Docker engine answers: start one (or install docker.io and run this as root)")
    run_dir = Path(tempfile.mkdtemp(prefix="hyft-dockerd-"))
    log = open(run_dir / "dockerd.log", "wb")
    # No bridge network and no iptables: builds use the host's network.
    dockerd = subprocess.Popen(["dockerd", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                                "--bridge=none", "--pidfile", str(run_dir / "dockerd.pid"),
                                "--exec-root", str(run_dir / "exec")], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            if dockerd.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not start:\n{(run_dir / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        dockerd.terminate()
        try:
            dockerd.wait(60)
        except subprocess.TimeoutExpired:
            dockerd.kill()
            dockerd.wait(10)
        log.close()
        unmount_under(run_dir)  # dockerd leaves its default network namespace mounted in its exec root
        shutil.rmtree(run_dir, ignore_errors=True)


def unmount_under(folder: Path) -> None:
    """Unmount every mount point inside folder, deepest first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    inside = [m for m in points if m.startswith(f"{folder}/")]
    for point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources)."""
    for path in [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")), Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                uris = words[1:] if line.startswith("URIs:") else words[1:2] if line.startswith("deb ") else []
                for uri in uris:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
    return "http://deb.debian.org/debian"


def ensure_base_image() -> None:
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    if docker("pull", BASE_IMAGE, check=False, timeout=300).returncode == 0:
        return
    print(f"{BASE_IMAGE}: no registry answers; making it from Debian's packages", flush=True)
    rootfs = Path(tempfile.mkdtemp(prefix="hyft-bookworm-"))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
                       check=True, capture_output=True, timeout=1200)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-c", 'CMD ["bash"]', "-", BASE_IMAGE, stdin=tar.stdout)
        tar.wait()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def pip_ca_bundle() -> Path | None:
    """The CA bundle pip trusts here (a TLS-intercepting proxy's), if it is configured."""
    configured = os.environ.get("PIP_CERT")
    if not configured:
        parser = configparser.ConfigParser()
        parser.read(["/etc/pip.conf", Path.home() / ".config" / "pip" / "pip.conf"])
        configured = parser.get("global", "cert", fallback=None)
    return Path(configured) if configured and Path(configured).is_file() else None


def image_id(reference: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", reference, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build(name: str) -> str:
    """docker build one image; returns its tag. The build stage is tagged too
    (<tag>-build, a local cache that holds the build-only pip CA: never push it), so that
    its layers stay cached, and a rebuild removes exactly the images it replaced."""
    reference = tag(name)
    stages = {f"{reference}-build": ["--target", "build"], reference: []}
    replaced = {ref: image_id(ref) for ref in stages}
    bundle = pip_ca_bundle()
    if bundle:
        shutil.copyfile(bundle, PIP_CA)  # read by the build stages only (docker/pip-ca/README.md)
    try:
        for ref, target in stages.items():
            docker("build", "--network", "host", *target, "-f", str(ROOT / "docker" / f"{name}.Dockerfile"),
                   "-t", ref, str(ROOT), timeout=3600)
    finally:
        PIP_CA.unlink(missing_ok=True)
    for ref, old in replaced.items():
        if old and old != image_id(ref):
            docker("rmi", old, check=False)  # the store keeps one copy
    return reference


def build_all(names: tuple[str, ...] = IMAGES) -> dict[str, str]:
    ensure_base_image()
    built = {}
    for name in names:
        started = time.monotonic()
        built[name] = build(name)
        size = docker("image", "inspect", "--format", "{{.Size}}", built[name]).stdout.strip()
        print(f"{built[name]}: {int(size) / 2**30:.2f} GiB, {time.monotonic() - started:.0f}s", flush=True)
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="|".join(IMAGES), help="which images (default: both)")
    args = parser.parse_args(argv)
    if unknown := set(args.names) - set(IMAGES):
        parser.error(f"no such image: {', '.join(sorted(unknown))}")
    try:
        with docker_engine():
            build_all(tuple(args.names) or IMAGES)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
