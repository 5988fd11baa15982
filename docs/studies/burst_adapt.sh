#!/usr/bin/env bash
# Adapting the built-in model from burst pairs, against adapting it from the true pairs of the same scenes.
#
# A camera the built-in model has never seen (drawn from the simulator's population with another seed, renamed
# MyCam) shoots FRAMES-frame bursts of the train/ scenes. "true" pairs each frame with the simulator's own clean
# image; "burst" pairs it with the mean of the other frames (nmflowgan burst-pairs). Both adapt the built-in model
# the same way and are scored on the same test pairs of that camera.
#
#     FRAMES=8 bash docs/studies/burst_adapt.sh /tmp/burst-adapt 0
set -euo pipefail
WORK=${1:?usage: burst_adapt.sh WORK_FOLDER [SEED]}
SEED=${2:-0}
FRAMES=${FRAMES:-8}
mkdir -p "$WORK"
[ -d "$WORK/sim" ] || nmflowgan simulate --out "$WORK/sim" --cameras --population 1 --seed 7 --isos 400 1600 \
    --scenes 8 --size 256 --burst "$FRAMES" --quiet
[ -d "$WORK/scored/test" ] || python - "$WORK" <<'PY'
import csv, os, sys
from pathlib import Path
work = Path(sys.argv[1])
def write(folder, pairs):  # (clean, noisy, iso, scene): files linked in, as a metadata.csv set may not point outside
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clean", "noisy", "camera", "iso", "scene"])
        for index, (clean, noisy, iso, scene) in enumerate(pairs):
            names = [f"{index:04d}-clean.png", f"{index:04d}-noisy.png"]
            for source, name in zip((clean, noisy), names):
                if not (folder / name).exists():
                    os.link(source, folder / name)
            writer.writerow([*names, "MyCam", iso, scene])
pairs = []
for burst in sorted((work / "sim" / "bursts").iterdir()):  # each frame with the simulator's clean image
    clean = next((work / "sim" / "train" / burst.name).glob("*_GT_SRGB_010.PNG"))
    pairs += [(clean, frame, int(burst.name.split("_")[3]), burst.name) for frame in sorted(burst.glob("*.png"))]
write(work / "true-pairs", pairs)
write(work / "scored" / "train", pairs)  # what evaluate fits its baselines on
pairs = []
for folder in sorted((work / "sim" / "test").iterdir()):
    clean, noisy = (next(folder.glob(f"*_{kind}_SRGB_010.PNG")) for kind in ("GT", "NOISY"))
    pairs.append((clean, noisy, int(folder.name.split("_")[3]), folder.name))
write(work / "scored" / "test", pairs)
PY
[ -d "$WORK/burst-pairs" ] || nmflowgan burst-pairs "$WORK/sim/bursts" --out "$WORK/burst-pairs" --camera MyCam --quiet
for kind in true burst; do
    [ -d "$WORK/adapt-$kind-s$SEED/last" ] || nmflowgan adapt --base builtin --data "$WORK/$kind-pairs" \
        --out "$WORK/adapt-$kind-s$SEED" --seed "$SEED" --device cpu --quiet
    [ -f "$WORK/eval-$kind-s$SEED/results.json" ] || nmflowgan evaluate --checkpoint "$WORK/adapt-$kind-s$SEED" \
        --data "$WORK/scored" --out "$WORK/eval-$kind-s$SEED" --device cpu --quiet > /dev/null
done
python - "$WORK" "$SEED" <<'PY'
import json, sys
work, seed = sys.argv[1], sys.argv[2]
for kind in ("true", "burst"):
    models = json.load(open(f"{work}/eval-{kind}-s{seed}/results.json"))["models"]
    print(kind, " ".join(f"{name} KLD {models[name]['kld']:.4f}" for name in ("nmflowgan", "flow-only", "nlf")))
PY
