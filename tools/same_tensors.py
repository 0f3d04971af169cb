"""Every trained tensor of the shipped configs, byte for byte against another git revision.

    python tools/same_tensors.py REV [--quick] [--new-set KEY=VALUE]...

Runs the same command lines with this checkout and with a worktree of REV (both on this
venv's Python and libraries), then compares every tensor in every *.safetensors file the
runs wrote, by key and by bytes. Prints one line per run and exits 1 on any difference.
A refactor that claims "behaviour unchanged" is held to this. --new-set adds `--set KEY=VALUE`
to this checkout's command lines only (a key REV does not know, switched on or off).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ["--set", "pretrain.epochs=20", "--set", "finetune.epochs=20"]


def command_lines(quick: bool) -> dict[str, list[str]]:
    """name -> lora arguments (the run folder is added)."""
    lines = {
        "posit-20+20": ["run", "configs/posit.yaml", *EPOCHS],
        "smoke": ["run", "configs/smoke.yaml"],
        "approx": ["approx"],
    }
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.stem not in ("posit", "smoke", "approx"):
            lines[path.stem] = ["run", f"configs/{path.name}"]
    lines["dora --dora"] = ["run", "configs/dora.yaml", "--dora"]
    if not quick:
        for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
            lines[f"sweep {path.stem}"] = ["sweep", f"configs/sweeps/{path.name}"]
    return lines


def run(tree: Path, args: list[str], folder: Path, sets: list[str] = ()) -> None:
    where = ["--run-dir", str(folder)] if args[0] != "sweep" else ["--run-dir", str(folder), "--no-plot"]
    where += [part for pair in sets for part in ("--set", pair)] if args[0] != "approx" else []
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "LORA_THREADS": "1", "HOME": str(folder.parent)}
    done = subprocess.run([sys.executable, "-m", "lora_cli", *args, *where], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: lora {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def digests(folder: Path) -> dict[str, str]:
    """'relative/file.safetensors:key' -> SHA-256 of the tensor's bytes (dtype and shape included)."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        if "checkpoints" in path.parts:
            continue
        for key, tensor in load_file(path).items():
            blob = f"{tensor.dtype}{tuple(tensor.shape)}".encode() + tensor.contiguous().numpy().tobytes()
            out[f"{path.relative_to(folder)}:{key}"] = hashlib.sha256(blob).hexdigest()
    return out


def main(rev: str, quick: bool, sets: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), rev], check=True, capture_output=True)
        try:
            differ = 0
            for name, args in command_lines(quick).items():
                if args[0] != "approx" and not (old / args[1]).exists():
                    print(f"skipped  {name}: {args[1]} is not in {rev}")
                    continue
                mine, theirs = Path(tmp) / "new" / name.replace(" ", "_"), Path(tmp) / "rev" / name.replace(" ", "_")
                run(ROOT, args, mine, sets)
                run(old, args, theirs)
                a, b = digests(mine), digests(theirs)
                same = [k for k in a if b.get(k) == a[k]]
                bad = sorted(set(a) ^ set(b) | {k for k in a if k in b and a[k] != b[k]})
                differ += bool(bad)
                print(f"{'same' if not bad else 'DIFFERENT'}  {name}: {len(same)} tensors identical" + (f"; differ: {', '.join(bad)}" if bad else ""))
            return 1 if differ else 0
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    rest = sys.argv[2:]
    raise SystemExit(main(sys.argv[1], "--quick" in rest, [rest[i + 1] for i, a in enumerate(rest) if a == "--new-set"]))
