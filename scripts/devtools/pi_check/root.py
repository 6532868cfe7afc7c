"""The emulated Raspberry Pi OS root: the tools it needs, and building it once into a cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import (CPUS, DEBIAN, GLIBC, HERE, KEYRING, PACKAGES, REPO, REQUIREMENTS, ROOT_FORMAT, SOURCES, Fatal,
                     Log, _first, say)

# ---------------------------------------------------------------------------------------------- tools

def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def find_tools(args) -> dict[str, str]:
    """Every tool the run needs, or a Fatal naming the first one missing (and how to get it)."""
    tools = {}
    qemu = shutil.which("qemu-aarch64-static")
    may_install = args.install_tools or (_truthy("CI") and os.geteuid() == 0)
    if qemu is None and may_install and shutil.which("apt-get"):
        say("installing qemu-user-static (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user-static"]):
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            if p.returncode != 0:
                raise Fatal(f"installing qemu-user-static failed: {_first(p.stdout, r'E: ')}")
        qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        hint = "rerun with --install-tools (as root)" if not may_install else "apt-get is not available either"
        raise Fatal(f"qemu-aarch64-static not found: apt-get install qemu-user-static, or {hint}")
    tools["qemu"] = qemu
    if args.tests:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise Fatal("unshare not found (util-linux): the device tests need it; install it or pass --no-tests")
        tools["unshare"] = unshare
    py = args.python
    for cmd, need in (([py, "-m", "pip", "--version"], "pip"),
                      ([py, "-c", "import ai_edge_litert, numpy, cv2, click"],
                       "ai-edge-litert, numpy, opencv and click for the x86 reference run")):
        try:
            ok = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        except OSError:
            ok = False
        if not ok:
            raise Fatal(f"{py} lacks {need}: run pi-check with the project's Python "
                        f"(e.g. .venv/bin/python scripts/pi-check) or pass --python")
    return tools


def build_tools(tools: dict[str, str]) -> None:
    """What building the root needs besides qemu (a cached root needs none of it)."""
    for tool, why in (("apt-get", "fetches the arm64 Debian packages"), ("dpkg-deb", "unpacks them")):
        path = shutil.which(tool)
        if path is None:
            raise Fatal(f"{tool} not found: it {why} for the root; pi-check needs a Debian or Ubuntu host to build it")
        tools[tool] = path
    if not KEYRING.exists():
        raise Fatal(f"{KEYRING} not found: apt-get install debian-archive-keyring")


def default_python() -> str:
    """This interpreter if it has the device dependencies, else the repo's .venv, else this one."""
    here = sys.executable
    if subprocess.run([here, "-c", "import ai_edge_litert, cv2"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return here
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else here


# ---------------------------------------------------------------------------------------------- the root


def root_key() -> str:
    """A built root is reused while everything that goes into it stays the same."""
    h = hashlib.sha256()
    for part in (str(ROOT_FORMAT), DEBIAN, *SOURCES, *PACKAGES, str(GLIBC), REQUIREMENTS.read_text(),
                 *((HERE / f"cpuinfo-{m}").read_text() for m in sorted(CPUS))):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def _apt(base: Path) -> list[str]:
    """apt-get options for a private arm64 apt: own lists, status, cache and sources; the host's apt is untouched."""
    state, cache, etc = base / "state", base / "cache", base / "etc"
    for d in (state / "lists" / "partial", cache / "archives" / "partial", base / "debs" / "partial",
              etc / "sources.list.d", etc / "preferences.d"):
        d.mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    (etc / "sources.list").write_text("".join(f"deb [arch=arm64 signed-by={KEYRING}] {s}\n" for s in SOURCES))
    opts = {"APT::Architecture": "arm64", "APT::Architectures": "arm64", "Dir::State": state,
            "Dir::State::Lists": state / "lists", "Dir::State::status": state / "status", "Dir::Cache": cache,
            "Dir::Cache::archives": base / "debs", "Dir::Etc::SourceList": etc / "sources.list",
            "Dir::Etc::SourceParts": etc / "sources.list.d", "Dir::Etc::Preferences": etc / "preferences",
            "Dir::Etc::PreferencesParts": etc / "preferences.d", "Debug::NoLocking": "1",
            "Acquire::Languages": "none", "APT::Install-Recommends": "0", "APT::Get::Assume-Yes": "1",
            "Acquire::Retries": "3", "APT::Sandbox::User": "root"}
    return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]


def build_root(dest: Path, tools: dict[str, str], python: str, log: Log) -> dict:
    """Fill ``dest`` (an empty folder) with sysroot/, site/, views/<model>/ and manifest.json."""
    t0 = time.monotonic()
    dl = dest / "download"
    apt = [tools["apt-get"], "-q", *_apt(dl)]
    say(f"fetching Debian {DEBIAN} arm64 {' '.join(PACKAGES)} and their libraries")
    # apt-get update exits 0 when an index could not be fetched; any such line is a failure here
    log.run([*apt, "update"], "downloading the arm64 package lists", (r"W: Failed to fetch", r"E: ", r"Err:"),
            fail_on=r"^(W: Failed to fetch|E: |Err:)")
    log.run([*apt, "install", "--download-only", *PACKAGES], "downloading the arm64 packages",
            (r"E: ", r"Err:"))
    debs = sorted((dl / "debs").glob("*.deb"))
    if not debs:
        raise Fatal(f"downloading the arm64 packages gave no .deb files (details: {log.path})")
    sysroot = dest / "sysroot"
    sysroot.mkdir()
    for deb in debs:
        log.run([tools["dpkg-deb"], "-x", deb, sysroot], f"unpacking {deb.name}")
    packages = sorted(deb.name.rsplit(".", 1)[0] for deb in debs)
    python311 = sysroot / "usr" / "bin" / "python3.11"
    if not python311.exists():
        raise Fatal(f"the unpacked packages hold no usr/bin/python3.11 (details: {log.path})")
    shutil.rmtree(dl)

    say("installing the aarch64 wheels (pip --platform manylinux_*_aarch64)")
    platforms = [x for v in range(GLIBC, 16, -1) for x in ("--platform", f"manylinux_2_{v}_aarch64")]
    site = dest / "site"
    log.run([python, "-m", "pip", "install", "--target", site, "--only-binary=:all:", "--python-version", "3.11",
             "--implementation", "cp", "--abi", "cp311", *platforms, "--platform", "manylinux2014_aarch64",
             "--no-compile", "--no-warn-script-location", "--disable-pip-version-check", "--no-input",
             "--progress-bar", "off", "-r", REQUIREMENTS],
            "installing the aarch64 wheels", (r"ERROR: ",))
    wheels = sorted(p.name[: -len(".dist-info")] for p in site.glob("*.dist-info"))
    heavy = [p.name for p in site.iterdir() if p.name.split("-")[0].lower() in ("tensorflow", "keras", "torch")]
    if heavy:
        raise Fatal(f"the device dependencies pulled in {', '.join(heavy)}: check {REQUIREMENTS.name}")

    # One view per CPU model: the same root, with the board's /proc/cpuinfo (qemu looks paths up in
    # QEMU_LD_PREFIX first). LiteRT's CPU detection reads it, and crashes on an x86 one.
    for model in CPUS:
        view = dest / "views" / model
        (view / "proc").mkdir(parents=True)
        for entry in sysroot.iterdir():
            (view / entry.name).symlink_to(Path("..", "..", "sysroot", entry.name))
        shutil.copyfile(HERE / f"cpuinfo-{model}", view / "proc" / "cpuinfo")
    (dest / "pycache").mkdir()
    manifest = {"format": ROOT_FORMAT, "debian": DEBIAN, "packages": packages, "wheels": wheels,
                "build_seconds": round(time.monotonic() - t0, 1), "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def ensure_root(cache: Path, tools: dict[str, str], python: str, rebuild: bool) -> tuple[Path, dict, bool]:
    """The built root for the current key: reused, or built into a temporary folder and renamed into place,
    so an interrupted or failed build leaves nothing a rerun could mistake for a root. Call with the lock held."""
    key = root_key()
    final = cache / key
    for stale in cache.glob(".build-*"):  # left by a run that was killed; we hold the lock, so none is live
        shutil.rmtree(stale, ignore_errors=True)
    if rebuild and final.exists():
        shutil.rmtree(final)
    if (final / "manifest.json").exists():
        return final, json.loads((final / "manifest.json").read_text()), False
    if final.exists():  # no manifest: not ours to trust
        shutil.rmtree(final)
    build_tools(tools)
    say(f"building the aarch64 root in {final} (once; about 15 to 30 s and 280 MB)")
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
    try:
        manifest = build_root(tmp, tools, python, Log(cache / "build.log"))
        manifest["bytes"] = du(tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in cache.iterdir():  # roots built for other keys are outdated; nothing else is touched
        if old.name != key and re.fullmatch(r"[0-9a-f]{12}", old.name) and (old / "manifest.json").exists():
            shutil.rmtree(old, ignore_errors=True)
    return final, manifest, True
