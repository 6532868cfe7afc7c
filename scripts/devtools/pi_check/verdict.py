"""The verdict: what was checked, on which stack, and how far each CPU model is from x86."""

from __future__ import annotations

from .common import DEBIAN, REQUIREMENTS

def _wheels(names: list[str]) -> str:
    wanted = [line.split("==")[0].strip().lower().replace("-", "_") for line in REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    got = {n.rsplit("-", 1)[0].lower(): n.rsplit("-", 1)[1] for n in names}
    return ", ".join(f"{w.replace('_', '-')} {got[w]}" for w in wanted if w in got)


def verdict(res: dict, args) -> str:
    python_pkg = next((p for p in res["packages"] if p.startswith("python3.11_")), "python3.11")
    size = f", {res['root_bytes'] / 1e6:.0f} MB" if res.get("root_bytes") else ""
    how = f"built now in {res['setup_seconds']:.0f} s" if res["built_now"] else "cached"
    lines = [
        f"pi-check: edge-fer on the Raspberry Pi OS software stack under {res['qemu']}",
        f"  root    Debian {DEBIAN} arm64: python3.11 {python_pkg.split('_')[1]} and {len(res['packages']) - 1} "
        f"more packages; aarch64 wheels {_wheels(res['wheels'])} ({how}: {res['root']}{size})",
        f"  x86     Python {res['x86']['python']}, ai-edge-litert {res['x86']['versions'].get('ai-edge-litert')}, "
        f"numpy {res['x86']['versions'].get('numpy')}, opencv {res['x86']['versions'].get('opencv-python-headless')}",
        f"  inputs  {res['faces_source']}; photos {', '.join(res['photos'])}; video {res['video']}",
    ]
    for model, m in res["models"].items():
        py = f", Python {m['python']}" if m.get("python") else ""
        lines.append(f"  {m['board']} ({m['cpu']}{py})")
        for name, st in m["steps"].items():
            text = st.get("detail", "") if st["ok"] else st["error"] + (f" [{st['detail']}]" if st.get("detail") else "")
            lines.append(f"    {'ok  ' if st['ok'] else 'FAIL'}  {name:<8} {text}")
    summary = []
    for model, m in res["models"].items():
        raw = m.get("raw") or {}
        out, before = raw.get("output") or {}, raw.get("before_final") or {}
        if "max" in out:
            unit = " LSB" if out.get("int") else ""
            text = f"{m['board'].replace('Raspberry ', '')} {out['max']:g}{unit}"
            if "max" in before:
                text += f" ({before['max']:g}{unit} before the final {raw['final_op']})"
            summary.append(text)
    if summary:
        faces = next((m["raw"]["faces"] for m in res["models"].values() if m.get("raw")), 0)
        lines.append(f"  largest difference from x86 in the model's raw outputs on {faces} faces: {'; '.join(summary)}")
    n = sum(len(m["steps"]) for m in res["models"].values())
    failed = sum(1 for m in res["models"].values() for s in m["steps"].values() if not s["ok"])
    lines.append(f"verdict: {'PASS' if res['ok'] else 'FAIL'} ({n - failed} of {n} checks passed, "
                 f"{res['seconds']:.0f} s; emulated, so no timing here says anything about a Pi's speed)")
    return "\n".join(lines)
