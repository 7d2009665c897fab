"""The tables of a `cxr-utility protocols` result (its JSON file), in one place for the markdown that
cxr-utility writes and the section `cxr-runtime report --utility` adds to its page.

The result's schema (written by cxr_utility.protocols): `arms`, each with `arm`, `per_class`,
`training_images` ({class: count}), `auc` and `auc_ci`, `balanced_accuracy`, `sensitivity`,
`specificity`; `differences`, each with `per_class`, `arm`, `against`, `difference`, `ci`;
`label_fidelity` ({generator's real per class: {class: share}}).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from cxr_runtime.errors import UtilityResultError

Table = tuple[list[str], list[list[str]]]


def tables(result: dict) -> list[Table]:
    """(header, rows) of each table: the arms; the paired differences; the label fidelity."""
    out: list[Table] = []
    out.append((["arm", "real per class", "training images", "AUC (95 % CI)", "balanced accuracy", "sensitivity",
                 "specificity"],
                [[a["arm"], str(a["per_class"]), str(sum(a["training_images"].values())),
                  f"{a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]", f"{a['balanced_accuracy']:.3f}",
                  f"{a['sensitivity']:.3f}", f"{a['specificity']:.3f}"] for a in result["arms"]]))
    if result.get("differences"):
        out.append((["real per class", "arm", "against", "AUC difference (95 % CI)"],
                    [[str(d["per_class"]), d["arm"], d["against"],
                      f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"] for d in result["differences"]]))
    fidelity = result.get("label_fidelity") or {}
    if fidelity:
        classes = list(next(iter(fidelity.values())))
        out.append((["generator's real per class", *(f"label fidelity {c}" for c in classes)],
                    [[str(n), *(f"{v[c]:.1%}" for c in classes)] for n, v in fidelity.items()]))
    return out


def markdown(result: dict) -> str:
    blocks = []
    for head, rows in tables(result):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def html_tables(result: dict) -> str:
    parts = []
    for head, rows in tables(result):
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                     + "</table>")
    return "\n<p></p>\n".join(parts)


def load(path: str | Path) -> dict:
    """A `cxr-utility protocols` result, checked enough to render: UtilityResultError otherwise."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except OSError as e:
        raise UtilityResultError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise UtilityResultError(f"{path} is not JSON (expected the --out file of `cxr-utility protocols`)") from None
    try:
        tables(result)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise UtilityResultError(f"{path} is not a `cxr-utility protocols` result (missing or malformed {e})") from None
    if not result["arms"]:
        raise UtilityResultError(f"{path} holds no trained arm")
    return result
