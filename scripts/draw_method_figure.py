"""Draw the method figure: joint training, the multi-loss objective and MLB side by side.

Two encoders (audio, video), the late fusion (its per-modality blocks W_a, W_v and shared bias b), the fused
head and the unimodal heads; where each loss attaches; and, for MLB, where k_a and k_v scale the backward
gradients (encoder m, head m and fusion block W_m; Kontras et al., BMVC 2024). The SVG is
deterministic (fixed hash salt, no date), so re-running gives an identical file.

    python scripts/draw_method_figure.py                  # writes book/images/mlb_method.svg
    python scripts/draw_method_figure.py --out /tmp/f.svg
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "book" / "images" / "mlb_method.svg"
COLOR = {"a": "#1f77b4", "v": "#e07b00"}      # audio blue, video orange
GRAD = "#c0392b"                               # backward (gradient) arrows
NAME = {"a": "audio", "v": "video"}
X = {"a": 0.31, "v": 0.69}                     # column of each modality inside a panel
FS = 1.3                                       # font scale: legible at the width of a book page


def box(ax, x, y, w, h, text, *, color="black", fill="white", size=9, dashed=False, lw=1.2):
    """A rounded box centred at (x, y) with a label."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.008,rounding_size=0.02",
                                fc=fill, ec=color, lw=lw, ls="--" if dashed else "-"))
    ax.text(x, y, text, ha="center", va="center", fontsize=size * FS, color=color)


