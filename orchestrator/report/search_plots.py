"""The search's plots on the parent run: how the front grew over the trials, and which parameters mattered.

`search.png`: on the left, every completed trial's first objective in trial order with the best so far as a
step line (trials on the final Pareto front are red stars, pruned and failed trials grey ticks at the bottom);
on the right, with two objectives or more, the first two objectives of every completed trial coloured by trial
number, the final front's members ringed in red. `search_importance.png`: Optuna's fANOVA importance of each
sampled parameter for the first objective, as bars (only when Optuna could compute it).
"""

from __future__ import annotations

from pathlib import Path

Trial = tuple[int, str, "list[float] | None"]  # (number, state, objective values)


def pareto(points: list[tuple[int, list[float]]], directions: list[str]) -> set[int]:
    """The numbers of the non-dominated points (each objective in its direction)."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    keyed = [(n, [s * v for s, v in zip(sign, vals, strict=True)]) for n, vals in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))

    return {n for n, a in keyed if not any(dominates(b, a) for m, b in keyed if m != n)}


def write_search_plots(trials: list[Trial], objectives: list[tuple[str, str]], importance: dict[str, float],
                       out_dir: Path, title: str) -> list[Path]:
    """Write the search's PNGs into `out_dir`; returns their paths (none before a trial completed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [(n, vals) for n, state, vals in trials if state == "complete" and vals]
    if not done:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    names, directions = [m for m, _ in objectives], [d for _, d in objectives]
    on_front = pareto(done, directions)
    two = len(objectives) > 1
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 7, 5), dpi=110, squeeze=False)
    left = axes[0][0]
    xs, ys = [n for n, _ in done], [vals[0] for _, vals in done]
    pick = max if directions[0] == "maximize" else min
    best = [pick(ys[: i + 1]) for i in range(len(ys))]
    left.step(xs, best, where="post", color="tab:blue", lw=1.5, label=f"best {names[0]} so far")
    left.scatter(xs, ys, color="tab:blue", s=18, zorder=3, label="completed trial")
    star = [(n, vals[0]) for n, vals in done if n in on_front]
    left.scatter([n for n, _ in star], [v for _, v in star], marker="*", s=120, color="tab:red", zorder=4,
                 label="on the final Pareto front")
    stopped = [n for n, state, _ in trials if state in ("pruned", "fail")]
    if stopped:
        low = min(ys)
        left.scatter(stopped, [low] * len(stopped), marker="|", s=80, color="grey", label="pruned / failed")
    left.set_xlabel("trial")
    left.set_ylabel(names[0])
    left.set_title("the search over trials")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    if two:
        right = axes[0][1]
        shade = right.scatter([v[1] for _, v in done], [v[0] for _, v in done], c=xs, cmap="viridis", s=30,
                              zorder=3)
        front = sorted((v[1], v[0]) for n, v in done if n in on_front)
        right.scatter([x for x, _ in front], [y for _, y in front], facecolors="none", edgecolors="tab:red", s=120,
                      lw=1.5, zorder=4, label="final Pareto front (all objectives)")
        fig.colorbar(shade, ax=right, label="trial")
        right.set_xlabel(names[1])
        right.set_ylabel(names[0])
        right.set_title(f"{names[0]} against {names[1]}")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    paths = [out_dir / "search.png"]
    fig.savefig(paths[0])
    plt.close(fig)
    if importance:
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(importance)), dpi=110)
        keys = list(importance)[::-1]  # the largest on top
        ax.barh(keys, [importance[k] for k in keys], color="tab:blue")
        ax.set_xlabel(f"importance for {names[0]} (fANOVA)")
        ax.set_title(title)
        fig.tight_layout()
        paths.append(out_dir / "search_importance.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths
