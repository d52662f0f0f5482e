"""What the single-image protocols share: every image fitted by every method with `fieldlab fit`, each
fit's metrics.json (PSNR on the full image clamped to its range, parameters, steps, seconds) one row."""

from __future__ import annotations

import glob

import _protocol as P

SMOKE_IMAGES = "sample:camera"


def images(spec: str, what: str, where: str) -> list[str]:
    """A comma-separated list of files, globs and sample:NAME specs, each glob expanded in sorted order."""
    found = []
    for part in filter(None, spec.split(",")):
        if part.startswith("sample:"):
            found.append(part)
            continue
        P.require_path(part, what, where)
        found += sorted(glob.glob(part))
    return found


def name_of(image: str) -> str:
    return image.removeprefix("sample:").rsplit("/", 1)[-1].rsplit(".", 1)[0]


def fit_all(proto, args, paths: list[str], methods: dict[str, list], common: list) -> list[dict]:
    """Fit every image with every method (same `common` options: steps, batch, time, seed); one row each."""
    rows = []
    (proto.out / "fits").mkdir(exist_ok=True)
    for image in paths:
        for method, options in methods.items():
            out = proto.out / "fits" / f"{name_of(image)}-{method}"
            proto.fieldlab("fit", image, *options, *common, "--seed", args.seed, "--device", args.device,
                           "--out", out, "--force", "--quiet")
            metrics = P.read_json(out / "metrics.json")
            rows.append({"image": name_of(image), "method": method, "psnr_db": P.rounded(metrics["psnr"]),
                         "ssim": P.rounded(metrics.get("ssim", float("nan")), 4), "params": metrics["params"],
                         "steps": metrics["steps"], "seconds": P.rounded(metrics["seconds"]),
                         "device": P.device_name(args.device)})
    return rows


def mean_rows(rows: list[dict]) -> list[dict]:
    """A `mean` row per method (over the images), after the per-image rows."""
    means = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        means.append({**mine[0], "image": f"mean of {len(mine)}",
                      **{k: P.rounded(sum(r[k] for r in mine) / len(mine), 4 if k == "ssim" else 2)
                         for k in ("psnr_db", "ssim", "seconds")},
                      "steps": round(sum(r["steps"] for r in mine) / len(mine)),
                      "params": round(sum(r["params"] for r in mine) / len(mine))})
    return rows + means


COLUMNS = ["image", "method", "psnr_db", "ssim", "params", "steps", "seconds", "device"]


def plot(proto, rows, device, title) -> None:
    """PSNR per image, a bar per method."""
    plt = proto.figure()
    per_image = [r for r in rows if not r["image"].startswith("mean")]
    images_ = list(dict.fromkeys(r["image"] for r in per_image))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(images_) * len(methods)), 3.2))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [next(r["psnr_db"] for r in per_image if r["image"] == i and r["method"] == method) for i in images_]
        params = next(r["params"] for r in rows if r["method"] == method)
        ax.bar([i + k * width for i in range(len(images_))], values, width, label=f"{method} ({params:,} params)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(images_))], images_, fontsize=7, rotation=30)
    ax.set_ylabel("PSNR (dB)", fontsize=8)
    ax.legend(fontsize=7)
    proto.save(fig, title, device)