def arrow(ax, start, end, *, color="black", dashed=False, lw=1.0, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color=color, lw=lw,
                                 ls="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=1, shrinkB=1))


def panel(ax, kind: str, title: str) -> None:
    """One of "joint", "multi", "mlb": forward arrows black, backward arrows red."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title, fontsize=11 * FS, pad=4)
    heads = kind != "joint"
    y_in, y_enc, y_fus, y_loss = 0.05, 0.22, 0.49, 0.75
    fusion_w = 0.54
    ax.add_patch(FancyBboxPatch((0.5 - fusion_w / 2, y_fus - 0.11), fusion_w, 0.22,
                                boxstyle="round,pad=0.008,rounding_size=0.02", fc="#f4f4f4", ec="black", lw=1.2))
    ax.text(0.5 - fusion_w / 2 + 0.015, y_fus + 0.08, "$f_c$", ha="left", va="center", fontsize=8 * FS)
    ax.text(0.5, y_fus - 0.0, "$+\\,b$", ha="center", va="center", fontsize=8 * FS)
    box(ax, 0.5, y_loss, 0.34, 0.075, "$\\mathcal{L}_{\\mathrm{CE}}(f_c, y)$", size=9)
    arrow(ax, (0.5, y_fus + 0.11), (0.5, y_loss - 0.0375))
    for m in "av":
        x, c = X[m], COLOR[m]
        box(ax, x, y_in, 0.27, 0.065, f"$x_{m}$ ({NAME[m]})", color=c, size=8)
        box(ax, x, y_enc, 0.3, 0.09, f"encoder $\\theta_{m}$", color=c, size=9)
        arrow(ax, (x, y_in + 0.03), (x, y_enc - 0.045), color=c)
        xw = 0.5 + (x - 0.5) * 0.68                                   # block W_m inside the fusion box
        box(ax, xw, y_fus, 0.12, 0.065, f"$W_{m}$", color=c, size=9)
        arrow(ax, (x, y_enc + 0.045), (xw, y_fus - 0.03), color=c)
        ax.text(x + (0.06 if m == "v" else -0.06), (y_enc + y_fus) / 2 - 0.04, f"$z_{m}$", color=c,
                fontsize=9 * FS, ha="center")
        xh = 0.5 + (x - 0.5) * 2.1                                    # unimodal head, outside the fusion box
        if heads:
            box(ax, xh, y_fus, 0.17, 0.075, f"head $g_{m}$", color=c, size=8)
            arrow(ax, (x + (0.12 if m == "v" else -0.12) * 0.5, y_enc + 0.03), (xh, y_fus - 0.035), color=c)
            box(ax, xh, y_loss, 0.15, 0.075, f"$\\mathcal{{L}}_{{{m}}}$", color=c, size=9)
            arrow(ax, (xh, y_fus + 0.035), (xh, y_loss - 0.0375), color=c)
    ax.text(0.5, y_loss + 0.065, "$\\mathcal{L}=\\mathcal{L}_{\\mathrm{CE}}(f_c)"
            + ("+\\mathcal{L}_a+\\mathcal{L}_v$" if heads else "$"), ha="center", va="center", fontsize=9 * FS)
    # backward: from each loss down to the parameters it trains (red, dashed)
    for m in "av":
        x = X[m]
        sign = 1 if m == "v" else -1
        arrow(ax, (0.5 + sign * 0.06, y_loss - 0.04), (0.5 + (x - 0.5) * 0.68, y_fus + 0.035), color=GRAD, dashed=True)
        if heads:
            xh = 0.5 + (x - 0.5) * 2.1
            arrow(ax, (xh + sign * 0.055, y_fus - 0.04), (x + sign * 0.1, y_enc + 0.05), color=GRAD, dashed=True,
                  rad=-0.25 * sign)
    if kind == "mlb":
        for m in "av":
            x, c = X[m], COLOR[m]
            sign = 1 if m == "v" else -1
            xh = 0.5 + (x - 0.5) * 2.1
            ax.text(x + sign * 0.005, y_enc - 0.085, f"$\\nabla\\theta_{m}\\times k_{m}$", color=GRAD, fontsize=9 * FS,
                    ha="center", va="center", fontweight="bold")
            ax.text(xh + sign * 0.012, y_fus - 0.08, f"$\\times k_{m}$", color=GRAD, fontsize=9 * FS, ha="center",
                    va="center")
            ax.text(0.5 + (x - 0.5) * 0.68 - sign * 0.05, y_fus - 0.075, f"$\\times k_{m}$", color=GRAD,
                    fontsize=8 * FS, ha="center", va="center")
            ax.text(xh - sign * 0.035, (y_fus + y_loss) / 2, f"$s_{m}$", color=c, fontsize=9 * FS, ha="center",
                    va="center")
        box(ax, 0.5, 0.935, 0.98, 0.115, "$s_m=\\overline{\\mathrm{softmax}(g_m)_y},\\ r_a=s_v/s_a$\n"
            "$k_m=1+\\tanh(\\alpha(r_m-1))$", color=GRAD, size=8, lw=1.0)
    elif kind == "multi":
        ax.text(0.5, 0.93, "every $k_m = 1$", ha="center", va="center", fontsize=9 * FS, color="gray")
    else:
        ax.text(0.5, 0.93, "no unimodal heads in the loss", ha="center", va="center", fontsize=9 * FS, color="gray")


def draw(out: Path = OUT) -> Path:
    """Render the three panels to ``out`` (SVG) with a fixed hash salt and no date: a deterministic file."""
    with plt.rc_context({"svg.hashsalt": "mmbal-mlb-method", "svg.fonttype": "path", "font.family": "DejaVu Sans"}):
        fig, axes = plt.subplots(1, 3, figsize=(10, 5.8))
        for ax, (kind, title) in zip(axes, [("joint", "(a) joint training"), ("multi", "(b) multi-loss"),
                                            ("mlb", "(c) MLB")]):
            panel(ax, kind, title)
        fig.text(0.5, 0.012, "black: forward;  red dashed: backward gradients\nMLB multiplies the gradients of "
                 "encoder $m$, head $g_m$ and fusion block $W_m$ by $k_m$ (not the shared bias $b$)",
                 ha="center", fontsize=9 * FS)
        fig.subplots_adjust(left=0.005, right=0.995, top=0.93, bottom=0.1, wspace=0.04)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="svg", metadata={"Date": None})
        plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="SVG file to write (default: %(default)s)")
    print(draw(parser.parse_args().out))
